"""Balanced random assignment of sets to annotators, and the per-annotator screen order.

When an annotator signs in for the first time they get k sets, k drawn uniformly from
[min_sets, max_sets] (capped by the number of sets): the k sets that have the fewest annotators
so far, ties broken at random. Assigning greedily this way keeps every set's annotator count
within one of every other's at all times, so all sets get several annotators as soon as the
total assignments reach a few times the number of sets. The four images of each set are shown
in a random order per annotator, recorded with the assignment. All randomness derives from
(seed, annotator id), so an assignment can be reproduced from the database.
"""

from __future__ import annotations

import random
from typing import Mapping

from pigbench.build.ranking import SET_SIZE


def annotator_rng(seed: int, annotator_id: str) -> random.Random:
    return random.Random(f"{seed}:{annotator_id}")


def choose_sets(load: Mapping[str, int], min_sets: int, max_sets: int, rng: random.Random) -> list[str]:
    """The sets for a new annotator, in presentation order; ``load`` is annotators so far per set offered (the
    store leaves retired sets out)."""
    if not load:
        return []
    k = min(rng.randint(min_sets, max_sets), len(load))
    order = sorted(load, key=lambda s: (load[s], rng.random()))
    chosen = order[:k]
    rng.shuffle(chosen)
    return chosen


def display_order(rng: random.Random, size: int = SET_SIZE) -> list[int]:
    """``order[slot]`` is the variant index shown in screen slot ``slot``."""
    order = list(range(size))
    rng.shuffle(order)
    return order
