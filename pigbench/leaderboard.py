"""Build the static leaderboard site from a results directory.

Pages (relative links only, so the site works from ``file://`` and any static host)::

    index.html                    one sortable table per dataset, type filter, rejected files
    evaluators/<slug>.html        one per admitted results file: metrics, per-user distribution,
                                  sample predictions with rationales and dimensions, config, provenance
    datasets/<slug>.html          description, license, split fingerprints, sources
    methodology.html              metric definitions and the admission rule
    static/                       the CSS and JS (local files; no CDN, no fetch)
    data/leaderboard.json         every admitted run's summary and the rejected files

Only results files that pass :func:`pigbench.results.validate_results` are admitted (metrics
recomputed); the rest are listed with the reasons. The builder reads JSON only: it never imports
evaluator or adapter code. Every text from results is escaped (jinja2 autoescape); JSON embedded
in pages escapes ``<``, ``>`` and ``&`` so that no ``</script>`` can close its element.
Exit status 1 when no results file is admitted (the site, listing the rejected files, is still
written), 2 when --results is not a directory, or --out cannot be created or lies in --results.

examples:
  pigbench leaderboard build
  pigbench leaderboard build --results results/ --out site/
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Optional

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

import pigbench
from pigbench.calibration import describe_calibration
from pigbench.metrics import ACCURACIES, credit, is_number
from pigbench.protocol import Label
from pigbench.report.collect import Collection, Entry, collect, nothing_admitted, output_dir, slug
from pigbench.report.digest import SAMPLES_PER_PAGE

ACCURACY_NAMES = {"acc_w_tie": "acc w/ tie", "acc_wo_tie": "acc w/o tie", "decisive_acc": "decisive acc"}
MAX_TEXT = 4000  # characters of raw output or extra shown per sample


def assets_dir() -> Path:
    """The folder holding ``templates/`` and ``static/`` (the ``pigbench.leaderboard_site`` package)."""
    return Path(import_module("pigbench.leaderboard_site").__file__).parent


def script_json(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and the JS line
    separators are written as ``\\u`` escapes, which JSON parsers read back unchanged."""
    text = json.dumps(value, sort_keys=True)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return Markup(text)


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _ci(ci: Optional[list[float]]) -> str:
    return "" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def _rate(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _score(x: Any) -> str:
    """A score to 6 significant digits (the page's title attribute keeps the stored value)."""
    return f"{x:.6g}" if is_number(x) else "n/a"


def _sortkey(x: Any) -> str:
    return repr(x) if is_number(x) else ""


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(assets_dir() / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, ci=_ci, rate=_rate, score=_score, sortkey=_sortkey, script_json=script_json)
    return env


def _pretty(value: Any, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def entry_summary(e: Entry) -> dict[str, Any]:
    """What the overview and ``data/leaderboard.json`` show of one run (JSON-ready)."""
    ev, split, m = e.results["evaluator"], e.results["split"], e.results["metrics"]
    return {
        "evaluator": e.evaluator, "variant": e.variant, "label": e.label, "kind": e.kind,
        "uses_references": e.uses_references, "dataset": e.dataset, "relpath": e.relpath,
        "page": f"evaluators/{slug(e.relpath[:-len('.json')])}.html", "dataset_page": f"datasets/{slug(e.dataset)}.html",
        "metrics": {name: m[name] for name in ACCURACIES},
        "n": m["n"], "users": m["users"], "predicted_tie_rate": m["predicted_tie_rate"],
        "invalid_rate": m["invalid_rate"], "coverage": m["coverage"],
        "reference_size": split["reference_size"], "fingerprint": split["fingerprint"],
        "config_hash": ev["config_hash"],
    }


def _best(rows: list[dict]) -> None:
    """Add to each row (a copy of a summary) the accuracies on which it is the best of the runs on
    its table's main split (``other_split`` rows are never marked), compared as displayed (one
    decimal), so that equal printed values are all marked."""
    for row in rows:
        row["best"] = set()
    ranked = [r for r in rows if not r["other_split"]]
    for name in ACCURACIES:
        shown = [None if r["metrics"][name]["micro"] is None else round(r["metrics"][name]["micro"], 1) for r in ranked]
        top = max((v for v in shown if v is not None), default=None)
        for row, value in zip(ranked, shown):
            if value is not None and value == top:
                row["best"].add(name)


def histogram(values: list[float], bins: int = 10) -> dict[str, Any]:
    """Geometry of an SVG histogram of per-user accuracies over [0, 100]."""
    width, height, left, right, top, base = 520, 230, 44, 508, 12, 190
    counts, edges = np.histogram(values, bins=bins, range=(0, 100))
    peak = max(int(counts.max()) if len(values) else 0, 1)
    bw = (right - left) / bins
    bars = [{"x": round(left + i * bw + 1, 1), "w": round(bw - 2, 1), "h": round((base - top) * c / peak, 1),
             "y": round(base - (base - top) * c / peak, 1), "count": int(c), "label": f"{edges[i]:.0f}-{edges[i + 1]:.0f}%"}
            for i, c in enumerate(counts)]
    step = max(1, int(np.ceil(peak / 4)))
    return {"width": width, "height": height, "left": left, "right": right, "base": base, "bars": bars,
            "xticks": [{"x": round(left + i * (right - left) / 5, 1), "label": str(20 * i)} for i in range(6)],
            "yticks": [{"y": round(base - (base - top) * v / peak, 1), "label": str(v)} for v in range(0, peak + 1, step)]}


def sample_predictions(rows: list[dict]) -> list[dict[str, Any]]:
    """The sample rows of a run (chosen by :class:`pigbench.report.digest.SampleChooser` when its file
    was read) as its page shows them."""
    out = []
    for row in rows:
        p = row["prediction"]
        extra = p.get("extra") or {}
        out.append({
            "sample_id": row["sample_id"], "user_id": row["user_id"], "gold": row["gold"], "label": p["label"],
            "credit": credit(Label(p["label"]), Label(row["gold"])), "score_a": p.get("score_a"),
            "score_b": p.get("score_b"), "rationale": p.get("rationale"), "dimensions": _dimensions(p),
            "error": p.get("error"), "raw_text": _pretty(p["raw_text"]) if p.get("raw_text") else None,
            "prompt": row.get("prompt") if isinstance(row.get("prompt"), str) else None,
            "extra": _pretty(extra) if extra else None,
        })
    return out


def _dimensions(prediction: dict) -> list[dict[str, Any]]:
    """The prediction's dimensions with every field present (entries that are not objects dropped)."""
    return [{"name": d.get("name", ""), "definition": d.get("definition", ""), "score_a": d.get("score_a"),
             "score_b": d.get("score_b")} for d in prediction.get("dimensions") or [] if isinstance(d, dict)]


def _tau_source(source: Any) -> str:
    """Where tau came from, in words: "fixed", or the calibration record described."""
    return describe_calibration(source) if isinstance(source, dict) else str(source)


def evaluator_page(e: Entry) -> dict[str, Any]:
    """Template context of one run's page."""
    ev, split, m, prov = e.results["evaluator"], e.results["split"], e.results["metrics"], e.results["provenance"]
    per_user = m["per_user"]
    values = [u["acc_w_tie"] for u in per_user if u["acc_w_tie"] is not None]
    q = np.percentile(values, [0, 25, 50, 75, 100]).tolist() if values else [None] * 5
    summary = entry_summary(e)
    page = {
        **summary, "description": ev.get("description", ""), "version": ev["version"],
        "config_hash": ev["config_hash"], "tie_threshold": ev.get("tie_threshold"),
        "tie_threshold_source": _tau_source(ev.get("tie_threshold_source", "fixed")), "swap": ev.get("swap", False),
        "config_items": [(k, json.dumps(v)) for k, v in sorted(ev["config"].items())],
        "models": _pretty(ev.get("models", {})),
        "split": {**split, "targets_before_limit": split.get("targets_before_limit", split["targets"])},
        "skipped_users": _pretty(split.get("skipped_users", {})), "skipped_records": _pretty(split.get("skipped_records", {})),
        "provenance_items": [(k, v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in prov.items()],
        "n_decisive_gold": m["n_decisive_gold"], "gold_ties": m["gold_ties"],
        "swap_inconsistency_rate": m.get("swap_inconsistency_rate"), "bootstrap": m["bootstrap"],
        "failures": e.results.get("failures", {"count": 0, "reasons": {}}), "per_user": per_user,
        "per_user_summary": dict(zip(("min", "q1", "median", "q3", "max"), q)),
    }
    return {"e": page, "hist": histogram(values), "samples": sample_predictions(e.predictions.samples),
            "page_data": {**summary, "per_user": per_user}}


def dataset_page(name: str, entries: list[Entry], summaries: dict[str, dict]) -> dict[str, Any]:
    """Template context of one dataset's page: description, license, splits by fingerprint, sources."""
    def first(key: str) -> str:
        return next((e.results["dataset"][key] for e in entries if e.results["dataset"].get(key)), "")

    splits: dict[str, dict] = {}
    for e in entries:
        s = e.results["split"]
        row = splits.setdefault(s["fingerprint"], {
            "fingerprint": s["fingerprint"], "seed": s["seed"], "reference_size": s["reference_size"],
            "users": s["users"], "targets": s["targets"], "targets_before_limit": s.get("targets_before_limit", s["targets"]),
            "skipped_users": ", ".join(f"{r}: {n}" for r, n in s.get("skipped_users", {}).items()) or "none", "runs": []})
        row["runs"].append(summaries[e.relpath])
    sources = sorted({json.dumps(e.results["dataset"].get("source", {}), indent=2, sort_keys=True) for e in entries})
    return {"d": {"name": name, "description": first("description"), "license": first("license"),
                  "runs": entries, "splits": list(splits.values()), "sources": sources}}


def build_site(results_dir: str | Path, out_dir: str | Path, samples: int = SAMPLES_PER_PAGE) -> Collection:
    """Validate the results under ``results_dir`` and write the site into ``out_dir`` (``samples``
    sample predictions per evaluator page); returns what was admitted and rejected."""
    collection = collect(results_dir, samples, dimensions=False)  # the site shows no dimension analysis
    out = output_dir(out_dir, results_dir)
    # pages of runs no longer present must not linger; files the site did not write stay (--out may be a used folder)
    static = {asset.name for asset in (assets_dir() / "static").iterdir() if asset.is_file()}
    for sub, ours in (("evaluators", lambda p: p.suffix == ".html"), ("datasets", lambda p: p.suffix == ".html"),
                      ("static", lambda p: p.name in static), ("data", lambda p: p.name == "leaderboard.json")):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for path in (out / sub).iterdir():
            if path.is_file() and ours(path):
                path.unlink()
    for asset in (assets_dir() / "static").iterdir():
        if asset.is_file():
            shutil.copyfile(asset, out / "static" / asset.name)
    env = environment()
    summaries = {e.relpath: entry_summary(e) for e in collection.entries}
    datasets = []
    for name in collection.datasets():
        rows = [dict(summaries[e.relpath]) for e in collection.for_dataset(name)]
        main = collection.main_split(name)
        for row in rows:
            row["other_split"] = row["fingerprint"] != main
        rows.sort(key=lambda r: (r["other_split"], -(r["metrics"]["acc_w_tie"]["micro"] or -1), r["label"]))
        _best(rows)
        datasets.append({"name": name, "page": f"datasets/{slug(name)}.html", "rows": rows, "main_split": main})
    common = {"version": pigbench.__version__, "admitted": len(collection.entries), "accuracies": ACCURACIES,
              "accuracy_names": ACCURACY_NAMES, "nav_datasets": datasets}

    def render(template: str, path: str, **context: Any) -> None:
        root = "../" * path.count("/")
        (out / path).write_text(env.get_template(template).render(root=root, **common, **context))

    rejected = [{"relpath": r.relpath, "reasons": r.reasons} for r in collection.rejected]
    render("index.html", "index.html", datasets=datasets, rejected=rejected)
    for e in collection.entries:
        render("evaluator.html", summaries[e.relpath]["page"], **evaluator_page(e))
    for ds in datasets:
        render("dataset.html", ds["page"], **dataset_page(ds["name"], collection.for_dataset(ds["name"]), summaries))
    boots = sorted({(e.results["metrics"]["bootstrap"]["resamples"], e.results["metrics"]["bootstrap"]["seed"])
                    for e in collection.entries})
    render("methodology.html", "methodology.html", rejected=len(rejected),
           bootstrap="; ".join(f"{n} resamples, seed {s}" for n, s in boots) or "no runs admitted")
    data = {"pigbench_version": pigbench.__version__, "runs": list(summaries.values()), "rejected": rejected}
    (out / "data" / "leaderboard.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return collection


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build the static site from a results directory")
    build.add_argument("--results", default="results", help="results directory (default results/)")
    build.add_argument("--out", "--output", default="site", help="output directory (default site/)")
    build.add_argument("--samples", type=int, default=SAMPLES_PER_PAGE,
                       help=f"sample predictions shown per evaluator page (default {SAMPLES_PER_PAGE})")


def main(args: argparse.Namespace) -> int:
    if args.samples < 0:
        print("error: --samples must be >= 0", file=sys.stderr)
        return 2
    try:
        collection = build_site(args.results, args.out, args.samples)
    except (FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(collection.entries)} results files admitted, {len(collection.rejected)} rejected")
    for r in collection.rejected:
        print(f"  rejected {r.relpath}: {'; '.join(r.reasons)}")
    print(f"site: {Path(args.out) / 'index.html'}")
    if not collection.entries:
        print(f"error: {nothing_admitted(args.results, len(collection.rejected))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("leaderboard"))
