"""The base of the LVLM judge evaluators: prompt -> backend -> shared parser -> prediction.

A judge subclass only says how to build its :class:`~pigbench.judging.messages.Prompt`, its
default model and lengths, and (if it publishes one) its own parse rule; this module does the rest:

* ``backend=local`` runs the model with transformers on ``--device``; ``backend=openai`` sends the
  same prompt to OpenAI-compatible servers (``base_url``: comma-separated URLs, default
  ``$OPENAI_BASE_URL`` or the OpenAI API; key from the environment variable ``api_key_env``).
  API responses are cached in ``<cache>/requests/<judge>-<hash>.sqlite`` (the config hash with tau at
  0 and without the judge's version, since neither changes a request), where ``<cache>`` is
  the runtime's ``cache_dir``, else ``$PIGBENCH_CACHE``, else ``.pigbench_cache`` (the runner's
  default), so a resumed run re-sends nothing.
* Every prediction keeps the raw output. An unparseable answer is INVALID with the parser's reason
  in ``extra["invalid_reason"]`` (not an error: the model answered), and so is a refusal (a served
  model's ``message.refusal``, kept as the raw output; reason "the model refused: ..."); a failed request or an
  unreadable image is INVALID with ``error`` set. An output cut at ``max_new_tokens`` has
  ``extra["truncated"]`` and counts only if it gave an explicit answer before the cut. A server's
  word on who answered (another ``model`` than asked for, a ``system_fingerprint``) is in ``extra["served"]``.
* ``scoring=probs`` (judges with answer options): score_a/score_b are P(A)/P(B) at the answer
  token, renormalised, and the label is :func:`~pigbench.protocol.label_from_delta` of
  P(A) - 0.5 (protocol section 3) with ``tie_threshold`` (tau), whether the text parses or not (then
  no ``invalid_reason``: the answer was read). When no answer token is found, the parsed label is used.
* Position swap is the runner's ``--swap``: it asks the swapped episode too and combines the labels.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.parse
from abc import abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

from pigbench.evaluator import (Evaluator, EvaluatorConfig, Kind, Need, RequirementError, require_packages,
                                resolve_local_or_hub)
from pigbench.judging.answer_probs import READING_VERSION
from pigbench.judging.backend import Backend, Generation, GenerationParams, refusal_reason
from pigbench.judging.messages import ImagePolicy, Prompt, reference_prompt
from pigbench.judging.parsing import ParsedAnswer, parse_answer
from pigbench.protocol import Episode, Label, Prediction, label_from_delta
from pigbench.store import default_cache_dir

BACKENDS = ("local", "openai")
SCORINGS = ("text", "probs")
DTYPES = ("auto", "bfloat16", "float16", "float32")  # the local backend's (see JudgeConfig.dtype)


@dataclass(frozen=True)
class JudgeConfig(EvaluatorConfig):
    """Options of every judge (``--option key=value``; ``--model-path`` sets ``model_path``)."""

    model_path: str = ""  # hub id or local dir (local), or the served model name (openai)
    backend: str = "local"  # local | openai
    base_url: str = ""  # openai: comma-separated base URLs; default $OPENAI_BASE_URL, else the OpenAI API
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key
    max_new_tokens: int = 0  # 0 = the judge's default
    min_new_tokens: int = 0  # > 0 forbids stopping earlier (fixes the length when timing)
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0
    max_pixels: int = 256 * 28 * 28  # per-image pixel budget (256 Qwen2-VL tokens); 0 = model default
    image_size: int = 0  # > 0: resize every image to this square size instead
    scoring: str = "text"  # text: parse the answer | probs: P(A) vs P(B) at the answer token
    tie_threshold: float = 0.0  # tau on P(A) - 0.5 when scoring=probs
    dtype: str = "auto"  # local: auto (bfloat16 on CUDA, float32 on CPU), float16, bfloat16, float32
    attn_implementation: str = "sdpa"  # local
    concurrency: int = 8  # openai: requests in flight (at most the runner's batch size)
    timeout_s: float = 120.0  # openai: deadline of each attempt (see openai_backend)
    max_retries: int = 5  # openai: retries on 429, 5xx, timeouts
    request_deadline_s: float = 300.0  # openai: deadline of each request, all attempts and backoffs

    # How to reach the model, not what it computes: left out of the config hash, so changing them
    # (another server, more concurrency) keeps cached predictions valid.
    runtime_fields: ClassVar[tuple[str, ...]] = ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries",
                                                 "request_deadline_s")

    def hash(self, evaluator_name: str, version: str) -> str:
        config = {k: v for k, v in self.to_json().items() if k not in self.runtime_fields}
        payload = json.dumps({"evaluator": evaluator_name, "version": version, "config": config}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def base_urls(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"


def _numeric_rules(c: JudgeConfig) -> tuple[tuple[str, bool, str], ...]:
    """(option, whether its value is allowed, the allowed range) for each numeric judge option.
    Every backend's options are checked, whichever backend is chosen."""
    probs = c.scoring == "probs"  # tau acts on P(A) - 0.5, never more than 0.5 away: 0.5 ties every answer
    tau_rule = ">= 0 and < 0.5 with scoring=probs (tau on |P(A) - 0.5|; 0.5 or more makes every answer a tie)"
    return (
        ("max_new_tokens", c.max_new_tokens >= 0, ">= 0 (0: the judge's default)"),
        ("min_new_tokens", c.min_new_tokens >= 0, ">= 0"),
        ("temperature", math.isfinite(c.temperature) and c.temperature >= 0, ">= 0 (0: greedy)"),
        ("max_pixels", c.max_pixels >= 0, ">= 0 (0: the model's default)"),
        ("image_size", c.image_size >= 0, ">= 0 (0: no resize)"),
        ("tie_threshold", math.isfinite(c.tie_threshold) and 0 <= c.tie_threshold < (0.5 if probs else math.inf),
         tau_rule if probs else ">= 0"),
        ("concurrency", c.concurrency >= 1, ">= 1"),
        ("timeout_s", math.isfinite(c.timeout_s) and c.timeout_s > 0, "> 0 seconds"),
        ("max_retries", c.max_retries >= 0, ">= 0"),
        ("request_deadline_s", math.isfinite(c.request_deadline_s) and c.request_deadline_s > 0, "> 0 seconds"),
    )


class Judge(Evaluator):
    """An evaluator that asks a vision-language model which image wins. Subclasses implement
    :meth:`build_prompt` and may change the class attributes below."""

    # 5: "cannot decide" followed by one claim for one side is that side, after verdicts it concludes is a
    # tie, "A is better" (a bare upper-case letter in the comparative) is a verdict;
    # 4: "cannot decide" beside one named image is no tie; 3: "cannot decide" is a tie (was INVALID);
    # 2: tau applies to P(A) - 0.5 (was P(A) - P(B))
    # (A served refusal, once read as "empty output", now has its own reason: it was INVALID either
    # way, and no label or score changes, so no bump.)
    version: ClassVar[str] = "5"
    kind: ClassVar[Kind] = "judge"
    needs: ClassVar[tuple[Need, ...]] = ("gpu", "weights")
    scores_are_probabilities: ClassVar[bool] = True  # scoring=probs: P(A), P(B) renormalised
    Config: ClassVar[type[EvaluatorConfig]] = JudgeConfig
    default_max_new_tokens: ClassVar[int] = 16
    answer_options: ClassVar[tuple[str, ...]] = ()  # single-token answers scored by scoring=probs

    backend: Optional[Backend] = None  # built by setup(); tests and benchmarks may set it directly

    @property
    def cfg(self) -> JudgeConfig:
        """The config, typed."""
        assert isinstance(self.config, JudgeConfig)
        return self.config

    @property
    def config_hash(self) -> str:
        """With ``scoring=probs`` it also holds how answer probabilities are read
        (:data:`~pigbench.judging.answer_probs.READING_VERSION`): predictions read the old way are
        made again, while the request cache (named by the config alone, tau at 0 and without
        :attr:`version`) still answers their requests."""
        reading = f"+probs{READING_VERSION}" if self.cfg.scoring == "probs" else ""
        return self.config.hash(self.name, self.version + reading)

    @abstractmethod
    def build_prompt(self, episode: Episode) -> Prompt:
        """The prompt for one episode. Must not read pixels (backends load images lazily)."""

    @classmethod
    def check_requirements(cls, config: EvaluatorConfig) -> None:
        assert isinstance(config, JudgeConfig)
        name = cls.name or cls.__name__
        if config.backend not in BACKENDS:
            raise ValueError(f"{name}: backend must be one of {', '.join(BACKENDS)}, not {config.backend!r}")
        if config.scoring not in SCORINGS:
            raise ValueError(f"{name}: scoring must be one of {', '.join(SCORINGS)}, not {config.scoring!r}")
        if config.dtype not in DTYPES:
            raise ValueError(f"{name}: option dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
        if config.scoring == "probs" and not cls.answer_options:
            raise ValueError(f"{name}: scoring=probs needs single-token answers; this judge's answers are sentences")
        if config.scoring == "probs" and getattr(config, "offer_tie", False):
            raise ValueError(f"{name}: offer_tie=true with scoring=probs: the score is P(A) vs P(B) at the answer token, "
                             "so an answered Tie would be scored by what is left on A and B; ties come from "
                             "--tie-threshold on P(A) - 0.5 instead")
        for option, ok, rule in _numeric_rules(config):
            if not ok:
                raise ValueError(f"{name}: option {option} must be {rule}, got {getattr(config, option)!r}")
        if config.scoring == "text" and config.tie_threshold != 0:
            hint = " (--option scoring=probs scores P(A) vs P(B))" if cls.answer_options else ""
            raise ValueError(f"{name}: --tie-threshold (option tie_threshold) applies only to scalar scores; "
                             f"with scoring=text the judge answers A, B or tie itself{hint}")
        if config.min_new_tokens > cls.new_tokens(config):
            raise ValueError(f"{name}: option min_new_tokens must be <= the generation length "
                             f"{cls.new_tokens(config)} (max_new_tokens), got {config.min_new_tokens}")
        if config.backend == "local":
            require_packages(name, "torch", "transformers")
            resolve_local_or_hub(config.model_path, name, "", "the model")
        else:
            from pigbench.judging.openai_backend import split_base_urls

            official = any(urllib.parse.urlsplit(u).hostname == "api.openai.com" for u in split_base_urls(config.base_urls()))
            if official and not os.environ.get(config.api_key_env):
                raise RequirementError(
                    f"{name}: the OpenAI API needs a key in the environment variable {config.api_key_env} "
                    f"(keys are read from the environment only). For a local vLLM/SGLang server, pass "
                    f"--option base_url=http://HOST:PORT/v1 or set OPENAI_BASE_URL."
                )

    def setup(self) -> None:
        if self.backend is None:
            self.backend = self._make_backend()

    def _make_backend(self) -> Backend:
        c = self.cfg
        if c.backend == "local":
            from pigbench.hub import model_folder_hint
            from pigbench.judging.local_backend import LocalBackend

            published = type(c)().model_path  # the judge's default model: the repo to download a whole folder of
            return LocalBackend.from_pretrained(c.model_path, device=self.runtime.device, batch_size=self.runtime.batch_size,
                                                dtype=c.dtype, attn_implementation=c.attn_implementation,
                                                hint=model_folder_hint(published, "--model-path") if published else "")
        from pigbench.judging.openai_backend import OpenAIBackend, RetryPolicy
        from pigbench.judging.request_cache import RequestCache

        root = self.runtime.cache_dir or default_cache_dir()
        # Responses are keyed by the request body; the file is one per judge and config, less tau (it
        # changes no request) and the judge's version (how answers are read), so a parser fix re-sends nothing.
        requests_hash = replace(c, tie_threshold=0.0).hash(self.name, "")
        cache = Path(root) / "requests" / f"{self.name}-{requests_hash}.sqlite"
        return OpenAIBackend(c.base_urls(), c.model_path, api_key_env=c.api_key_env, concurrency=c.concurrency,
                             timeout_s=c.timeout_s, retry=RetryPolicy(max_retries=c.max_retries), cache=RequestCache(cache),
                             request_deadline_s=c.request_deadline_s)

    @classmethod
    def new_tokens(cls, config: JudgeConfig) -> int:
        """The most tokens generated under ``config``: ``max_new_tokens``, else the judge's default."""
        return config.max_new_tokens or cls.default_max_new_tokens

    def generation_params(self) -> GenerationParams:
        c = self.cfg
        return GenerationParams(
            max_new_tokens=self.new_tokens(c), min_new_tokens=c.min_new_tokens,
            temperature=c.temperature, seed=c.seed, images=ImagePolicy(max_pixels=c.max_pixels, size=c.image_size),
            options=self.answer_options if c.scoring == "probs" else (),
        )

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        self.setup()
        assert self.backend is not None
        generations = self.backend.generate([self.build_prompt(e) for e in episodes], self.generation_params())
        return [self.to_prediction(e.sample_id, g) for e, g in zip(episodes, generations)]

    def parse(self, gen: Generation) -> ParsedAnswer:
        """The verdict in a generation's text: the shared tolerant parser. Judges with a published
        parse rule of their own override this."""
        return parse_answer(gen.text, truncated=gen.truncated)

    def to_prediction(self, sample_id: str, gen: Generation) -> Prediction:
        """A prediction from one generation (see the module docstring)."""
        if gen.error is not None:
            return Prediction(sample_id, Label.INVALID, raw_text=gen.text, error=gen.error)
        parsed = ParsedAnswer(Label.INVALID, reason=refusal_reason(gen.text)) if gen.refused else self.parse(gen)
        extra: dict[str, Any] = {"parse": parsed.method} if parsed.method else {}
        if parsed.reason and not (self.cfg.scoring == "probs" and gen.option_probs):  # probabilities need no text
            extra["invalid_reason"] = parsed.reason
        if gen.truncated:
            extra["truncated"] = True
        if gen.served:
            extra["served"] = gen.served
        label, score_a, score_b = parsed.label, None, None
        if self.cfg.scoring == "probs":
            if gen.option_probs:
                score_a, score_b = gen.option_probs["A"], gen.option_probs["B"]
                label = label_from_delta(score_a - 0.5, self.cfg.tie_threshold)
            else:
                extra["probs_missing"] = "no answer token after <answer> in the output"
        return Prediction(sample_id, label, score_a, score_b, raw_text=gen.text, extra=extra)

    def provenance(self) -> dict[str, Any]:
        if self.backend is not None:
            return self.backend.provenance()
        return {"model": self.cfg.model_path, "backend": self.cfg.backend}


# --------------------------------------------------------------------------------------------
# Judges that see the user's references (evaluators spec, section 4.3).


@dataclass(frozen=True)
class ReferenceJudgeConfig(JudgeConfig):
    offer_tie: bool = False  # offer <answer>Tie</answer> (only for datasets with gold ties)
    reason: bool = False  # ask for brief reasoning before the answer (default length becomes 1024)


class ReferenceJudge(Judge):
    """Judges with the reference-conditioned prompt of :func:`~pigbench.judging.messages.reference_prompt`."""

    uses_references: ClassVar[bool] = True
    Config: ClassVar[type[EvaluatorConfig]] = ReferenceJudgeConfig
    answer_options: ClassVar[tuple[str, ...]] = ("A", "B")

    def build_prompt(self, episode: Episode) -> Prompt:
        c = self.config
        assert isinstance(c, ReferenceJudgeConfig)
        return reference_prompt(episode, offer_tie=c.offer_tie, reason=c.reason)

    @classmethod
    def new_tokens(cls, config: JudgeConfig) -> int:
        assert isinstance(config, ReferenceJudgeConfig)
        return 1024 if config.reason and not config.max_new_tokens else super().new_tokens(config)
