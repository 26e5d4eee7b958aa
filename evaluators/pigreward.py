"""``pigreward``: the PIGReward reasoning reward model (preference reasoner + reward model).

The reasoner writes, for each of a user's reference pairs, why the preferred image won; these
rationales are the user context, cached on disk per reasoner config under
``<cache>/pigreward/contexts/`` (``<cache>``: the runtime's cache dir, else ``$PIGBENCH_CACHE``,
else ``.pigbench_cache``), so a resumed run does not recompute them. The reward model then derives
at least three user-specific dimensions, scores both images on each, sums and answers
(format and parser: ``pigbench/pigreward/output_format.py``).

No trained PIGReward checkpoint is public: both parts default to ``Qwen/Qwen2-VL-7B-Instruct``
(the paper's untrained "CoT, no DPO, no SFT" setting); any Qwen2-VL checkpoint or a PEFT/LoRA
adapter on one can be given per part. Examples::

    pigbench run --evaluator pigreward --dataset pip --device cuda --batch-size 64
    pigbench run --evaluator pigreward --option reward_path=/ckpt/rm --option reward_adapter=/ckpt/rm-lora
    pigbench run --evaluator pigreward --option chain_of_thought=false      # ablation: no CoT
    pigbench run --evaluator pigreward --option use_reasoner=false          # ablation: raw references
    pigbench run --evaluator pigreward --option backend=openai --option base_url=http://gpu:8000/v1
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from pigbench.evaluator import Evaluator, EvaluatorConfig, RequirementError, require_packages, resolve_local_or_hub
from pigbench.protocol import Episode, Prediction

DEFAULT_MODEL = "Qwen/Qwen2-VL-7B-Instruct"


@dataclass(frozen=True)
class PIGRewardConfig(EvaluatorConfig):
    """Options (``--option key=value``; ``--model-path`` sets both parts' model)."""

    reasoner_path: str = DEFAULT_MODEL  # hub id or local dir (local), served model name (openai)
    reasoner_adapter: str = ""  # PEFT/LoRA adapter dir applied on reasoner_path (local)
    reward_path: str = DEFAULT_MODEL
    reward_adapter: str = ""
    model_path: str = ""  # if set, the model of both parts
    dtype: str = "bfloat16"  # local: bfloat16, float16, float32
    max_pixels: int = 512 * 28 * 28  # per-image pixel budget (512 Qwen2-VL visual tokens)
    chain_of_thought: bool = True  # False: ablation, answer directly from the context
    use_reasoner: bool = True  # False: ablation, raw reference images instead of a text context
    allow_tie: bool = False  # offer "Tie" (datasets with gold ties)
    min_dimensions: int = 3
    score_min: float = 1
    score_max: float = 10
    max_new_tokens: int = 1024  # reward model
    reasoner_max_new_tokens: int = 256
    min_new_tokens: int = 0  # > 0 forbids stopping earlier (fixed lengths for timing)
    backend: str = "local"  # local (pigbench.fastgen) | openai (any OpenAI-compatible server, e.g. vLLM)
    base_url: str = ""  # openai: comma-separated base URLs; default $OPENAI_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key
    concurrency: int = 8  # openai: requests in flight
    decode_batch: int = 64  # local: sequences decoded together (KV memory grows with it)

    # How to reach or run the model, not what it computes: not part of the config hash.
    runtime_fields: ClassVar[tuple[str, ...]] = ("base_url", "api_key_env", "concurrency", "decode_batch")

    def hash(self, evaluator_name: str, version: str) -> str:
        config = {k: v for k, v in self.to_json().items() if k not in self.runtime_fields}
        payload = json.dumps({"evaluator": evaluator_name, "version": version, "config": config}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def reasoner_model(self) -> str:
        return self.model_path or self.reasoner_path

    @property
    def reward_model(self) -> str:
        return self.model_path or self.reward_path


class PIGReward(Evaluator):
    """Reasoner rationales as user context, then dimension-wise chain-of-thought scoring."""

    kind = "reasoning"
    uses_references = True
    needs = ("gpu", "weights")
    description = "PIGReward: reasoner-built user context + user-specific dimension scoring (Qwen2-VL)"
    Config = PIGRewardConfig

    pipeline: Any = None  # a PIGRewardPipeline, built by setup(); tests may set it directly

    @classmethod
    def check_requirements(cls, config: EvaluatorConfig) -> None:
        assert isinstance(config, PIGRewardConfig)
        if config.backend not in ("local", "openai"):
            raise ValueError(f"pigreward: backend must be local or openai, not {config.backend!r}")
        if not config.score_min < config.score_max or config.min_dimensions < 1:
            raise ValueError("pigreward: need score_min < score_max and min_dimensions >= 1")
        parts = [(config.reward_model, config.reward_adapter, "reward_path")]
        if config.use_reasoner:
            parts.append((config.reasoner_model, config.reasoner_adapter, "reasoner_path"))
        if config.backend == "openai":
            if not (config.base_url or os.environ.get("OPENAI_BASE_URL")):
                raise RequirementError("pigreward: backend=openai needs --option base_url=http://HOST:PORT/v1 "
                                       "(or OPENAI_BASE_URL) pointing at a server that serves both parts")
            return
        require_packages("pigreward", "torch", "transformers", *(["peft"] if config.reasoner_adapter or config.reward_adapter else []))
        for path, adapter, option in parts:
            resolve_local_or_hub(path, f"pigreward ({option})", "HF_HUB_CACHE", "model weights")
            if adapter and not Path(adapter).is_dir():
                raise RequirementError(f"pigreward: adapter directory {adapter!r} not found "
                                       f"(--option {option.replace('path', 'adapter')}=DIR)")

    def setup(self) -> None:
        if self.pipeline is not None:
            return
        from pigbench.judging.backend import GenerationParams
        from pigbench.judging.messages import ImagePolicy
        from pigbench.pigreward.context_cache import UserContextCache
        from pigbench.pigreward.output_format import FormatRules
        from pigbench.pigreward.pipeline import PIGRewardPipeline, PIGRewardSettings

        c = self.config
        assert isinstance(c, PIGRewardConfig)
        images = ImagePolicy(max_pixels=c.max_pixels)
        settings = PIGRewardSettings(
            rules=FormatRules(c.min_dimensions, c.score_min, c.score_max, c.allow_tie, c.chain_of_thought),
            reward_params=GenerationParams(c.max_new_tokens if c.chain_of_thought else 32, c.min_new_tokens, images=images),
            reasoner_params=GenerationParams(c.reasoner_max_new_tokens, c.min_new_tokens, images=images),
            chain_of_thought=c.chain_of_thought, use_reasoner=c.use_reasoner)
        backends = self._backends()
        reward = backends[(c.reward_model, c.reward_adapter)]
        reasoner = backends.get((c.reasoner_model, c.reasoner_adapter)) if c.use_reasoner else None
        cache = UserContextCache(self.cache_root() / "pigreward" / "contexts", self.reasoner_fingerprint())
        self.pipeline = PIGRewardPipeline(reward, reasoner, cache, settings)

    def _backends(self) -> dict[tuple[str, str], Any]:
        """One backend per distinct (model, adapter): a shared default model is loaded once."""
        c = self.config
        assert isinstance(c, PIGRewardConfig)
        wanted = {(c.reward_model, c.reward_adapter), *([(c.reasoner_model, c.reasoner_adapter)] if c.use_reasoner else [])}
        out: dict[tuple[str, str], Any] = {}
        for model, adapter in sorted(wanted):
            if c.backend == "openai":
                from pigbench.judging.openai_backend import OpenAIBackend
                from pigbench.judging.request_cache import RequestCache

                tag = hashlib.sha256(f"{self.config_hash}\0{model}".encode()).hexdigest()[:16]
                cache = RequestCache(self.cache_root() / "requests" / f"pigreward-{tag}.sqlite")
                out[(model, adapter)] = OpenAIBackend(c.base_url or os.environ["OPENAI_BASE_URL"], model,
                                                      api_key_env=c.api_key_env, concurrency=c.concurrency, cache=cache)
            else:
                from pigbench.fastgen.backend import FastLocalBackend, load_qwen2vl

                net, processor = load_qwen2vl(model, adapter, self.runtime.device, c.dtype)
                out[(model, adapter)] = FastLocalBackend(net, processor, batch_size=c.decode_batch, source=model)
        return out

    def cache_root(self) -> Path:
        return Path(self.runtime.cache_dir or os.environ.get("PIGBENCH_CACHE", ".pigbench_cache"))

    def reasoner_fingerprint(self) -> str:
        """Hash of what changes the reasoner's rationales (and so the cached user contexts)."""
        from pigbench.pigreward.context_cache import reasoner_fingerprint
        from pigbench.pigreward.prompts import PROMPT_VERSION

        c = self.config
        assert isinstance(c, PIGRewardConfig)
        return reasoner_fingerprint({
            "backend": c.backend, "model": c.reasoner_model, "adapter": c.reasoner_adapter,
            "dtype": c.dtype if c.backend == "local" else None, "max_pixels": c.max_pixels,
            "max_new_tokens": c.reasoner_max_new_tokens, "min_new_tokens": c.min_new_tokens,
            "prompt_version": PROMPT_VERSION,
        })

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        self.setup()
        return self.pipeline.predict(episodes)

    def provenance(self) -> dict[str, Any]:
        c = self.config
        assert isinstance(c, PIGRewardConfig)
        out: dict[str, Any] = {"reasoner": c.reasoner_model if c.use_reasoner else None, "reward": c.reward_model,
                               "reasoner_adapter": c.reasoner_adapter or None, "reward_adapter": c.reward_adapter or None,
                               "backend": c.backend, "dtype": c.dtype}
        if self.pipeline is not None:
            out["reward_backend"] = self.pipeline.reward.provenance()
            out["context_cache"] = str(self.pipeline.cache.path) if self.pipeline.cache.path else None
        return out
