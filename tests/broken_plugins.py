"""Evaluator plug-ins that each break one clause of the contract, for the conformance tests.

Not registered: tests pass the classes to ``run_checks`` directly (subprocess tests register
them by name first). Each is a mean-brightness scorer plus exactly one defect.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import ImageStat

from pigbench.evaluator import Evaluator, EvaluatorConfig, RequirementError, ScalarConfig, ScalarEvaluator, ScoreRequest
from pigbench.judging.backend import Backend, Generation, GenerationParams
from pigbench.judging.judge import ReferenceJudge
from pigbench.judging.messages import Prompt
from pigbench.protocol import Episode, ImageRef, Label, Prediction, label_from_delta


def brightness(image: ImageRef) -> float:
    return ImageStat.Stat(image.open().convert("L")).mean[0]


class Brightness(ScalarEvaluator):
    """The sound base: mean brightness, reference-free, no requirements."""

    uses_prompt = False

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [brightness(r.image) for r in requests]


class NonDeterministic(Brightness):
    """Adds unseeded noise: two runs (and two batch sizes) disagree."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [s + random.uniform(-40, 40) for s in super().score(requests)]


class ReordersOutputs(Evaluator):
    """Returns each batch's predictions in reverse order (each with its right sample id)."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [_brightness_prediction(e) for e in reversed(episodes)]


class AlwaysFails(Evaluator):
    """Swallows an error on every episode: all INVALID, each with the same error."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [Prediction.invalid(e.sample_id, "KeyError: 'pixel_values'") for e in episodes]


class CrashesOnCorruptImage(Evaluator):
    """Lets an undecodable image raise out of ``predict``, failing the whole batch."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [Prediction(e.sample_id, label_from_delta(brightness(e.target.image_a) - brightness(e.target.image_b)))
                for e in episodes]


class ReadsReferences(Evaluator):
    """Declares uses_references = False, then compares with the user's first preferred image."""

    uses_references = False

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [self._predict(e) for e in episodes]

    def _predict(self, e: Episode) -> Prediction:
        try:
            anchor = brightness(e.references[0].preferred) if e.references else 128.0
            delta = abs(brightness(e.target.image_b) - anchor) - abs(brightness(e.target.image_a) - anchor)
        except Exception as exc:
            return Prediction.invalid(e.sample_id, f"{type(exc).__name__}: {exc}")
        return Prediction(e.sample_id, label_from_delta(delta))


@dataclass(frozen=True)
class WeightsConfig(ScalarConfig):
    model_path: str = "org/some-model"


class SkipsRequirements(Brightness):
    """Has a model_path but checks nothing: a missing model or package surfaces only in setup()."""

    Config = WeightsConfig

    def setup(self) -> None:
        import safetensors  # noqa: F401  a model package (pigbench[models]), never checked for



class WrongErrorForMissingModel(Brightness):
    """Lets a model_path that does not exist raise FileNotFoundError, not RequirementError."""

    Config = WeightsConfig

    @classmethod
    def check_requirements(cls, config: WeightsConfig) -> None:
        if os.path.isabs(config.model_path) and not os.path.exists(config.model_path):
            raise FileNotFoundError(config.model_path)

class MissingWeights(Brightness):
    """Sound, but its weights are not on this machine: the checks that need a model do not run."""

    @classmethod
    def check_requirements(cls, config: ScalarConfig) -> None:
        raise RequirementError("missing-weights: weights not found at /models/x; download them and pass --model-path")



class SilentRequirementError(Brightness):
    """Refuses to run without saying why: a RequirementError with no message."""

    @classmethod
    def check_requirements(cls, config: ScalarConfig) -> None:
        raise RequirementError()

@dataclass(frozen=True)
class LossyConfig(ScalarConfig):
    temperature: float = 1.0

    def to_json(self) -> dict[str, Any]:  # forgets a field: its changes escape the config hash
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "temperature"}


class LossyConfigHash(Brightness):
    """Its config hash ignores ``temperature``: cached predictions would be reused wrongly."""

    Config = LossyConfig


class LookAheadLeaks(Brightness):
    """Its look-ahead changes answers: scores of announced images are shifted by the window's mean."""

    prepare_window = 64

    def prepare(self, episodes: Sequence[Episode]) -> None:
        images = [img for e in episodes for img in (e.target.image_a, e.target.image_b)]
        mean = sum(brightness(i) for i in images) / len(images)
        self.shift = {i.id: mean * (k % 2) for k, i in enumerate(images)}

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        shift = getattr(self, "shift", {})
        return [s + shift.get(r.image.id, 0.0) for s, r in zip(super().score(requests), requests)]


class RawTextNamesBatch(Brightness):
    """Keeps a raw text naming the batch size: same labels and scores, other raw texts at batch size 1."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [dataclasses.replace(p, raw_text=f"batch of {len(episodes)}") for p in super().predict(episodes)]


class DropsLastPrediction(Brightness):
    """Loses the last episode of every batch (an off-by-one in its batching)."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return super().predict(episodes)[:-1]


class StringLabels(Evaluator):
    """Answers with the label's text ("A"), not a :class:`Label` member."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [dataclasses.replace(p, label=p.label.value) for p in map(_brightness_prediction, episodes)]


class NumpyScores(Brightness):
    """Returns numpy float32 scores, which the results file cannot hold (not JSON-serializable)."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [dataclasses.replace(p, score_a=None if p.score_a is None else np.float32(p.score_a))
                for p in super().predict(episodes)]


class AnswersOnCorruptImage(Evaluator):
    """Records a corrupt image's error but still answers B instead of INVALID."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [dataclasses.replace(p, label=Label.B) if p.label == Label.INVALID else p
                for p in map(_brightness_prediction, episodes)]


class InvalidWithoutError(Evaluator):
    """Swallows a corrupt image's error: that episode is INVALID without its reason."""

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [dataclasses.replace(p, error=None) for p in map(_brightness_prediction, episodes)]


class RemembersBySampleId(Evaluator):
    """Keeps its answers by sample id (to "resume"): the swapped order, same id, gets the first's answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: dict[str, Prediction] = {}

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [self.answers.setdefault(e.sample_id, _brightness_prediction(e)) for e in episodes]


class BrighterImage(Backend):
    """A judge's backend answering the brighter of the prompt's last two images, with P(A), P(B)
    from the brightness gap when asked for answer probabilities."""

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        return [self._answer(p, params) for p in prompts]

    def _answer(self, prompt: Prompt, params: GenerationParams) -> Generation:
        try:
            a, b = (brightness(ref) for ref in prompt.images[-2:])
        except Exception as exc:
            return Generation(None, error=f"{type(exc).__name__}: {exc}")
        probs = {"A": 0.5 + (a - b) / 510, "B": 0.5 - (a - b) / 510} if params.options else None
        return Generation(f"<answer>{'A' if a >= b else 'B'}</answer>", option_probs=probs)

    def provenance(self) -> dict[str, Any]:
        return {"model": "brighter-image"}


class BrightnessJudge(ReferenceJudge):
    """The sound judge: pigbench's ReferenceJudge with a weight-free backend."""

    @classmethod
    def check_requirements(cls, config: EvaluatorConfig) -> None:
        if getattr(config, "model_path", ""):  # none: the weight-free backend
            super().check_requirements(config)

    def setup(self) -> None:
        if self.backend is None:
            self.backend = BrighterImage()


class IgnoresSwap(BrightnessJudge):
    """Shows the target images in a fixed order (by id, "for its request cache"): both orders ask the same."""

    def build_prompt(self, episode: Episode) -> Prompt:
        t = episode.target
        first, second = sorted((t.image_a, t.image_b), key=lambda image: image.id)
        return super().build_prompt(dataclasses.replace(episode, target=dataclasses.replace(t, image_a=first, image_b=second)))


class PercentProbabilities(BrightnessJudge):
    """Gives P(A), P(B) in percent (80, 20) with scoring=probs, not probabilities."""

    def to_prediction(self, sample_id: str, gen: Generation) -> Prediction:
        p = super().to_prediction(sample_id, gen)
        return p if p.score_a is None else dataclasses.replace(p, score_a=100 * p.score_a, score_b=100 * p.score_b)


class IgnoresTieThreshold(BrightnessJudge):
    """Labels by the larger of P(A), P(B) with scoring=probs, whatever its tie_threshold."""

    def to_prediction(self, sample_id: str, gen: Generation) -> Prediction:
        p = super().to_prediction(sample_id, gen)
        return p if p.score_a is None else dataclasses.replace(p, label=label_from_delta(p.score_a - p.score_b))


class ScoreBCopiesScoreA(BrightnessJudge):
    """Gives P(A) as both scores with scoring=probs (a copy-paste slip): P(A) + P(B) exceeds 1."""

    def to_prediction(self, sample_id: str, gen: Generation) -> Prediction:
        p = super().to_prediction(sample_id, gen)
        return p if p.score_a is None else dataclasses.replace(p, score_b=p.score_a)


class ReplacesBackend(BrightnessJudge):
    """Sound, but its setup() builds its backend whatever was set before: the swap probes cannot run."""

    def setup(self) -> None:
        self.backend = BrighterImage()


def _brightness_prediction(e: Episode) -> Prediction:
    try:
        delta = brightness(e.target.image_a) - brightness(e.target.image_b)
    except Exception as exc:
        return Prediction.invalid(e.sample_id, f"{type(exc).__name__}: {exc}")
    return Prediction(e.sample_id, label_from_delta(delta))


# The checks each plug-in must fail; every other check must pass (or be skipped). Noise shows in
# every check that compares two runs, not only in the same-config one.
EXPECTED_FAILURES: dict[type[Evaluator], set[str]] = {
    Brightness: set(),
    NonDeterministic: {"batch-size", "determinism", "corrupt-image", "reference-free", "tie-threshold"},
    ReordersOutputs: {"predictions"},
    AlwaysFails: {"predictions"},
    CrashesOnCorruptImage: {"corrupt-image"},
    ReadsReferences: {"reference-free"},
    SkipsRequirements: {"requirements"},
    LossyConfigHash: {"config"},
    LookAheadLeaks: {"look-ahead"},
    RawTextNamesBatch: {"batch-size"},
    DropsLastPrediction: {"predictions", "batch-size", "determinism", "corrupt-image", "reference-free"},  # ids missing
    StringLabels: {"predictions", "swap"},  # the runner turns each malformed answer into INVALID with its error
    NumpyScores: {"predictions"},
    AnswersOnCorruptImage: {"corrupt-image"},
    InvalidWithoutError: {"corrupt-image"},
    WrongErrorForMissingModel: {"requirements"},
    RemembersBySampleId: {"swap"},
    BrightnessJudge: set(),
    IgnoresSwap: {"swap"},
    PercentProbabilities: {"tie-threshold"},
    IgnoresTieThreshold: {"tie-threshold"},
    ScoreBCopiesScoreA: {"tie-threshold"},
    ReplacesBackend: set(),
}
