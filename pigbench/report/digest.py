"""What the report and the leaderboard keep of one results file's predictions.

A results file can hold hundreds of thousands of predictions and a results directory dozens of
files, so :func:`pigbench.report.collect.collect` reads each file's predictions once, right after
validating them, into a :class:`Digest` and drops the rows: the pages and tables need only

* the sample predictions an evaluator page shows (:func:`sample_rows`),
* for a similarity metric, Spearman's rho of its score difference against the gold preference
  (:func:`rank_correlation`),
* the dimension names of each user's predictions, counted, for the dimension analysis.

Memory then grows with one file's predictions plus these summaries, not with all predictions of
all files.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

SAMPLES_PER_PAGE = 20
GOLD_CODE = {"A": 1.0, "TIE": 0.0, "B": -1.0}


@dataclass(frozen=True)
class Digest:
    """``samples``: the rows an evaluator page shows, in display order (:func:`sample_rows`);
    ``rank_correlation``: (Spearman's rho or None, targets with both scores) of a similarity
    metric, None for other kinds; ``dimensions``: occurrences of each normalized dimension name
    per user, ``(name, user_id) -> count``, in order of first occurrence in the file;
    ``samples_with_dimensions``: predictions with at least one named dimension."""

    samples: list[dict] = field(default_factory=list, repr=False)
    rank_correlation: Optional[tuple[Optional[float], int]] = None
    dimensions: Counter[tuple[str, str]] = field(default_factory=Counter, repr=False)
    samples_with_dimensions: int = 0


def digest_rows(rows: list[dict], kind: str, samples: int = SAMPLES_PER_PAGE) -> Digest:
    """The :class:`Digest` of one file's validated prediction rows (``kind``: the evaluator's kind;
    ``samples``: how many sample rows to keep)."""
    dimensions: Counter[tuple[str, str]] = Counter()
    with_dimensions = 0
    for row in rows:
        names = dimension_names(row["prediction"])
        with_dimensions += bool(names)
        for name in names:
            dimensions[name, row["user_id"]] += 1
    return Digest(sample_rows(rows, samples), rank_correlation(rows) if kind == "similarity" else None,
                  dimensions, with_dimensions)


def sample_rows(rows: list[dict], limit: int = SAMPLES_PER_PAGE) -> list[dict]:
    """Up to ``limit`` rows for inspection: those with rationales or dimensions first, then errors,
    then the rest; within each group users take turns (their first rows, then their second, ...)."""
    def rank(row: dict) -> int:
        p = row["prediction"]
        return 0 if p.get("rationale") or p.get("dimensions") else 1 if p.get("error") else 2

    seen: Counter[tuple[int, str]] = Counter()
    keys = []
    for i, row in enumerate(rows):
        group = rank(row)
        keys.append((group, seen[(group, row["user_id"])], i))
        seen[(group, row["user_id"])] += 1
    return [rows[k[2]] for k in sorted(keys)[:limit]]


def rank_correlation(rows: list[dict]) -> tuple[Optional[float], int]:
    """Spearman's rho of score difference vs gold code, and how many targets had both scores.
    None when fewer than 3 targets have scores or either side is constant."""
    from scipy.stats import spearmanr

    deltas, golds = [], []
    for row in rows:
        a, b = row["prediction"].get("score_a"), row["prediction"].get("score_b")
        if a is None or b is None or math.isnan(a - b):
            continue
        deltas.append(a - b)
        golds.append(GOLD_CODE[row["gold"]])
    if len(deltas) < 3 or len(set(deltas)) < 2 or len(set(golds)) < 2:
        return None, len(deltas)
    return float(spearmanr(deltas, golds).statistic), len(deltas)


def normalize(name: str) -> str:
    """Case-folded, whitespace collapsed, surrounding punctuation removed: 'Colour  Palette:' -> 'colour palette'."""
    return re.sub(r"\s+", " ", name).strip(" \t\n.,;:!?*-_\"'").casefold()


def dimension_names(prediction: dict) -> list[str]:
    """The normalized names of a prediction's dimensions, nameless ones left out."""
    dims = prediction.get("dimensions") or []
    names = (normalize(str(d.get("name", ""))) if isinstance(d, dict) else "" for d in dims)
    return [n for n in names if n]
