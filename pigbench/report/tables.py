"""Paper tables from admitted results: the main table and ablation tables, as Markdown, LaTeX, HTML.

The **main table** follows the layout of the PIGReward paper's Table 2: rows are evaluators,
grouped "without reference" / "with reference" (by the results' ``uses_references``); columns
are datasets, each with acc w/ tie and acc w/o tie (micro averages, percent) and their 95%
cluster-bootstrap CIs. The best value of each column is marked (bold). One run fills each cell:
the run without a variant suffix if there is one, otherwise the run with the most targets among
those on the dataset's main split, or among all if none is on it (named in the table notes).

An **ablation table** lists every run of one evaluator on one dataset (its variants, e.g.
PIGReward's switches or a reference-size sweep) with the settings that differ between them; results
files of the same run (the sweep's file for the dataset's default K and the plain one) are one row.

:class:`Table` is format-independent; :func:`to_markdown`, :func:`to_latex` and :func:`to_html`
render it, escaping every text that comes from results.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from pigbench.calibration import describe_calibration
from pigbench.registry import RegistryError, adapters
from pigbench.report.collect import WITH_REFERENCE, WITHOUT_REFERENCE, Collection, Entry

MAIN_METRICS = (("acc_w_tie", "w/ tie"), ("acc_wo_tie", "w/o tie"))
CI_NOTE = "Accuracies in percent (micro average over targets) with 95% cluster-bootstrap CIs over users."
RATE_NOTE = "tie rate, invalid rate: share of the N targets predicted TIE or INVALID (0 to 1, not percent)."


OTHER_SPLIT = "\u2020"  # marks a number from a run on another split than its dataset's main one


def other_split_note(dataset: str, evaluators: list[str], main_split: str) -> str:
    """The table note that names the runs of ``dataset`` marked :data:`OTHER_SPLIT`."""
    return (f"{OTHER_SPLIT} {dataset}: {', '.join(evaluators)} ran on another split than the main one (fingerprint "
            f"{main_split}, most runs'); not ranked.")


@dataclass(frozen=True)
class Cell:
    """A number with an optional CI; ``best`` marks the best value of its column. A cell of a run on
    another split than its dataset's main one (``other_split``) carries a dagger and is never best."""

    value: Optional[float]
    ci: Optional[list[float]] = None
    best: bool = False
    digits: int = 1
    other_split: bool = False

    def text(self) -> str:
        if self.value is None:
            return "n/a"
        return f"{self.value:.{self.digits}f}" + (OTHER_SPLIT if self.other_split else "")

    def ci_text(self) -> str:
        return "" if not self.ci else f"[{self.ci[0]:.{self.digits}f}, {self.ci[1]:.{self.digits}f}]"


Value = Union[Cell, str]  # a str is plain text (settings, counts); "" is an empty cell


@dataclass(frozen=True)
class Row:
    label: str
    cells: list[Value]


@dataclass(frozen=True)
class Table:
    """Column groups span consecutive data columns; row groups have a label ("" for none)."""

    title: str
    row_header: str
    columns: list[str]
    column_groups: list[tuple[str, int]] = field(default_factory=list)  # (label, span); empty: no group row
    groups: list[tuple[str, list[Row]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def canonical_entries(collection: Collection) -> tuple[dict[tuple[str, str], Entry], list[str]]:
    """The run shown for each (evaluator, dataset), and notes naming runs that are not canonical.
    A run without a variant suffix comes first; among several such runs (results folders copied
    side by side), or without any, a run on the dataset's main split, then the one with the most
    targets, then the first by variant and path (so that a sweep's K = default run is shown and
    ranked, not its smallest K with the most targets)."""
    candidates: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in collection.entries:
        candidates[(e.evaluator, e.dataset)].append(e)
    main = {ds: collection.main_split(ds) for ds in collection.datasets()}
    chosen, notes = {}, []
    for key, runs in sorted(candidates.items()):
        plain = [e for e in runs if not e.variant]
        pick = min(plain or runs, key=lambda e: (e.results["split"]["fingerprint"] != main[e.dataset],
                                                 -e.results["metrics"]["n"], e.variant or "", e.relpath))
        chosen[key] = pick
        if pick.variant:
            notes.append(f"{key[0]} on {key[1]}: run {pick.variant!r} (no run without a variant suffix).")
        elif len(plain) > 1:
            others = ", ".join(e.relpath for e in plain if e is not pick)
            notes.append(f"{key[0]} on {key[1]}: {len(plain)} runs without a variant suffix; shown: {pick.relpath} "
                         f"(not shown: {others}).")
    return chosen, notes


def mark_best(groups: list[tuple[str, list[Row]]], columns: list[int]) -> list[tuple[str, list[Row]]]:
    """Copies of the rows with ``best`` set on the highest value of each listed column, compared as
    displayed (so that equal printed values are all marked)."""
    def shown(cell: Value) -> Optional[float]:
        ranked = isinstance(cell, Cell) and cell.value is not None and not cell.other_split
        return round(cell.value, cell.digits) if ranked else None

    best: dict[int, float] = {}
    for _, rows in groups:
        for row in rows:
            for c in columns:
                if shown(row.cells[c]) is not None:
                    best[c] = max(best.get(c, shown(row.cells[c])), shown(row.cells[c]))
    out = []
    for label, rows in groups:
        new_rows = []
        for row in rows:
            cells = [
                dataclasses.replace(cell, best=True) if i in best and shown(cell) == best[i] else cell
                for i, cell in enumerate(row.cells)
            ]
            new_rows.append(Row(row.label, cells))
        out.append((label, new_rows))
    return out


def main_table(collection: Collection) -> Table:
    """Table 2 layout over every dataset and evaluator in ``collection``."""
    datasets = collection.datasets()
    main = {ds: collection.main_split(ds) for ds in datasets}
    chosen, notes = canonical_entries(collection)
    group_of = {ev: e.group for (ev, _), e in chosen.items()}
    groups = []
    for group in (WITHOUT_REFERENCE, WITH_REFERENCE):
        names = sorted(ev for ev, g in group_of.items() if g == group)
        rows = []
        for ev in names:
            cells: list[Value] = []
            for ds in datasets:
                e = chosen.get((ev, ds))
                other = e is not None and e.results["split"]["fingerprint"] != main[ds]
                cells += [Cell(e.accuracy(m), e.ci(m), other_split=other) if e else "" for m, _ in MAIN_METRICS]
            rows.append(Row(ev, cells))
        if rows:
            groups.append((group, rows))
    for ds in datasets:
        others = sorted(ev for (ev, d), e in chosen.items() if d == ds and e.results["split"]["fingerprint"] != main[ds])
        if others:
            notes.append(other_split_note(ds, others, main[ds]))
    return Table(
        title="Accuracy of personalized preference prediction",
        row_header="Evaluator",
        columns=[label for _ in datasets for _, label in MAIN_METRICS],
        column_groups=[(ds, len(MAIN_METRICS)) for ds in datasets],
        groups=mark_best(groups, list(range(len(datasets) * len(MAIN_METRICS)))),
        notes=[CI_NOTE, *notes],
    )


def ablation_tables(collection: Collection) -> list[Table]:
    """One table per (evaluator, dataset) with two or more distinct runs; rows by variant in natural
    order (the run without a variant first, then k1, k2, k16: numbers compare as numbers), then path.
    Files of the same run (:func:`same_run_key`; e.g. the plain results file and the ``k<K>`` file
    that ``pigbench sweep`` writes for the dataset's default K) are one row, the first file's numbers,
    labelled with every variant (``(default) = k4``) and named in a note."""
    runs: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in sorted(collection.entries, key=lambda e: (_natural(e.variant or ""), e.relpath)):
        runs[(e.evaluator, e.dataset)].append(e)
    tables = []
    for (ev, ds), all_entries in sorted(runs.items()):
        same: dict[tuple, list[Entry]] = defaultdict(list)
        for e in all_entries:
            same[same_run_key(e)].append(e)
        groups = list(same.values())  # in the entries' order: the first file of each run gives its row
        if len(groups) < 2:
            continue
        entries = [files[0] for files in groups]
        labels = [" = ".join(f.variant or "(default)" for f in files) for files in groups]
        merged = [f"{label}: one run in {len(files)} results files ({', '.join(f.relpath for f in files)}); "
                  f"the row shows {files[0].relpath}" for label, files in zip(labels, groups) if len(files) > 1]
        settings = differing_settings(entries)
        rows = [
            Row(labels[i], [
                settings[i], str(e.results["metrics"]["n"]),
                Cell(e.accuracy("acc_w_tie"), e.ci("acc_w_tie")),
                Cell(e.accuracy("acc_wo_tie"), e.ci("acc_wo_tie")),
                Cell(e.accuracy("decisive_acc"), e.ci("decisive_acc")),
                f"{e.results['metrics']['predicted_tie_rate']:.3f}",
                f"{e.results['metrics']['invalid_rate']:.3f}",
            ])
            for i, e in enumerate(entries)
        ]
        tables.append(Table(
            title=f"Ablation: {ev} on {ds}",
            row_header="Variant",
            columns=["Settings", "N", "acc w/ tie", "acc w/o tie", "decisive acc", "tie rate", "invalid rate"],
            groups=mark_best([("", rows)], [2, 3, 4]),
            notes=[CI_NOTE, RATE_NOTE, *merged],
        ))
    return tables


def same_run_key(e: Entry) -> tuple:
    """What makes two results files of one evaluator on one dataset the same run: the evaluator's
    version, config hash, models and swap setting, the split's fingerprint and number of targets, and
    the dataset options (:func:`dataset_options`)."""
    ev, split = e.results["evaluator"], e.results["split"]
    return (ev.get("version"), ev["config_hash"], json.dumps(ev.get("models"), sort_keys=True, default=str),
            bool(ev.get("swap")), split["fingerprint"], split["targets"],
            json.dumps(dataset_options(e), sort_keys=True, default=str))


def _natural(text: str) -> list[Union[str, int]]:
    """Sort key of ``text`` with its digit runs as numbers: "k2" < "k16"."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def differing_settings(entries: list[Entry]) -> list[str]:
    """Per entry, ``key=value`` for the settings (config fields, K, swap, seed, targets, and dataset
    options as ``dataset.<key>``) that differ."""
    flat = [_settings(e) for e in entries]
    keys = sorted({k for f in flat for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
    return [", ".join(f"{k}={json.dumps(f.get(k))}" for k in varying) for f in flat]


def _settings(e: Entry) -> dict[str, Any]:
    """The settings of a run; a calibrated tau shows as how it was calibrated, not as its value.
    Dataset options are those the adapter recorded (:func:`dataset_options`)."""
    ev, split = e.results["evaluator"], e.results["split"]
    config = dict(ev["config"])
    source = ev.get("tie_threshold_source")
    if isinstance(source, dict) and "tie_threshold" in config:
        config["tie_threshold"] = describe_calibration(source)
    dataset = {f"dataset.{k}": v for k, v in dataset_options(e).items()}
    return {**config, **dataset, "K": split["reference_size"], "swap": ev.get("swap", False),
            "seed": split["seed"], "targets": split["targets"]}


def dataset_options(e: Entry) -> dict[str, Any]:
    """The dataset options the run's adapter recorded in ``dataset.source.options``, as
    :meth:`DatasetAdapter.content_options` gives them (results files written before location options
    were recorded apart still list them there: Pick-a-Pic's ``images_path``)."""
    options = e.results["dataset"].get("source", {}).get("options")
    if not isinstance(options, dict):
        return {}
    try:
        return adapters.get(e.dataset).content_options(options)
    except RegistryError:  # a dataset whose adapter is not installed here: its options as recorded
        return options


# ---- renderers --------------------------------------------------------------------------------


_NUMBER = re.compile(r"-?[\d.]*")


def md_escape(text: str) -> str:
    """``text`` shown literally in Markdown, also in a table cell: one line, with Markdown and HTML
    syntax characters (``&`` of entities, ``<`` of tags, ``|`` of cells) backslash-escaped."""
    return re.sub(r"([\\`*_{}\[\]<>|#&])", r"\\\1", text).replace("\r", " ").replace("\n", " ")


def _md_cell(v: Value) -> str:
    if isinstance(v, str):
        return md_escape(v)
    number = f"**{v.text()}**" if v.best else v.text()
    return f"{number} {v.ci_text()}".strip()


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table; column groups prefix the column headers."""
    headers = [table.row_header]
    spans = [g for g, n in table.column_groups for _ in range(n)] or [""] * len(table.columns)
    headers += [f"{g} {c}".strip() for g, c in zip(spans, table.columns)]
    rows = [r for _, group in table.groups for r in group]
    text_columns = {i for r in rows for i, c in enumerate(r.cells) if isinstance(c, str) and not _NUMBER.fullmatch(c)}
    align = [":---" if i in text_columns else "---:" for i in range(len(table.columns))]
    lines = [f"**{md_escape(table.title)}**", "", "| " + " | ".join(md_escape(h) for h in headers) + " |",
             "|" + "|".join([":---", *align]) + "|"]
    for label, rows in table.groups:
        if label:
            lines.append(f"| *{md_escape(label)}* |" + " |" * len(table.columns))
        lines += ["| " + " | ".join([md_escape(r.label)] + [_md_cell(c) for c in r.cells]) + " |" for r in rows]
    lines += [""] + [f"- {md_escape(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """``text`` shown literally in LaTeX on one line; control characters (TeX ends the line at a
    carriage return and drops the rest of it) become spaces."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in re.sub(r"[\x00-\x1f\x7f]", " ", text))


def _tex_cell(v: Value) -> str:
    if isinstance(v, str):
        return latex_escape(v)
    number = rf"\textbf{{{v.text()}}}" if v.best else v.text()
    return number + (rf" {{\scriptsize {v.ci_text()}}}" if v.ci else "")


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    n = len(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             r"\begin{tabular}{l" + "c" * n + "}", r"\toprule"]
    if table.column_groups:
        heads, rules, col = [], [], 2
        for label, span in table.column_groups:
            heads.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines += [" & " + " & ".join(heads) + r" \\", " ".join(rules)]
    lines += [" & ".join([latex_escape(table.row_header)] + [latex_escape(c) for c in table.columns]) + r" \\", r"\midrule"]
    for i, (label, rows) in enumerate(table.groups):
        if i:
            lines.append(r"\midrule")
        if label:
            lines.append(rf"\multicolumn{{{n + 1}}}{{l}}{{\textit{{{latex_escape(label)}}}}} \\")
        lines += [" & ".join([latex_escape(r.label)] + [_tex_cell(c) for c in r.cells]) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\smallskip{\footnotesize " + latex_escape(note) + "}" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _html_cell(v: Value) -> str:
    if isinstance(v, str):
        return f"<td>{html.escape(v)}</td>"
    number = f"<strong>{v.text()}</strong>" if v.best else v.text()
    ci = f' <span class="ci">{v.ci_text()}</span>' if v.ci else ""
    said = '<span class="visually-hidden"> (best)</span>' if v.best else ""  # bold alone is silent to screen readers
    return f'<td class="num{" best" if v.best else ""}">{number}{ci}{said}</td>'


def to_html(table: Table) -> str:
    """An HTML ``<table>`` fragment (class ``pigbench``); every text is escaped. Every header cell has a
    ``scope`` (column groups, columns, row groups, rows) so that a screen reader announces each number
    with its row and column; a best value says "(best)" in a visually hidden span."""
    e = html.escape
    n = len(table.columns)
    out = ['<table class="pigbench">', f"<caption>{e(table.title)}</caption>", "<thead>"]
    if table.column_groups:
        out.append("<tr><td></td>" + "".join(f'<th scope="colgroup" colspan="{span}">{e(g)}</th>'
                                             for g, span in table.column_groups) + "</tr>")
    out.append(f'<tr><th scope="col">{e(table.row_header)}</th>' + "".join(f'<th scope="col">{e(c)}</th>' for c in table.columns) + "</tr>")
    out.append("</thead>")
    for label, rows in table.groups:
        out.append("<tbody>")
        if label:
            out.append(f'<tr class="group"><th scope="rowgroup" colspan="{n + 1}">{e(label)}</th></tr>')
        out += [f'<tr><th scope="row">{e(r.label)}</th>' + "".join(_html_cell(c) for c in r.cells) + "</tr>" for r in rows]
        out.append("</tbody>")
    out.append("</table>")
    out += [f'<p class="note">{e(note)}</p>' for note in table.notes]
    return "\n".join(out) + "\n"
