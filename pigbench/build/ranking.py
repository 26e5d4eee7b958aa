"""Rankings of a four-image set: validation, screen-to-variant mapping, mid-ranks.

A ranking lists one rank per image, 1 = best, with ties as equal ranks in standard competition
form ("1224"): an image's rank is one plus the number of images strictly better. So (1, 1, 3, 4)
and (1, 2, 2, 4) are valid, (1, 1, 2, 3) and (1, 2, 4, 4) are not, and (1, 1, 1, 1) ties all four.
"""

from __future__ import annotations

from typing import Any, Sequence

SET_SIZE = 4


class InvalidRanking(ValueError):
    """Not a valid ranking of the set; the message says why, in words an annotator understands."""


def competition_ranks(values: Sequence[int]) -> tuple[int, ...]:
    """Standard competition ranks of ``values`` (smaller value = better)."""
    return tuple(1 + sum(other < v for other in values) for v in values)


def validate_ranks(ranks: Any, size: int = SET_SIZE) -> tuple[int, ...]:
    """``ranks`` as a tuple if it is a valid ranking of ``size`` images, else :class:`InvalidRanking`."""
    if not isinstance(ranks, (list, tuple)):
        raise InvalidRanking(f"a ranking must be a list of {size} ranks")
    if len(ranks) != size:
        raise InvalidRanking(f"a ranking must rank all {size} images, got {len(ranks)} rank(s)")
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks):
        raise InvalidRanking("every rank must be a whole number from 1 to 4")
    if any(not 1 <= r <= size for r in ranks):
        raise InvalidRanking(f"every rank must be between 1 and {size}, got {list(ranks)}")
    expected = competition_ranks(ranks)
    if tuple(ranks) != expected:
        raise InvalidRanking(f"{list(ranks)} is not a consistent ordering: with these ties the ranks must be "
                             f"{list(expected)} (tied images share a rank and the next rank is skipped)")
    return tuple(ranks)


def to_variant_order(screen_ranks: Sequence[int], display_order: Sequence[int]) -> tuple[int, ...]:
    """Ranks by variant index, given ranks by screen slot and ``display_order[slot] = variant index``."""
    out = [0] * len(display_order)
    for slot, variant in enumerate(display_order):
        out[variant] = screen_ranks[slot]
    return tuple(out)


def mid_ranks(ranks: Sequence[int]) -> tuple[float, ...]:
    """Average ranks for ties, as Kendall's W and tau-b expect: (1, 1, 3, 4) -> (1.5, 1.5, 3, 4)."""
    return tuple(r + (sum(o == r for o in ranks) - 1) / 2 for r in ranks)
