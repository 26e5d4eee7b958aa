"""Local transformers backend: Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision (any image-text-to-text model
whose processor takes ``text`` with image placeholders and ``images``), batched greedy generation.

Practices this module enforces (evaluators spec, sections 4.1-4.3):

* **Interleaving.** Images stay where the prompt puts them. Some shipped chat templates render every
  image of a turn *before* its text (the llava-hf templates do); :func:`template_interleaves`
  detects this once, and then the turn is sent as one text with the processor's image token inline,
  which such processors expand in order.
* **Image budget.** :class:`~pigbench.judging.messages.ImagePolicy` resizes images before the
  processor; for processors that size by pixel area (Qwen2-VL family: ``size`` has
  ``shortest_edge``/``longest_edge``), ``max_pixels`` is also passed as the processor's
  ``size["longest_edge"]`` at call time, which is what takes effect (checkpoint defaults allow
  ~16k tokens per image, and ``max_pixels=`` given to ``from_pretrained`` is ignored by some
  versions). Verify with :meth:`LocalBackend.encode` (``image_grid_thw``, image-token counts).
* **Batching.** Left padding, one ``generate`` per batch, only new tokens decoded; a failing batch
  is retried one prompt at a time so that one bad prompt only fails itself. Images are decoded in
  ``image_workers`` threads, and on CUDA a torchvision-backed image processor normalises and
  patchifies on the GPU (``preprocess_on_device``), keeping the CPU off the critical path.
* **Truncation.** An output holding none of the generation config's EOS ids stopped at
  ``max_new_tokens``: its generation is ``truncated``.
* **Answer probabilities.** A logits processor records, at every step, the log-probabilities of
  the requested options; :mod:`pigbench.judging.answer_probs` picks the step after ``<answer>``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import torch

from pigbench.judging.answer_probs import option_probs_after_marker, option_spellings
from pigbench.judging.backend import Backend, Generation, GenerationParams
from pigbench.judging.messages import ImagePolicy, Prompt, load_image
from pigbench.lvlm_loader import load_lvlm
from pigbench.protocol import ImageError, ImageRef


def template_interleaves(processor: Any) -> bool:
    """True if the processor's chat template keeps an image between the texts around it."""
    left, right = "\u2063pigbench-left", "\u2063pigbench-right"
    turn = [{"role": "user", "content": [{"type": "text", "text": left}, {"type": "image"},
                                         {"type": "text", "text": right}]}]
    rendered = processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    i, j = rendered.find(left), rendered.find(right)
    return 0 <= i < j and processor.image_token in rendered[i:j]


class _OptionRecorder:
    """Records each step's log-probabilities of the options (summed over their token variants) from
    the model's raw logits, as a forward hook on its output layer: before ``generate``'s logits
    processors, which apply the checkpoint's ``repetition_penalty`` (1.05 in Qwen2-VL) to the prompt's
    "A" and "B" and would pull P(A) towards 0.5. The evaluators spec reads the answer token's logits,
    and servers report logprobs of the raw distribution too."""

    def __init__(self, option_ids: dict[str, list[int]]) -> None:
        self.option_ids = option_ids
        self.steps: list[torch.Tensor] = []  # one [batch, n_options] tensor per generated token

    def __call__(self, module: Any, inputs: Any, logits: torch.Tensor) -> None:
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # the next token's (prefill: the prompt's last)
        self.steps.append(torch.stack([torch.logsumexp(logp[:, ids], dim=-1) for ids in self.option_ids.values()], -1))

    def rows(self) -> list[list[dict[str, float]]]:
        """Per sequence, per step: ``{option: log-probability}``."""
        table = torch.stack(self.steps, 1).tolist() if self.steps else []
        return [[dict(zip(self.option_ids, step)) for step in seq] for seq in table]


class LocalBackend(Backend):
    """Generation with a loaded transformers model and its processor (see the module docstring)."""

    def __init__(self, model: Any, processor: Any, batch_size: int = 8, source: str = "", image_workers: int = 8,
                 preprocess_on_device: bool = True) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.batch_size = max(1, batch_size)
        self.source = source or getattr(model.config, "_name_or_path", "")
        self.device = next(model.parameters()).device
        self.interleaved = template_interleaves(processor)
        self.image_workers = image_workers  # threads decoding and resizing images (0 or 1: none)
        # torchvision-backed image processors can normalise and patchify on the GPU
        self.preprocess_on_device = (preprocess_on_device and self.device.type == "cuda"
                                     and getattr(processor.image_processor, "backend", None) == "torchvision")

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", batch_size: int = 8, dtype: str = "auto",
                        attn_implementation: str = "sdpa", hint: str = "") -> "LocalBackend":
        """The backend of the judge model at ``path`` (a hub id or local directory), loaded by
        :func:`pigbench.lvlm_loader.load_lvlm`: strictly (a missing, unexpected or misshaped weight is a
        CheckpointError; so is a local folder without its weight, processor, tokenizer or chat template
        files, with ``hint``, what to do, at the end; the processor loads first). ``dtype`` "auto" is
        bfloat16 on CUDA, float32 on CPU."""
        model, processor = load_lvlm(path, "judge", device=device, dtype=dtype,
                                     attn_implementation=attn_implementation, hint=hint)
        return cls(model, processor, batch_size=batch_size, source=path)

    # prompts -> model inputs -------------------------------------------------------------------
    def chat(self, prompt: Prompt) -> list[dict[str, Any]]:
        """The chat-template conversation of one prompt (images as placeholders, in reading order)."""
        turns: list[dict[str, Any]] = []
        if prompt.system:
            turns.append({"role": "system", "content": [{"type": "text", "text": prompt.system}]})
        last = len(prompt.parts) - 1
        if self.interleaved:  # texts end with a newline unless last; images as the template renders them
            content = [{"type": "image"} if p.type == "image" else {"type": "text", "text": p.value + "\n" * (i < last)}
                       for i, p in enumerate(prompt.parts)]
        else:
            inline = "\n".join(self.processor.image_token if p.type == "image" else str(p.value) for p in prompt.parts)
            content = [{"type": "text", "text": inline}]
        turns.append({"role": "user", "content": content})
        return turns

    def encode(self, prompts: Sequence[Prompt], images: ImagePolicy) -> Any:
        """The processor's batch for ``prompts`` on the model's device (``input_ids``,
        ``pixel_values``, and e.g. ``image_grid_thw`` for Qwen2-VL). Raises on unreadable images."""
        texts = [self.processor.apply_chat_template(self.chat(p), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        refs = [ref for p in prompts for ref in p.images]
        if self.image_workers > 1 and len(refs) > 1:
            with ThreadPoolExecutor(min(self.image_workers, len(refs))) as pool:
                flat = list(pool.map(lambda ref: load_image(ref, images), refs))
        else:
            flat = [load_image(ref, images) for ref in refs]
        pictures, start = [], 0
        for p in prompts:
            pictures.append(flat[start : start + len(p.images)])
            start += len(p.images)
        kwargs = self._budget_kwargs(images)
        if self.preprocess_on_device:
            kwargs["device"] = self.device
        try:
            batch = self.processor(text=texts, images=pictures if refs else None, padding=True, return_tensors="pt", **kwargs)
        except Exception:
            self._name_refused_image(refs, flat, kwargs)
            raise
        return batch.to(self.device, self.model.dtype)

    def _name_refused_image(self, refs: Sequence[ImageRef], pictures: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """After the processor failed on a batch: raise :class:`ImageError` naming the first image its
        image processor refuses alone (Qwen2-VL: an aspect ratio of 200 or more); return if none is."""
        image_processor = self.processor.image_processor
        for ref, img in zip(refs, pictures):
            try:
                image_processor(images=[img], return_tensors="pt", **kwargs)
            except Exception as exc:
                raise ImageError(f"image {ref.id!r} ({img.width}x{img.height}): {type(exc).__name__}: {exc}") from None

    def _budget_kwargs(self, images: ImagePolicy) -> dict[str, Any]:
        size = getattr(self.processor.image_processor, "size", None)
        if images.max_pixels <= 0 or images.size > 0 or size is None or size.get("longest_edge") is None:
            return {}
        shortest = min(size.get("shortest_edge") or images.max_pixels, images.max_pixels)
        return {"size": {"shortest_edge": shortest, "longest_edge": images.max_pixels}}

    # generation --------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        results: list[Optional[Generation]] = [None] * len(prompts)
        for start in range(0, len(prompts), self.batch_size):
            self._generate_isolated(prompts, list(range(start, min(start + self.batch_size, len(prompts)))),
                                    params, results)
        return results  # type: ignore[return-value]

    def _generate_isolated(self, prompts: Sequence[Prompt], idx: list[int], params: GenerationParams,
                           results: list[Optional[Generation]]) -> None:
        try:
            for i, gen in zip(idx, self._generate_batch([prompts[i] for i in idx], params)):
                results[i] = gen
        except Exception as exc:
            if len(idx) == 1:
                results[idx[0]] = Generation(None, error=f"{type(exc).__name__}: {exc}")
                return
            for i in idx:
                self._generate_isolated(prompts, [i], params, results)

    def _generate_batch(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        inputs = self.encode(prompts, params.images)
        recorder = _OptionRecorder(self.option_token_ids(params.options, params.answer_marker)) if params.options else None
        sampling: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if params.temperature > 0:
            torch.manual_seed(params.seed)
            # plain temperature sampling: the checkpoint's top_k/top_p (Qwen2-VL ships top_k=1) would make it greedy
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": None, "top_k": None}
        hook = self.model.get_output_embeddings().register_forward_hook(recorder) if recorder else None
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs, max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id, **sampling,
                )
        finally:
            if hook is not None:
                hook.remove()
        new = out[:, inputs["input_ids"].shape[1] :].cpu()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        rows, eos = new.tolist(), self.stop_token_ids()
        cut = [not eos.intersection(ids) for ids in rows]  # no EOS: stopped at max_new_tokens
        if recorder is None:
            return [Generation(text, truncated=c) for text, c in zip(texts, cut)]
        gens = []
        for text, ids, steps, c in zip(texts, rows, recorder.rows(), cut):
            tokens = [self.tokenizer.decode([t], skip_special_tokens=True) for t in ids]
            probs = option_probs_after_marker(tokens, steps, params.answer_marker, params.options)
            gens.append(Generation(text, probs, truncated=c))
        return gens

    def stop_token_ids(self) -> set[int]:
        """The token ids that end ``generate`` (the model's generation config); none: it stops only at
        ``max_new_tokens``."""
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])

    def option_token_ids(self, options: Sequence[str], marker: str) -> dict[str, list[int]]:
        """Token ids of each option's :func:`option_spellings` that are single tokens (bare, with a
        leading space, merged with the marker's end where the tokenizer has such a token); the bare
        or spaced option must be one."""
        ids: dict[str, list[int]] = {}
        for opt in options:
            single = {sp: enc[0] for sp in option_spellings(opt, marker)
                      if len(enc := self.tokenizer.encode(sp, add_special_tokens=False)) == 1}
            if opt not in single and f" {opt}" not in single:
                raise ValueError(f"answer option {opt!r} is not a single token for this tokenizer")
            ids[opt] = sorted(set(single.values()))
        return ids

    def provenance(self) -> dict[str, Any]:
        import transformers

        return {
            "model": self.source,
            "model_type": getattr(self.model.config, "model_type", None),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "transformers": transformers.__version__,
            "interleaved_template": self.interleaved,
        }
