"""Tie-aware accuracies, diagnostics and cluster-bootstrap confidence intervals (protocol section 4).

Credit per target for ``acc_w_tie`` (Pick-a-Pic's rule plus the INVALID row)::

    p \\ gold   A    B    TIE
    A          1    0    0.5
    B          0    1    0.5
    TIE        0.5  0.5  1
    INVALID    0.5  0.5  0.5

``acc_wo_tie``: mean of 1[p == gold] over targets whose gold is decisive (a predicted TIE or an
INVALID earns 0). ``decisive_acc``: the same restricted to targets where p is A or B.

Every accuracy is reported as the micro average over targets (the headline) and the macro
average over users, each with a 95% CI from a bootstrap that resamples users (clusters); with
fewer than two users contributing to an accuracy its CIs are None (a bootstrap of one cluster has
no spread, and [x, x] would read as certainty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from pigbench.protocol import Label

ACCURACIES = ("acc_w_tie", "acc_wo_tie", "decisive_acc")


def credit(pred: Label, gold: Label) -> float:
    """The acc_w_tie credit of one prediction (see the module table)."""
    if gold == Label.INVALID:
        raise ValueError("gold label cannot be INVALID")
    if pred == Label.INVALID:
        return 0.5
    if pred == gold:
        return 1.0
    return 0.5 if Label.TIE in (pred, gold) else 0.0


@dataclass(frozen=True)
class Judged:
    """One target's gold and prediction, with the user it belongs to."""

    user_id: str
    gold: Label
    pred: Label
    swap_inconsistent: Optional[bool] = None  # None when no position swap was run


def compute_metrics(samples: Sequence[Judged], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All headline metrics, diagnostics and CIs, plus the per-user table, as JSON-ready dicts.

    ``n_bootstrap`` resamples (0: no CIs) drawn from ``seed``; ValueError when either is negative."""
    if not samples:
        raise ValueError("no samples to score")
    if n_bootstrap < 0 or seed < 0:
        raise ValueError(f"the bootstrap needs n_bootstrap >= 0 and seed >= 0, got {n_bootstrap} and {seed}")
    users = sorted({s.user_id for s in samples})
    index = {u: i for i, u in enumerate(users)}
    # Per-user sufficient statistics; every metric is a ratio of two of these sums.
    stats = np.zeros((len(users), 6))  # n, credit, S, correct_in_S, decisive_in_S, correct_decisive
    pred_ties = invalid = gold_ties = 0
    for s in samples:
        row = stats[index[s.user_id]]
        c = credit(s.pred, s.gold)
        row[0] += 1
        row[1] += c
        if s.gold != Label.TIE:
            row[2] += 1
            row[3] += s.pred == s.gold
            if s.pred in (Label.A, Label.B):
                row[4] += 1
                row[5] += s.pred == s.gold
        else:
            gold_ties += 1
        pred_ties += s.pred == Label.TIE
        invalid += s.pred == Label.INVALID
    n, s_count = len(samples), int(stats[:, 2].sum())
    ratios = {"acc_w_tie": (1, 0), "acc_wo_tie": (3, 2), "decisive_acc": (5, 4)}
    weights = np.random.default_rng(seed).multinomial(len(users), [1 / len(users)] * len(users), size=n_bootstrap)
    out: dict[str, Any] = {
        "n": n,
        "n_decisive_gold": s_count,
        "gold_ties": gold_ties,
        "users": len(users),
        "predicted_tie_rate": pred_ties / n,
        "invalid_rate": invalid / n,
        "coverage": _ratio(stats[:, 4].sum(), s_count),
        "swap_inconsistency_rate": _swap_rate(samples),
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "unit": "user", "level": 0.95},
    }
    for name, (num, den) in ratios.items():
        per_user = _safe_div(stats[:, num], stats[:, den])
        has = stats[:, den] > 0
        boot_micro = _safe_div(weights @ stats[:, num], weights @ stats[:, den])
        boot_macro = _safe_div(weights @ np.where(has, per_user, 0.0), weights @ has.astype(float))
        clusters = int(has.sum())  # one user resampled is always the same user: no interval, not a zero-width one
        out[name] = {
            "micro": _pct(_ratio(stats[:, num].sum(), stats[:, den].sum())),
            "micro_ci95": _ci(boot_micro) if clusters > 1 else None,
            "macro": _pct(float(per_user[has].mean())) if has.any() else None,
            "macro_ci95": _ci(boot_macro) if clusters > 1 else None,
        }
    out["per_user"] = [
        {
            "user_id": u,
            "n": int(stats[i, 0]),
            "n_decisive_gold": int(stats[i, 2]),
            **{name: _pct(_ratio(stats[i, num], stats[i, den])) for name, (num, den) in ratios.items()},
        }
        for i, u in enumerate(users)
    ]
    return out


def _swap_rate(samples: Sequence[Judged]) -> Optional[float]:
    flags = [s.swap_inconsistent for s in samples if s.swap_inconsistent is not None]
    return sum(flags) / len(flags) if flags else None


def _ratio(num: float, den: float) -> Optional[float]:
    return float(num) / float(den) if den else None


def _pct(x: Optional[float]) -> Optional[float]:
    return None if x is None else 100.0 * x


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _ci(boot: np.ndarray) -> Optional[list[float]]:
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        return None
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return [100.0 * float(lo), 100.0 * float(hi)]


class _Missing:
    """The value on the side of a :func:`metric_differences` entry that lacks the key."""

    def __repr__(self) -> str:
        return "missing"


MISSING = _Missing()


def metric_differences(stored: Any, recomputed: Any, path: str = "", tol: float = 1e-6) -> list[tuple[str, Any, Any]]:
    """Every leaf where ``stored`` and ``recomputed`` differ (numbers by more than ``tol``), as
    (dotted path below ``path``, stored value, recomputed value), in the recomputed order. A list item
    is ``path[i]``; a key one side lacks is :data:`MISSING` on that side; lists of different lengths
    differ as a whole."""
    if isinstance(stored, dict) and isinstance(recomputed, dict):
        out = []
        for key in [*recomputed, *(k for k in stored if k not in recomputed)]:
            out += metric_differences(stored.get(key, MISSING), recomputed.get(key, MISSING),
                                      f"{path}.{key}" if path else str(key), tol)
        return out
    if isinstance(stored, list) and isinstance(recomputed, list) and len(stored) == len(recomputed):
        return [d for i, (x, y) in enumerate(zip(stored, recomputed))
                for d in metric_differences(x, y, f"{path}[{i}]", tol)]
    if is_number(stored) and is_number(recomputed):
        same = math.isclose(stored, recomputed, rel_tol=0, abs_tol=tol)
    else:
        same = stored is not MISSING and recomputed is not MISSING and stored == recomputed
    return [] if same else [(path, stored, recomputed)]


def is_number(x: Any) -> bool:
    """An int or float, not a bool (JSON's numbers)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)
