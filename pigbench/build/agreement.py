"""Agreement between annotators on one set: Kendall's W (tie-corrected) and pairwise Kendall tau-b.

PIGBench is built to split people's preferences, so low agreement on a set is expected and
wanted; the datasheet reports both measures so that a reader can see how personal each set is.
"""

from __future__ import annotations

import math
from itertools import combinations
from statistics import mean
from typing import Optional, Sequence

from pigbench.build.ranking import mid_ranks


def kendalls_w(rankings: Sequence[Sequence[int]]) -> Optional[float]:
    """Kendall's coefficient of concordance of m rankings of the same n items, corrected for ties.

    W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), with S the sum of squared deviations of the items'
    rank sums from their mean and T_j = sum (t^3 - t) over the tie groups of ranking j. Ranges
    from 0 (no agreement) to 1 (identical rankings). None for fewer than 2 rankings or when every
    ranking ties all items.
    """
    m = len(rankings)
    if m < 2:
        return None
    n = len(rankings[0])
    rows = [mid_ranks(r) for r in rankings]
    sums = [sum(row[i] for row in rows) for i in range(n)]
    s = sum((x - m * (n + 1) / 2) ** 2 for x in sums)
    ties = sum(sum(t ** 3 - t for t in _tie_sizes(r)) for r in rankings)
    denominator = m ** 2 * (n ** 3 - n) - m * ties
    return None if denominator == 0 else 12 * s / denominator


def kendall_tau_b(a: Sequence[int], b: Sequence[int]) -> Optional[float]:
    """Kendall's tau-b between two rankings of the same items; None if either ties everything."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return None if denominator == 0 else (concordant - discordant) / denominator


def pairwise_disagreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of image pairs two users order differently (one prefers x, the other y or a tie)."""
    pairs = list(combinations(range(len(a)), 2))
    sign = lambda x: (x > 0) - (x < 0)  # noqa: E731
    return sum(sign(a[i] - a[j]) != sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


def set_agreement(rankings: Sequence[Sequence[int]]) -> dict[str, Optional[float]]:
    """Agreement summary of one set's rankings (by variant index)."""
    pairs = list(combinations(rankings, 2))
    taus = [t for t in (kendall_tau_b(a, b) for a, b in pairs) if t is not None]
    return {
        "annotators": len(rankings),
        "kendalls_w": kendalls_w(rankings),
        "mean_tau_b": mean(taus) if taus else None,
        "mean_pairwise_disagreement": mean(pairwise_disagreement(a, b) for a, b in pairs) if pairs else None,
    }


def _tie_sizes(ranks: Sequence[int]) -> list[int]:
    return [sum(r == v for r in ranks) for v in set(ranks)]
