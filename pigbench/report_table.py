"""Plain-text tables of a results dict for the terminal."""

from __future__ import annotations

from typing import Any, Optional

from pigbench.metrics import ACCURACIES


def _fmt(x: Optional[float]) -> str:
    return "  n/a" if x is None else f"{x:5.1f}"


def _ci(ci: Optional[list[float]]) -> str:
    return "" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def format_metrics_table(results: dict[str, Any]) -> str:
    """Headline accuracies (micro and macro with 95% CIs) and the diagnostics of one run."""
    m, ev, split = results["metrics"], results["evaluator"], results["split"]
    title = f"{ev['name']}{' (' + ev['variant'] + ')' if ev.get('variant') else ''} on {results['dataset']['name']}"
    lines = [
        title,
        f"split: seed {split['seed']}, reference size {split['reference_size']}, fingerprint {split['fingerprint']}",
        "",
        f"{'metric':<14}{'micro':>7}  {'95% CI':<14}{'macro':>7}  {'95% CI':<14}",
    ]
    for name in ACCURACIES:
        a = m[name]
        lines.append(f"{name:<14}{_fmt(a['micro']):>7}  {_ci(a['micro_ci95']):<14}{_fmt(a['macro']):>7}  {_ci(a['macro_ci95']):<14}")
    cov = "n/a" if m["coverage"] is None else f"{m['coverage']:.3f}"
    lines += [
        "",
        f"targets {m['n']} (decisive gold {m['n_decisive_gold']}, gold ties {m['gold_ties']}), users {m['users']}",
        f"predicted ties {m['predicted_tie_rate']:.3f}, invalid {m['invalid_rate']:.3f}, coverage {cov}"
        + ("" if m.get("swap_inconsistency_rate") is None else f", swap inconsistency {m['swap_inconsistency_rate']:.3f}"),
    ]
    skipped = sum(split.get("skipped_users", {}).values())
    if skipped:
        lines.append(f"skipped users {skipped}: " + "; ".join(f"{r} ({n})" for r, n in split["skipped_users"].items()))
    if results.get("failures", {}).get("count"):
        lines.append(f"failed samples {results['failures']['count']} (recorded as INVALID)")
    quality = results.get("answer_quality") or {}
    if any(quality.get(k) for k in ("unparseable", "format_violations", "contradicts_totals")):
        lines.append(f"answers: {quality['unparseable']} unparseable, {quality['format_violations']} with format "
                     f"violations, {quality['contradicts_totals']} whose totals contradict the answer")
    return "\n".join(lines)
