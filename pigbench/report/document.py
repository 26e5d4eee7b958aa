"""The report folder: every table in three formats, every figure, and an index in Markdown and HTML.

Layout of ``out_dir`` (each table exists only when the results support it)::

    report.md, report.html                 index: all tables, figures, dimension statistics, rejected files
    main_table.{md,tex,html}               Table 2 layout
    ablations.{md,tex,html}                one table per evaluator and dataset with several runs
    similarity_metrics.{md,tex,html}       similarity metrics vs user preference
    dimensions.json                        dimension statistics
    figures/*.png, figures/*.svg           accuracy vs reference size, similarity metrics, dimensions

Before writing, the files of these names that an earlier report left are deleted (other files in
``out_dir`` stay), so that no table or figure of results no longer present lingers.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pigbench.report.collect import Collection, collect, output_dir, slug
from pigbench.report.dimensions import analyse_dimensions, check_embedder, runs_without_dimensions
from pigbench.report.plots import write_plots
from pigbench.report.similarity import similarity_table
from pigbench.report.tables import Table, ablation_tables, main_table, md_escape, to_html, to_latex, to_markdown

FIGURES = "figures"
REPORT_FILES = tuple(f"{stem}.{ext}" for stem in ("main_table", "ablations", "similarity_metrics")
                     for ext in ("md", "tex", "html")) + ("dimensions.json", "report.md", "report.html")
# Figures written by plots.write_plots and dimensions.analyse_dimensions, as glob patterns under FIGURES.
FIGURE_FILES = tuple(f"{stem}.{ext}" for stem in ("accuracy_vs_reference_size_*", "similarity_metrics",
                                                   "dimension_wordcloud", "dimension_tsne") for ext in ("png", "svg"))


@dataclass
class ReportSummary:
    """What was written (paths relative to the report folder) and what was left out."""

    out_dir: Path
    admitted: int
    rejected: dict[str, list[str]]
    files: list[str] = field(default_factory=list)
    dimensions: Optional[dict] = None


def build_report(results_dir: str | Path, out_dir: str | Path, embedding_model: Optional[str] = None,
                 color_by: str = "auto") -> ReportSummary:
    """Collect and validate the results under ``results_dir`` and write the report into ``out_dir``.
    An ``embedding_model`` directory that does not exist, or one given without sentence-transformers
    installed, is a :class:`RequirementError` before anything is read, removed or written."""
    check_embedder(embedding_model)
    collection = collect(results_dir)
    out = output_dir(out_dir, results_dir)
    _remove_earlier_report(out)
    summary = ReportSummary(out, len(collection.entries), {r.relpath: r.reasons for r in collection.rejected})
    sections: list[tuple[str, str, list[Table]]] = []  # (heading, file stem, tables)
    if collection.entries:
        sections.append(("Main table", "main_table", [main_table(collection)]))
        ablations = ablation_tables(collection)
        if ablations:
            sections.append(("Ablations", "ablations", ablations))
        similarity = similarity_table(collection)
        if similarity:
            sections.append(("Similarity metrics", "similarity_metrics", [similarity]))
    for _, stem, tables in sections:
        summary.files += _write_tables(out, stem, tables)
    figures = [p.name for p in write_plots(collection, out / FIGURES)]
    summary.dimensions = analyse_dimensions(collection, out / FIGURES, embedding_model, color_by)
    if summary.dimensions:
        figures += summary.dimensions["figures"]
        (out / "dimensions.json").write_text(json.dumps(summary.dimensions, indent=2) + "\n")
        summary.files.append("dimensions.json")
    summary.files += [f"{FIGURES}/{name}" for name in figures]
    dimension_notes = _dimension_section(summary.dimensions, runs_without_dimensions(collection))
    (out / "report.md").write_text(_markdown_index(collection, sections, figures, dimension_notes))
    (out / "report.html").write_text(_html_index(collection, sections, figures, dimension_notes))
    summary.files += ["report.md", "report.html"]
    return summary


def _remove_earlier_report(out: Path) -> None:
    """Delete the files of an earlier report in ``out``: :data:`REPORT_FILES` and :data:`FIGURE_FILES` only."""
    stale = [out / name for name in REPORT_FILES] + [p for pattern in FIGURE_FILES for p in (out / FIGURES).glob(pattern)]
    for path in stale:
        if path.is_file():
            path.unlink()


def _write_tables(out: Path, stem: str, tables: list[Table]) -> list[str]:
    (out / f"{stem}.md").write_text("\n".join(to_markdown(t) for t in tables))
    (out / f"{stem}.tex").write_text("\n".join(to_latex(t) for t in tables))
    (out / f"{stem}.html").write_text(_html_page(stem.replace("_", " "), "\n".join(to_html(t) for t in tables)))
    return [f"{stem}.{ext}" for ext in ("md", "tex", "html")]


def _dimension_lines(stats: dict) -> list[str]:
    disp = stats["dispersion"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    return [
        f"evaluators: {', '.join(stats['evaluators'])}",
        f"dimension occurrences: {stats['occurrences']} in {stats['samples_with_dimensions']} predictions "
        f"({stats['dimensions_per_sample']:.2f} per prediction)",
        f"distinct dimensions: {stats['distinct']} ({stats['distinct_share']:.1%} of occurrences; "
        f"{stats['distinct_per_user_mean']:.1f} per user on average)",
        f"dispersion ({stats['embedding']}): mean pairwise cosine distance {fmt(disp['mean_pairwise_cosine_distance'])}, "
        f"mean cosine distance to centroid {fmt(disp['mean_cosine_distance_to_centroid'])}",
        "most frequent: " + ", ".join(f"{t['name']} ({t['count']})" for t in stats["top"][:10]),
    ]


def _dimension_section(stats: Optional[dict], without: list[str]) -> list[str]:
    """The lines of the report's dimension analysis: the statistics and their notes, and the reasoning
    runs ``without`` any named dimension; none when there is neither."""
    lines = _dimension_lines(stats) + stats["notes"] if stats else []
    if without:
        lines.append(f"no named dimension in any prediction of: {', '.join(without)} (an unparseable answer stores "
                     "none: see each run's answer_quality)")
        if not stats:
            lines.append("nothing to analyse: no dimension statistics, word cloud or t-SNE map")
    return lines


def figure_alt(name: str, collection: Collection) -> str:
    """What the figure file ``name`` (one that :data:`FIGURE_FILES` matches) shows, for its ``alt`` text."""
    stem = name.rsplit(".", 1)[0]
    if stem.startswith("accuracy_vs_reference_size_"):
        tail = stem[len("accuracy_vs_reference_size_"):]
        dataset = next((d for d in collection.datasets() if slug(d) == tail), tail)
        return (f"Line charts of acc w/ tie and acc w/o tie (%) against reference size K on {dataset}: one line per "
                "evaluator with its 95% CI band, and a dashed chance line at 50%")
    if stem == "similarity_metrics":
        return ("Point ranges of acc w/ tie and acc w/o tie (%) with 95% CIs for each similarity metric, one colour "
                "and marker per dataset, and a dashed chance line at 50%")
    if stem == "dimension_wordcloud":
        return "Word cloud of the evaluation dimensions the reasoning evaluators named, larger for more frequent names"
    if stem == "dimension_tsne":
        return "t-SNE map of the embedded dimension names, one colour and marker per group, the most frequent names labelled"
    return stem.replace("_", " ")  # a figure added to FIGURE_FILES without a description here: at least its name


def _markdown_index(collection: Collection, sections, figures: list[str], dims: list[str]) -> str:
    lines = ["# pigbench report", "", f"{len(collection.entries)} results files admitted (every metric recomputed "
             f"from the predictions), {len(collection.rejected)} rejected.", ""]
    for title, _, tables in sections:
        lines += [f"## {title}", ""] + [to_markdown(t) for t in tables]
    if figures:
        lines += ["## Figures", ""] + [f"![{md_escape(figure_alt(name, collection))}]({FIGURES}/{name})"
                                          for name in figures if name.endswith(".png")] + [""]
    if dims:
        lines += ["## Dimension analysis", ""] + [f"- {md_escape(line)}" for line in dims] + [""]
    if collection.rejected:
        lines += ["## Rejected results files", ""]
        lines += [f"- {md_escape(r.relpath)}: {md_escape('; '.join(r.reasons))}" for r in collection.rejected] + [""]
    return "\n".join(lines)


def _html_index(collection: Collection, sections, figures: list[str], dims: list[str]) -> str:
    e = html.escape
    parts = [f"<p>{len(collection.entries)} results files admitted (every metric recomputed from the predictions), "
             f"{len(collection.rejected)} rejected.</p>"]
    for title, _, tables in sections:
        parts += [f"<h2>{e(title)}</h2>"] + [to_html(t) for t in tables]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f'<figure><img src="{FIGURES}/{e(n)}" alt="{e(figure_alt(n, collection))}"><figcaption>{e(n)}</figcaption>'
                  "</figure>" for n in figures if n.endswith(".png")]
    if dims:
        parts += ["<h2>Dimension analysis</h2>", "<ul>"] + [f"<li>{e(x)}</li>" for x in dims] + ["</ul>"]
    if collection.rejected:
        parts += ["<h2>Rejected results files</h2>", "<ul>"]
        parts += [f"<li><code>{e(r.relpath)}</code>: {e('; '.join(r.reasons))}</li>" for r in collection.rejected]
        parts.append("</ul>")
    return _html_page("pigbench report", "\n".join(parts))


_CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#111}
table.pigbench{border-collapse:collapse;margin:1rem 0}table.pigbench td,table.pigbench th{padding:.25rem .6rem}
table.pigbench thead{border-bottom:2px solid #333}tr.group th{text-align:left;font-style:italic;border-top:1px solid #999}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.ci{color:#555;font-size:.85em}img{max-width:100%}
caption{font-weight:bold;text-align:left}.note{font-size:.85em;color:#444;margin:.2rem 0}
td.best{position:relative}.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}"""


def _html_page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
