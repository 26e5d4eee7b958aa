"""Backends that answer by a fixed rule, for the conformance checks' position-swap probes.

The swap check (:mod:`pigbench.conformance`) puts one of them in a judge's ``backend`` and runs the
runner's ``--swap`` on it; the rule decides what the combined labels must be:

* :class:`FirstImageProbe` answers "the first image" to every prompt: a pure position bias, which
  the swap must cancel (TIE wherever both orders answered).
* :class:`SameImageProbe` prefers the same target image whichever position it is shown in (the
  one whose id sorts first): the swap must keep that answer (never an inconsistent pair).

An answer reads ``Image 1 is better.`` and ``<answer>A</answer>`` (2 and B for the second image),
so that every built-in parse rule reads it: the tagged answer of the reference judges and
UnifiedReward-Think, and UnifiedReward's conclusion string.

Both record how many prompts they answered, so that a judge whose ``setup`` replaces the backend
is seen not to have been probed. With answer options asked (``scoring=probs``), the answered
option gets probability 0.9.
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

from pigbench.judging.backend import Backend, Generation, GenerationParams
from pigbench.judging.messages import Prompt

ANSWERED_PROBABILITY = 0.9


class FirstImageProbe(Backend):
    """Answers A to every prompt."""

    def __init__(self) -> None:
        self.answered = 0

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        self.answered += len(prompts)
        return [_answer("A", params) for _ in prompts]

    def provenance(self) -> dict[str, Any]:
        return {"model": "first-image-probe"}


class SameImageProbe(Backend):
    """Answers the position of the target image whose id sorts first; ``targets`` holds each
    episode's two target image ids. A prompt showing no episode's two target images gets an empty
    answer (INVALID)."""

    def __init__(self, targets: Collection[tuple[str, str]]) -> None:
        self.targets = {frozenset(pair) for pair in targets}
        self.answered = 0

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        self.answered += len(prompts)
        return [self._answer(p, params) for p in prompts]

    def _answer(self, prompt: Prompt, params: GenerationParams) -> Generation:
        ids = [image.id for image in prompt.images]
        shown = [pair for pair in self.targets if pair <= set(ids)]
        if len(shown) != 1:
            return Generation("")
        first, second = sorted(shown[0], key=lambda i: max(k for k, x in enumerate(ids) if x == i))
        return _answer("A" if first < second else "B", params)

    def provenance(self) -> dict[str, Any]:
        return {"model": "same-image-probe"}


def _answer(option: str, params: GenerationParams) -> Generation:
    probs = None
    if params.options:
        other = [o for o in params.options if o != option]
        probs = {option: ANSWERED_PROBABILITY, **{o: (1 - ANSWERED_PROBABILITY) / len(other) for o in other}}
    return Generation(f"Image {'AB'.index(option) + 1} is better.\n<answer>{option}</answer>", option_probs=probs)
