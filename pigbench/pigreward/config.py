"""The ``pigreward`` evaluator's options, and what follows from them: generation settings, the
reasoner fingerprint that keys cached user contexts, and the config hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from pigbench.evaluator import EvaluatorConfig

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
    score_min: float = 1.0
    score_max: float = 10.0
    max_new_tokens: int = 1024  # reward model (32 without chain of thought)
    reasoner_max_new_tokens: int = 256
    min_new_tokens: int = 0  # > 0 forbids stopping earlier (fixed lengths for timing)
    backend: str = "local"  # local (pigbench.fastgen) | openai (any OpenAI-compatible server, e.g. vLLM)
    base_url: str = ""  # openai: comma-separated base URLs; default $OPENAI_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key
    concurrency: int = 8  # openai: requests in flight
    timeout_s: float = 120.0  # openai: deadline of each attempt (see openai_backend)
    max_retries: int = 5  # openai: retries on 429, 5xx, timeouts
    request_deadline_s: float = 300.0  # openai: deadline of each request, all attempts and backoffs
    decode_batch: int = 64  # local: sequences decoded together (KV memory grows with it)

    # How to reach or run the model, not what it computes: not part of the config hash.
    runtime_fields: ClassVar[tuple[str, ...]] = ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries",
                                                 "request_deadline_s", "decode_batch")

    def hash(self, evaluator_name: str, version: str) -> str:
        """What the predictions depend on: the options but the runtime ones, and for the local backend
        the engine's output version (its tokens for the same inputs), as in :meth:`reasoner_fingerprint`."""
        from pigbench.fastgen import OUTPUT_VERSION

        config = {k: v for k, v in self.to_json().items() if k not in self.runtime_fields}
        engine = OUTPUT_VERSION if self.backend == "local" else None
        payload = json.dumps({"evaluator": evaluator_name, "version": version, "config": config, "engine": engine},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def reasoner_model(self) -> str:
        return self.model_path or self.reasoner_path

    @property
    def reward_model(self) -> str:
        return self.model_path or self.reward_path

    def parts(self) -> list[tuple[str, str, str]]:
        """(model, adapter, option name) of each part in use: the reward model, then the reasoner."""
        out = [(self.reward_model, self.reward_adapter, "reward_path")]
        if self.use_reasoner:
            out.append((self.reasoner_model, self.reasoner_adapter, "reasoner_path"))
        return out

    def flag(self, option: str) -> str:
        """The command-line flag that names part ``option``'s model (``reward_path`` or ``reasoner_path``):
        ``--model-path`` when it is set (it names both parts), else ``--option OPTION=``."""
        return "--model-path" if self.model_path else f"--option {option}="

    def reasoner_fingerprint(self) -> str:
        """Hash of what changes the reasoner's rationales (and so the cached user contexts), with the
        stamp of its local model files (:mod:`pigbench.file_stamp`)."""
        from pigbench.fastgen import OUTPUT_VERSION
        from pigbench.file_stamp import local_files_stamp
        from pigbench.pigreward.prompts import PROMPT_VERSION

        settings = {"backend": self.backend, "model": self.reasoner_model, "adapter": self.reasoner_adapter,
                    "files": local_files_stamp([self.reasoner_model, self.reasoner_adapter]) if self.backend == "local" else "",
                    "dtype": self.dtype if self.backend == "local" else None, "max_pixels": self.max_pixels,
                    "max_new_tokens": self.reasoner_max_new_tokens, "min_new_tokens": self.min_new_tokens,
                    "prompt_version": PROMPT_VERSION, "engine": OUTPUT_VERSION if self.backend == "local" else None}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def settings(self) -> Any:
        """The :class:`~pigbench.pigreward.pipeline.PIGRewardSettings` these options describe."""
        from pigbench.judging.backend import GenerationParams
        from pigbench.judging.messages import ImagePolicy
        from pigbench.pigreward.output_format import FormatRules
        from pigbench.pigreward.pipeline import PIGRewardSettings

        images = ImagePolicy(max_pixels=self.max_pixels)
        rules = FormatRules(self.min_dimensions, self.score_min, self.score_max, self.allow_tie, self.chain_of_thought)
        reward_tokens = self.max_new_tokens if self.chain_of_thought else 32
        return PIGRewardSettings(
            rules=rules, reward_params=GenerationParams(reward_tokens, self.min_new_tokens, images=images),
            reasoner_params=GenerationParams(self.reasoner_max_new_tokens, self.min_new_tokens, images=images),
            chain_of_thought=self.chain_of_thought, use_reasoner=self.use_reasoner)
