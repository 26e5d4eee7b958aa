"""A judging backend whose greedy generation runs on :class:`~pigbench.fastgen.engine.Qwen2VLEngine`.

:class:`FastLocalBackend` is :class:`~pigbench.judging.local_backend.LocalBackend` (same chat
format, image budget and decoding of the output) with ``generate`` replaced for greedy requests:
prompts are tokenized in chunks by the processor (one call each), their images keyed by content
hash and image policy, and the whole batch goes to the engine, with the checkpoint's
``generation_config.repetition_penalty`` (as ``generate`` applies it). Sampling and answer-option probabilities fall back to
``transformers.generate``. ``generate(..., share_keys=...)`` lets prompts with equal keys share
the KV of their common prefix (a user's context across that user's targets). A generation is
``truncated`` when the engine returns ``max_new_tokens`` tokens (no EOS came within them).
"""

from __future__ import annotations

from typing import Any, Hashable, Optional, Sequence

from pigbench.fastgen.engine import Qwen2VLEngine
from pigbench.fastgen.inputs import GenerationSettings, ImageInput
from pigbench.fastgen.inputs import Prompt as EnginePrompt
from pigbench.judging.backend import Generation, GenerationParams
from pigbench.judging.local_backend import LocalBackend
from pigbench.judging.messages import ImagePolicy, Prompt

_ENCODE_CHUNK = 32  # prompts per processor call


class FastLocalBackend(LocalBackend):
    """LocalBackend with engine-based greedy generation (Qwen2-VL models only); see the module docstring."""

    shares_prefixes = True  # generate() accepts share_keys

    def __init__(self, model: Any, processor: Any, batch_size: int = 64, source: str = "",
                 prefill_tokens: int = 16384) -> None:
        super().__init__(model, processor, batch_size=batch_size, source=source)
        self.engine = Qwen2VLEngine(model)
        self.prefill_tokens = prefill_tokens
        eos_ids = self.stop_token_ids()
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = tuple(sorted(eos_ids))
        penalty = model.generation_config.repetition_penalty  # generate's default for greedy requests too
        self.repetition_penalty = 1.0 if penalty is None else float(penalty)

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams,
                 share_keys: Optional[Sequence[Optional[Hashable]]] = None) -> list[Generation]:
        if params.options or params.temperature > 0:
            return super().generate(prompts, params)
        keys = list(share_keys) if share_keys is not None else [None] * len(prompts)
        results: list[Optional[Generation]] = [None] * len(prompts)
        ready: list[tuple[int, EnginePrompt]] = []
        for start in range(0, len(prompts), _ENCODE_CHUNK):
            idx = list(range(start, min(start + _ENCODE_CHUNK, len(prompts))))
            try:
                ready += zip(idx, self.engine_prompts([prompts[i] for i in idx], params.images, [keys[i] for i in idx]))
            except Exception:  # find the unreadable image: each prompt alone, a failure fails only its prompt
                for i in idx:
                    try:
                        ready += zip([i], self.engine_prompts([prompts[i]], params.images, [keys[i]]))
                    except Exception as exc:
                        results[i] = Generation(None, error=f"{type(exc).__name__}: {exc}")
        settings = GenerationSettings(max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
                                      eos_token_ids=self.eos_token_ids, repetition_penalty=self.repetition_penalty,
                                      batch_size=self.batch_size,
                                      prefill_tokens=self.prefill_tokens)
        self._generate_isolated_engine(ready, settings, results)
        return results  # type: ignore[return-value]

    def engine_prompts(self, prompts: Sequence[Prompt], images: ImagePolicy,
                       share_keys: Sequence[Optional[Hashable]]) -> list[EnginePrompt]:
        """Tokenize prompts in one processor call (left-padded) and cut them, and the processor's
        pixel rows, into one engine prompt each (images keyed by content hash and policy)."""
        batch = self.encode(prompts, images)
        grids = batch["image_grid_thw"].tolist() if "image_grid_thw" in batch else []
        pixels = iter(batch["pixel_values"].split([t * h * w for t, h, w in grids]) if grids else [])
        grid_iter = iter(grids)
        out = []
        for row, (prompt, key) in enumerate(zip(prompts, share_keys)):
            ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
            inputs = []
            for ref in prompt.images:
                grid = next(grid_iter)
                inputs.append(ImageInput((ref.content_hash, images), next(pixels), tuple(grid)))
            out.append(EnginePrompt(tuple(ids), tuple(inputs), key))
        return out

    def _generate_isolated_engine(self, ready: list[tuple[int, EnginePrompt]], settings: GenerationSettings,
                                  results: list[Optional[Generation]]) -> None:
        """Generate for all of ``ready``; if that fails, split in halves until the culprit is alone."""
        if not ready:
            return
        try:
            tokens = self.engine.generate([p for _, p in ready], settings)
        except Exception as exc:
            if len(ready) == 1:
                results[ready[0][0]] = Generation(None, error=f"{type(exc).__name__}: {exc}")
                return
            half = len(ready) // 2
            self._generate_isolated_engine(ready[:half], settings, results)
            self._generate_isolated_engine(ready[half:], settings, results)
            return
        for (i, _), toks, text in zip(ready, tokens, self.tokenizer.batch_decode(tokens, skip_special_tokens=True)):
            results[i] = Generation(text, truncated=len(toks) == settings.max_new_tokens)

    def provenance(self) -> dict[str, Any]:
        graphs = "CUDA graphs" if self.engine.device.type == "cuda" else "no CUDA graphs on the CPU"
        return {**super().provenance(), "generation": f"pigbench.fastgen (greedy, static KV cache, {graphs})",
                "repetition_penalty": self.repetition_penalty}
