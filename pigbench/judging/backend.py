"""The backend interface shared by judges and PIGReward: a batch of prompts in, one text each out.

A backend turns :class:`~pigbench.judging.messages.Prompt` objects into generated texts, and on
request into answer-option probabilities. Two implementations:

* :class:`pigbench.judging.local_backend.LocalBackend` — transformers models on this machine;
* :class:`pigbench.judging.openai_backend.OpenAIBackend` — any OpenAI-compatible chat-completions
  server (OpenAI, vLLM, SGLang), given one or several base URLs.

Contract of :meth:`Backend.generate`: one :class:`Generation` per prompt, in order. A failure on one
prompt (an unreadable image, a request that still fails after its retries) is reported in that
prompt's ``error`` and never raised, so one bad sample cannot fail the others. Each generation
says whether it was cut at ``max_new_tokens`` (``truncated``), so that parsing can refuse an answer
the model never finished, and whether its text is the model's refusal to answer (``refused``: an
OpenAI-compatible server's ``message.refusal``), which no parser reads as a verdict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from pigbench.judging.messages import ImagePolicy, Prompt


@dataclass(frozen=True)
class GenerationParams:
    """What to generate and how images are sized; identical params give identical requests.

    ``temperature`` 0 is greedy decoding. ``min_new_tokens`` > 0 forbids stopping earlier (used to
    fix the generation length when timing). With ``options`` set, each result carries the
    probabilities of those single-token options at the first token after the last
    ``answer_marker`` in the output (see :mod:`pigbench.judging.answer_probs`).
    """

    max_new_tokens: int = 16
    min_new_tokens: int = 0
    temperature: float = 0.0
    seed: int = 0
    images: ImagePolicy = field(default_factory=ImagePolicy)
    options: tuple[str, ...] = ()
    answer_marker: str = "<answer>"


@dataclass
class Generation:
    """One prompt's result: the generated ``text`` (None if it failed), the answer-option
    probabilities if asked for and found, the ``error`` if it failed, whether it came from a cache,
    and whether generation stopped at ``max_new_tokens`` rather than at its end (``truncated``;
    False where the backend cannot tell, such as a cached response stored without a finish reason).
    ``served`` holds what a server said about who answered, where worth keeping: ``model`` when it is
    not the model asked for (a proxy routing to another checkpoint), ``system_fingerprint`` if sent.
    ``refused``: ``text`` is the model's refusal to answer rather than an answer (see :func:`refusal_reason`)."""

    text: Optional[str]
    option_probs: Optional[dict[str, float]] = None
    error: Optional[str] = None
    cached: bool = False
    truncated: bool = False
    served: dict[str, str] = field(default_factory=dict)
    refused: bool = False


REFUSAL_QUOTED = 60  # characters of a refusal quoted in its invalid reason


def refusal_reason(text: Optional[str]) -> str:
    """The invalid reason of a refused generation: "the model refused: " and the start of its refusal
    text in one line (its whitespace runs made single spaces), quoted."""
    words = " ".join((text or "").split())
    quoted = words if len(words) <= REFUSAL_QUOTED else words[:REFUSAL_QUOTED].rstrip() + "..."
    return f'the model refused: "{quoted}"'


class Backend(ABC):
    """Generates text for prompts. Subclasses implement :meth:`generate` and :meth:`provenance`."""

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        """One :class:`Generation` per prompt, in order; never raises for one prompt's failure."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Model id or path, server URLs, dtype: recorded in results. Never holds secrets."""

    def close(self) -> None:
        """Release resources (connections, caches). Idempotent."""
