"""``random``: the chance baseline. Answers A or B by a seeded hash of the sample id.

The answer depends only on ``(seed, sample_id)``, never on batching, order or the images, so
its expected acc_w_tie is 50 on any dataset (a gold TIE earns 0.5 against either answer). The
hash is salted with the evaluator's name so it is independent of the split's A/B-order coin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from pigbench.evaluator import Evaluator, EvaluatorConfig
from pigbench.protocol import Episode, Label, Prediction


@dataclass(frozen=True)
class RandomConfig(EvaluatorConfig):
    seed: int = 0  # different seeds give independent coin flips


class RandomChoice(Evaluator):
    """Seeded coin flip per sample: the floor every evaluator must beat."""

    kind = "baseline"
    uses_references = False
    description = "Seeded coin flip per sample (chance baseline)"
    Config = RandomConfig

    def choose(self, sample_id: str) -> Label:
        digest = hashlib.sha256(f"random-choice\x00{self.config.seed}\x00{sample_id}".encode()).digest()
        return Label.A if digest[0] & 1 else Label.B

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [Prediction(ep.sample_id, self.choose(ep.sample_id)) for ep in episodes]
