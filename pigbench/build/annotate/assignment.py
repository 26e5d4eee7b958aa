"""Balanced random assignment of sets to annotators, and the per-annotator screen order.

Each annotator's share is k sets, k drawn uniformly from [min_sets, max_sets] (the first draw of
their generator, so it can be drawn again): the k sets that have the fewest annotators so far, ties
broken at random (fewer while fewer sets are offered). Assigning greedily this way keeps every set's
annotator count within one of every other's while no set is retired, so all sets get several
annotators as soon as the total assignments reach a few times the number of sets. A share that
sets retired after assignment left short is topped up by the same rule, among the sets the
annotator does not have yet, with a generator of its own per top-up. The four images of each set
are shown in a random order per annotator, recorded with the assignment. All randomness derives
from (seed, annotator id), so an assignment can be reproduced from the database.
"""

from __future__ import annotations

import random
from typing import Mapping

from pigbench.build.ranking import SET_SIZE


def annotator_rng(seed: int, annotator_id: str, draw: int = 0) -> random.Random:
    """The annotator's generator: ``draw`` 0 for their first assignment, else a top-up's (its assignments so far)."""
    return random.Random(f"{seed}:{annotator_id}" if draw == 0 else f"{seed}:{annotator_id}:{draw}")


def share_size(min_sets: int, max_sets: int, rng: random.Random) -> int:
    """How many sets the annotator is meant to rank: uniform in [min_sets, max_sets] (draw it first from
    :func:`annotator_rng` with ``draw`` 0)."""
    return rng.randint(min_sets, max_sets)


def least_covered(load: Mapping[str, int], k: int, rng: random.Random) -> list[str]:
    """Up to ``k`` of the sets in ``load`` (annotators so far per set the annotator may get), those with the fewest
    annotators, ties broken at random, in presentation order."""
    order = sorted(load, key=lambda s: (load[s], rng.random()))
    chosen = order[:k]
    rng.shuffle(chosen)
    return chosen


def display_order(rng: random.Random, size: int = SET_SIZE) -> list[int]:
    """``order[slot]`` is the variant index shown in screen slot ``slot``."""
    order = list(range(size))
    rng.shuffle(order)
    return order
