"""``pigreward``: the PIGReward reasoning reward model (preference reasoner + reward model).

The reasoner writes, for each of a user's reference pairs, why the preferred image won; these
rationales are the user context, cached on disk per reasoner config under
``<cache>/pigreward/contexts/`` (``<cache>``: the run's cache dir, else ``$PIGBENCH_CACHE``, else
``.pigbench_cache``), so a resumed run does not recompute them. The reward model then derives at
least three user-specific dimensions, scores both images on each, sums and answers (format and
parser: ``pigbench/pigreward/output_format.py``; options: ``pigbench/pigreward/config.py``).

No trained PIGReward checkpoint is public: both parts default to ``Qwen/Qwen2-VL-7B-Instruct``
(the paper's untrained "CoT, no DPO, no SFT" setting); any Qwen2-VL checkpoint or a PEFT/LoRA
adapter on one can be given per part. The local backend (:mod:`pigbench.fastgen`) generates for all
prompts of one ``predict`` call together, sharing each user's prefix across that user's targets:
give it large runner batches and as many decode rows as GPU memory allows (``docs/benchmarks.md``:
0.064 s per target on an H200 at 256 rows). Examples::

    pigbench run --evaluator pigreward --dataset pip --device cuda --batch-size 256 --option decode_batch=128
    pigbench run --evaluator pigreward --option reward_path=/ckpt/rm --option reward_adapter=/ckpt/rm-lora
    pigbench run --evaluator pigreward --option chain_of_thought=false      # ablation: no CoT
    pigbench run --evaluator pigreward --option use_reasoner=false          # ablation: raw references
    pigbench run --evaluator pigreward --option backend=openai --option base_url=http://gpu:8000/v1
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from pigbench.evaluator import (Evaluator, EvaluatorConfig, RequirementError, require_local_folder, require_packages,
                                resolve_local_or_hub)
from pigbench.pigreward.config import PIGRewardConfig
from pigbench.protocol import Episode, Prediction
from pigbench.store import default_cache_dir


class PIGReward(Evaluator):
    """Reasoner rationales as user context, then dimension-wise chain-of-thought scoring."""

    version = "4"  # 4: the reward prompt's example reply is consistent (totals = sums); 3: the local backend applies
    # the checkpoint's repetition_penalty; 2: K = 0 said in the reward prompt
    kind = "reasoning"
    uses_references = True
    needs = ("gpu", "weights")
    description = "PIGReward: reasoner-built user context + user-specific dimension scoring (Qwen2-VL)"
    Config = PIGRewardConfig

    pipeline: Any = None  # a PIGRewardPipeline, built by setup()

    @classmethod
    def check_requirements(cls, config: EvaluatorConfig) -> None:
        assert isinstance(config, PIGRewardConfig)
        if config.backend not in ("local", "openai"):
            raise ValueError(f"pigreward: backend must be local or openai, not {config.backend!r}")
        if not (math.isfinite(config.score_min) and math.isfinite(config.score_max)  # the prompt states the range
                and config.score_min < config.score_max) or config.min_dimensions < 1:
            raise ValueError("pigreward: need finite score_min < score_max and min_dimensions >= 1, got "
                             f"score_min={config.score_min!r}, score_max={config.score_max!r}, "
                             f"min_dimensions={config.min_dimensions!r}")
        for option in ("max_new_tokens", "reasoner_max_new_tokens", "concurrency", "decode_batch"):
            if getattr(config, option) < 1:
                raise ValueError(f"pigreward: option {option} must be >= 1, got {getattr(config, option)!r}")
        for option in ("max_pixels", "min_new_tokens", "max_retries"):
            if getattr(config, option) < 0:
                raise ValueError(f"pigreward: option {option} must be >= 0, got {getattr(config, option)!r}")
        for option in ("timeout_s", "request_deadline_s"):
            if not (math.isfinite(getattr(config, option)) and getattr(config, option) > 0):
                raise ValueError(f"pigreward: option {option} must be > 0 seconds, got {getattr(config, option)!r}")
        settings = config.settings()
        parts = [settings.reward_params] + ([settings.reasoner_params] if config.use_reasoner else [])
        shortest = min(p.max_new_tokens for p in parts)
        if config.min_new_tokens > shortest:  # vLLM refuses min_tokens > max_tokens; locally the answer is cut off
            raise ValueError(f"pigreward: option min_new_tokens must be <= the shortest generation length {shortest} "
                             f"(max_new_tokens, reasoner_max_new_tokens; 32 without chain_of_thought), got {config.min_new_tokens}")
        if config.backend == "openai":
            for _, adapter, option in config.parts():
                if adapter:
                    raise ValueError(f"pigreward: {option.replace('path', 'adapter')} applies with backend=local only; with "
                                     f"backend=openai serve the adapted model and name it in --option {option}=")
            if not (config.base_url or os.environ.get("OPENAI_BASE_URL")):
                raise RequirementError("pigreward: backend=openai needs --option base_url=http://HOST:PORT/v1 "
                                       "(or OPENAI_BASE_URL) pointing at a server that serves both parts")
            return
        if config.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"pigreward: option dtype must be bfloat16, float16 or float32, got {config.dtype!r}")
        adapters = any(adapter for _, adapter, _ in config.parts())
        require_packages("pigreward", "torch", "transformers", *(["peft"] if adapters else []))
        for path, adapter, option in config.parts():
            named_by = "model_path" if config.model_path else option  # model_path overrides both parts
            flag = config.flag(option)
            if Path(path).is_file():  # resolve_local_or_hub accepts files (other evaluators' checkpoints)
                raise RequirementError(f"pigreward ({named_by}): {path!r} is a file; pass the model's directory "
                                       f"(with config.json and the weights): {flag}{'' if flag.endswith('=') else ' '}DIR")
            resolve_local_or_hub(path, f"pigreward ({named_by})", "", "the model", flag=flag)
            if not adapter:
                continue
            adapter_flag = f"--option {option.replace('path', 'adapter')}="
            require_local_folder(adapter, "pigreward", "", "the adapter directory", adapter_flag)
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise RequirementError(f"pigreward: adapter directory {adapter!r} has no adapter_config.json, so it is not "
                                       f"a PEFT adapter directory (a full model goes in --option {option}=) ({adapter_flag}DIR)")

    def setup(self) -> None:
        if self.pipeline is not None:
            return
        from pigbench.pigreward.context_cache import UserContextCache
        from pigbench.pigreward.pipeline import PIGRewardPipeline

        c = self.config
        assert isinstance(c, PIGRewardConfig)
        backends = self.make_backends()
        reasoner = backends[(c.reasoner_model, c.reasoner_adapter)] if c.use_reasoner else None
        cache = UserContextCache(self.cache_root() / "pigreward" / "contexts", c.reasoner_fingerprint())
        self.pipeline = PIGRewardPipeline(backends[(c.reward_model, c.reward_adapter)], reasoner, cache, c.settings())

    def make_backends(self) -> dict[tuple[str, str], Any]:
        """One backend per distinct (model, adapter) of the parts in use."""
        from pigbench.pigreward.backends import build_backends

        assert isinstance(self.config, PIGRewardConfig)
        # the served parts' request cache files leave out the version (how replies are read): a parser fix re-sends nothing
        return build_backends(self.config, self.runtime.device, self.cache_root(), self.config.hash(self.name, ""))

    def cache_root(self) -> Path:
        return Path(self.runtime.cache_dir or default_cache_dir())

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
            out["reasoner_backend"] = self.pipeline.reasoner.provenance() if self.pipeline.reasoner is not None else None
            out["context_cache"] = str(self.pipeline.cache.path) if self.pipeline.cache.path else None
        return out
