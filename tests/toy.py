"""Small weight-free plug-ins for the core tests: a toy dataset and toy evaluators.

Registered under names starting with ``toy-`` when this module is imported (tests import it in
``conftest.py``; subprocess tests put this directory on PYTHONPATH and import it).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from PIL import Image

from pigbench.adapter import DatasetAdapter
from pigbench.evaluator import Evaluator, ScalarConfig, ScalarEvaluator, ScoreRequest
from pigbench.protocol import Episode, ImageRef, Prediction, PreferenceRecord, label_from_delta
from pigbench.registry import adapters, evaluators


def grey(level: int, size: int = 8, broken: bool = False) -> ImageRef:
    """A uniform grey image; its id and hash are determined by the level. A ``broken`` one cannot be read."""
    def load() -> Image.Image:
        if broken:
            raise OSError("truncated file")
        return Image.new("RGB", (size, size), (level,) * 3)

    return ImageRef(f"grey{level}", load, known_hash=f"h-grey{level}")


@adapters.register("toy")
class ToyDataset(DatasetAdapter):
    """Users who mostly prefer the brighter of two grey images; some ties. Options: users, records,
    broken_every (images whose level is a multiple of it cannot be read)."""

    default_reference_size = 3

    def records(self) -> Iterable[PreferenceRecord]:
        users, per_user = int(self.options.get("users", 12)), int(self.options.get("records", 8))
        every = int(self.options.get("broken_every", 0))
        rng = random.Random(7)
        for u in range(users):
            levels = rng.sample(range(0, 250, 2), 2 * per_user)
            for r in range(per_user):
                a, b = levels[2 * r], levels[2 * r + 1]
                tie = rng.random() < 0.1
                brighter_first = (a > b) != (rng.random() < 0.2)  # 20% of users' choices go the other way
                ranks = (1, 1) if tie else ((1, 2) if brighter_first else (2, 1))
                yield PreferenceRecord(f"u{u}-r{r}", f"user{u}", f"prompt {u} {r}", (grey(a, broken=every > 0 and a % every == 0), grey(b, broken=every > 0 and b % every == 0)), ranks)


@dataclass(frozen=True)
class ToyConfig(ScalarConfig):
    sleep: float = 0.0  # seconds per score() call, to make runs slow enough to kill
    fail_levels: tuple = ()  # grey levels whose scoring raises
    missing_model: str = ""  # setup() raises OSError as model libraries do for a model that cannot be found


@evaluators.register("toy-brightness")
class ToyBrightness(ScalarEvaluator):
    """Scores mean brightness: right about 80% of the toy users' decisive choices."""

    uses_prompt = False
    Config = ToyConfig
    description = "mean brightness (test plug-in)"

    def setup(self) -> None:
        if self.config.missing_model:
            raise OSError(f"{self.config.missing_model} is not a local folder and is not a valid model identifier")

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        time.sleep(self.config.sleep)
        if os.environ.get("TOY_SERVER_DOWN"):  # a transient failure: the config (and run key) stay the same
            raise ConnectionError("the scoring server does not answer")
        out = []
        for r in requests:
            level = r.image.open().getpixel((0, 0))[0]
            if level in self.config.fail_levels:
                raise ValueError(f"cannot score image {r.image.id}")
            out.append(float(level))
        if os.environ.get("TOY_TRACE"):
            with open(os.environ["TOY_TRACE"], "a") as f:
                f.write(f"{len(requests)}\n")
        return out


@evaluators.register("toy-pair-brightness")
class ToyPairBrightness(Evaluator):
    """Compares the two images' brightness in one look, as a judge sees both: a pairwise plug-in
    (deriving from Evaluator, not ScalarEvaluator) for the position-swap tests."""

    kind = "scalar"
    Config = ToyConfig
    description = "brighter of the two images (pairwise test plug-in)"

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        out = []
        for ep in episodes:
            a, b = (float(img.open().getpixel((0, 0))[0]) for img in (ep.target.image_a, ep.target.image_b))
            out.append(Prediction(ep.sample_id, label_from_delta(a - b, self.config.tie_threshold), score_a=a, score_b=b))
        return out
