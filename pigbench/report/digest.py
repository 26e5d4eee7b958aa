"""What the report and the leaderboard keep of one results file's predictions.

A results file can hold hundreds of thousands of predictions and a results directory dozens of
files, so :func:`pigbench.report.collect.collect` reads each file's predictions once, one row at a
time, validating each row and adding it to a :class:`DigestBuilder`, and drops the rows: the pages
and tables need only

* the sample predictions an evaluator page shows (:class:`SampleChooser`),
* for a similarity metric, Spearman's rho of its score difference against the gold preference
  (:attr:`Digest.rank_correlation`),
* the dimension names of each user's predictions, counted, for the dimension analysis.

Memory then grows with these summaries and validation's recount
(:class:`pigbench.results.PredictionsRecount`, about 150 bytes per prediction), not with the
predictions' rows.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

SAMPLES_PER_PAGE = 20
GOLD_CODE = {"A": 1.0, "TIE": 0.0, "B": -1.0}


@dataclass(frozen=True)
class Digest:
    """``samples``: the rows an evaluator page shows, in display order (:class:`SampleChooser`);
    ``scores``: a similarity metric's score pairs, None for other kinds (:attr:`rank_correlation`);
    ``dimensions``: occurrences of each normalized dimension name per user, ``(name, user_id) ->
    count``, in order of first occurrence in the file (empty when not counted);
    ``samples_with_dimensions``: predictions with at least one named dimension."""

    samples: list[dict] = field(default_factory=list, repr=False)
    scores: Optional["ScorePairs"] = field(default=None, repr=False)
    dimensions: Counter[tuple[str, str]] = field(default_factory=Counter, repr=False)
    samples_with_dimensions: int = 0

    @property
    def rank_correlation(self) -> Optional[tuple[Optional[float], int]]:
        """(Spearman's rho or None, targets with both scores) of a similarity metric, None for other
        kinds; computed when asked (only the report's similarity table does)."""
        return None if self.scores is None else self.scores.correlation()


class DigestBuilder:
    """The :class:`Digest` of one file's validated prediction rows, built one row at a time
    (:meth:`add`, then :meth:`digest`) while the rows stream past: it keeps the ``samples`` best
    sample rows so far, a score pair per target for a similarity metric (``kind``), and, with
    ``dimensions``, the dimension counts (the leaderboard does not use them)."""

    def __init__(self, kind: str, samples: int = SAMPLES_PER_PAGE, dimensions: bool = True) -> None:
        self.samples = SampleChooser(samples)
        self.scores = ScorePairs() if kind == "similarity" else None
        self.count_dimensions = dimensions
        self.dimensions: Counter[tuple[str, str]] = Counter()
        self.with_dimensions = 0

    def add(self, row: dict) -> None:
        self.samples.add(row)
        if self.scores is not None:
            self.scores.add(row)
        if not self.count_dimensions:
            return
        names = dimension_names(row["prediction"])
        self.with_dimensions += bool(names)
        for name in names:
            self.dimensions[name, row["user_id"]] += 1

    def digest(self) -> Digest:
        return Digest(self.samples.rows(), self.scores, self.dimensions, self.with_dimensions)


class SampleChooser:
    """Up to ``limit`` rows for inspection, chosen while rows stream past: those with rationales or
    dimensions first, then errors, then the rest; within each group users take turns (their first
    rows, then their second, ...). Holds the ``limit`` best rows so far and a count per user."""

    def __init__(self, limit: int = SAMPLES_PER_PAGE) -> None:
        self.limit = limit
        self._seen: Counter[tuple[int, str]] = Counter()
        self._best: list[tuple[tuple[int, int, int], dict]] = []  # max-heap of (negated key, row)
        self._index = 0

    def add(self, row: dict) -> None:
        p = row["prediction"]
        group = 0 if p.get("rationale") or p.get("dimensions") else 1 if p.get("error") else 2
        key = (-group, -self._seen[(group, row["user_id"])], -self._index)  # keys are unique: rows never compared
        self._seen[(group, row["user_id"])] += 1
        self._index += 1
        if len(self._best) < self.limit:
            heapq.heappush(self._best, (key, row))
        elif self._best and key > self._best[0][0]:
            heapq.heapreplace(self._best, (key, row))

    def rows(self) -> list[dict]:
        """The rows chosen, best first."""
        return [row for _, row in sorted(self._best, reverse=True)]


class ScorePairs:
    """Score difference and gold code of each target with both scores, gathered row by row (8 bytes
    each) for Spearman's rho (:meth:`correlation`)."""

    def __init__(self) -> None:
        self.deltas, self.golds = array("d"), array("d")

    def add(self, row: dict) -> None:
        a, b = row["prediction"].get("score_a"), row["prediction"].get("score_b")
        if a is None or b is None or math.isnan(a - b):
            return
        self.deltas.append(a - b)
        self.golds.append(GOLD_CODE[row["gold"]])

    def correlation(self) -> tuple[Optional[float], int]:
        """Spearman's rho of score difference vs gold code, and how many targets had both scores.
        None when fewer than 3 targets have scores or either side is constant."""
        from scipy.stats import spearmanr

        deltas, golds = self.deltas, self.golds
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
