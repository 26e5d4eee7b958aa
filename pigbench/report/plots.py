"""Report figures: accuracy vs reference size (with CI bands) and the similarity-metric comparison.

Figures use matplotlib's object API (no pyplot, no display needed) and are saved as PNG (200 dpi)
and SVG. For print: labelled axes with units, the Okabe-Ito colour-blind-safe palette, and
distinct markers and line styles so that lines stay apart in greyscale. Names from results are
drawn literally: math text (``$...$``) is off while figures are built and saved (:data:`literal_text`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from matplotlib import rc_context
from matplotlib.figure import Figure

from pigbench.report.collect import Collection, Entry, slug
from pigbench.report.similarity import similarity_entries
from pigbench.report.tables import OTHER_SPLIT, dataset_options

# Okabe & Ito (2008), ordered for contrast on white; yellow last.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
PANELS = (("acc_w_tie", "acc w/ tie"), ("acc_wo_tie", "acc w/o tie"))
CHANCE = 50.0  # a coin flip scores 50% on both accuracies
# Decorator: text created or drawn inside shows "$" as is; a name like "a$\undefinedcmd$b" would
# otherwise be parsed as math text and make savefig raise.
literal_text = rc_context({"text.parse_math": False})


def style(i: int) -> dict:
    """Colour, marker and line style of the i-th series."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


@literal_text
def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def reference_size_series(collection: Collection) -> dict[str, dict[str, list[Entry]]]:
    """dataset -> series label -> runs sorted by reference size K, for series with 2+ sizes.

    A series is one evaluator with one config (:func:`_series_config`), swap setting, split seed and
    set of dataset options (other options are other data); where several runs share a K (e.g. with
    and without ``--limit``), the one with the most targets is kept."""
    series: dict[tuple, dict[int, Entry]] = defaultdict(dict)
    for e in collection.entries:
        k = e.results["split"]["reference_size"]
        if not isinstance(k, int):
            continue
        ev, split = e.results["evaluator"], e.results["split"]
        key = (e.dataset, e.evaluator, _series_config(ev), bool(ev.get("swap")), split["seed"], _dataset_options(e))
        best = series[key].get(k)
        if best is None or e.results["metrics"]["n"] > best.results["metrics"]["n"]:
            series[key][k] = e
    out: dict[str, dict[str, list[Entry]]] = defaultdict(dict)
    for key in sorted(series):
        if len(series[key]) < 2:
            continue
        dataset, evaluator, config, swap, seed, options = key
        same_name = [k for k in series if k[0] == dataset and k[1] == evaluator and len(series[k]) >= 2]
        detail = f"{config}{', swap' if swap else ''}, seed {seed}{', ' + options if options else ''}"
        label = evaluator if len(same_name) == 1 else f"{evaluator} ({detail})"
        out[dataset][label] = [series[key][k] for k in sorted(series[key])]
    return dict(out)


def _series_config(evaluator: dict[str, Any]) -> str:
    """The config part of a series key, as its label shows it: "cfg <hash>". A run whose tau was
    calibrated (``--calibrate-tie-threshold``) gets the tau of its own K, hence a config hash of its
    own; its runs form one series by the config without tau and how tau was calibrated:
    "tau calibrated <digest>", apart from every fixed-tau series."""
    source = evaluator.get("tie_threshold_source")
    if not isinstance(source, dict):
        return f"cfg {evaluator['config_hash'][:6]}"
    config = {k: v for k, v in evaluator["config"].items() if k != "tie_threshold"}
    how = {k: v for k, v in source.items() if k in ("method", "held_out_fraction", "grid", "scale")}
    digest = hashlib.sha256(json.dumps([config, how], sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"tau calibrated {digest}"


def _dataset_options(e: Entry) -> str:
    """The run's dataset options (:func:`~pigbench.report.tables.dataset_options`) as ``k=v, ...``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(dataset_options(e).items()))


@literal_text
def plot_accuracy_vs_reference_size(dataset: str, series: dict[str, list[Entry]]) -> Figure:
    """Two panels (acc w/ tie, acc w/o tie): micro accuracy vs K with 95% CI bands, chance line."""
    fig = Figure(figsize=(8.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    sizes = sorted({e.results["split"]["reference_size"] for runs in series.values() for e in runs})
    for ax, (metric, title) in zip(axes, PANELS):
        for i, (label, runs) in enumerate(series.items()):
            pts = [(e.results["split"]["reference_size"], e.accuracy(metric), e.ci(metric)) for e in runs
                   if e.accuracy(metric) is not None]
            if not pts:
                continue
            ks, acc = [p[0] for p in pts], [p[1] for p in pts]
            st = style(i)
            ax.plot(ks, acc, label=label, linewidth=1.8, markersize=5, **st)
            banded = [p for p in pts if p[2]]
            if banded:
                ax.fill_between([p[0] for p in banded], [p[2][0] for p in banded], [p[2][1] for p in banded],
                                color=st["color"], alpha=0.18, linewidth=0)
        ax.axhline(CHANCE, color="0.45", linestyle=(0, (4, 3)), linewidth=1, label="chance (50%)" if ax is axes[0] else None)
        if sizes[-1] / max(sizes[0], 1) >= 4 and sizes[0] > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(k) for k in sizes])
        ax.minorticks_off()
        ax.set_title(title)
        ax.set_xlabel("reference size K (pairs per user)")
        ax.grid(True, color="0.9", linewidth=0.8)
    axes[0].set_ylabel("accuracy (%)")
    fig.suptitle(f"{dataset}: accuracy vs reference size (95% CI bands)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(4, len(series) + 1), frameon=False)
    return fig


@literal_text
def plot_similarity_metrics(entries: Iterable[Entry], main_split: dict[str, str]) -> Figure:
    """Point ranges: accuracy with 95% CI of each similarity metric, one colour per dataset. As in the
    similarity table, a run on another split than its dataset's ``main_split`` fingerprint is marked
    with a dagger, on its point and on its metric's tick label."""
    entries = list(entries)
    metrics = sorted({e.evaluator for e in entries})
    other = {(e.evaluator, e.dataset) for e in entries if e.results["split"]["fingerprint"] != main_split[e.dataset]}
    ticks = [m + (OTHER_SPLIT if any(ev == m for ev, _ in other) else "") for m in metrics]
    datasets = sorted({e.dataset for e in entries})
    fig = Figure(figsize=(8.0, 1.2 + 0.45 * len(metrics) * max(1, len(datasets)) ** 0.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    step = 0.7 / max(1, len(datasets))
    for ax, (metric, title) in zip(axes, PANELS):
        for j, ds in enumerate(datasets):
            st = style(j)
            for e in (e for e in entries if e.dataset == ds and e.accuracy(metric) is not None):
                y = metrics.index(e.evaluator) + (j - (len(datasets) - 1) / 2) * step
                ci = e.ci(metric)
                err = [[e.accuracy(metric) - ci[0]], [ci[1] - e.accuracy(metric)]] if ci else None
                ax.errorbar(e.accuracy(metric), y, xerr=err, color=st["color"], marker=st["marker"], markersize=6,
                            capsize=3, linewidth=1.5, label=ds)
                if (e.evaluator, ds) in other:
                    ax.annotate(OTHER_SPLIT, (e.accuracy(metric), y), xytext=(4, 2), textcoords="offset points",
                                color=st["color"])
        ax.axvline(CHANCE, color="0.45", linestyle=(0, (4, 3)), linewidth=1)
        ax.set_yticks(range(len(metrics)), ticks)
        ax.set_ylim(-0.6, len(metrics) - 0.4)
        ax.invert_yaxis()
        ax.set_xlabel(f"{title} (%)")
        ax.grid(True, axis="x", color="0.9", linewidth=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.suptitle("Similarity metrics vs user preference (95% CI; dashed: chance"
                 + (f"; {OTHER_SPLIT}: run on another split, not ranked)" if other else ")"))
    fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=min(4, len(unique)), frameon=False,
               title="dataset")
    return fig


def write_plots(collection: Collection, out_dir: Path) -> list[Path]:
    """Every figure the results support: accuracy vs K per dataset, the similarity comparison."""
    written = []
    for dataset, series in reference_size_series(collection).items():
        written += save_figure(plot_accuracy_vs_reference_size(dataset, series), out_dir,
                               f"accuracy_vs_reference_size_{slug(dataset)}")
    entries = similarity_entries(collection)
    if entries:
        main = {ds: collection.main_split(ds) for ds in {e.dataset for e in entries}}
        written += save_figure(plot_similarity_metrics(entries, main), out_dir, "similarity_metrics")
    return written

