"""What the engine is asked to generate from: prompts as token ids plus their images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Optional


@dataclass(frozen=True, eq=False)
class ImageInput:
    """One image as the Qwen2-VL processor prepared it.

    ``pixel_values`` holds this image's rows of the processor's ``pixel_values`` (``t*h*w`` patches),
    ``grid_thw`` its ``image_grid_thw`` row. ``key`` names the pixels: two inputs with the same key
    must hold the same pixels, so the engine encodes them once and may share KV across prompts.
    """

    key: Hashable
    pixel_values: Any  # torch.Tensor of shape (t*h*w, channels*temporal_patch*patch*patch)
    grid_thw: tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class Prompt:
    """A tokenized chat prompt (generation prompt included) and its images, in order of appearance.

    Prompts with the same ``share_key`` may share the KV of their longest common prefix (tokens
    equal and images equal by key); ``None`` never shares.
    """

    token_ids: tuple[int, ...]
    images: tuple[ImageInput, ...] = ()
    share_key: Optional[Hashable] = None


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding settings. EOS is suppressed until ``min_new_tokens`` tokens exist (as
    ``transformers``' ``min_new_tokens``); set both lengths equal to force a fixed length.
    ``repetition_penalty`` penalizes every token id of the prompt (image tokens included) and of
    the output so far, as ``transformers``' ``repetition_penalty`` does (1.0: none)."""

    max_new_tokens: int = 1024
    min_new_tokens: int = 0
    eos_token_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0
    batch_size: int = 64  # sequences decoded together
    prefill_tokens: int = 16384  # padded suffix tokens per prefill forward
    check_every: int = 16  # decode steps between checks for finished sequences
    min_shared_prefix: int = 32  # shorter common prefixes are not worth sharing
    use_cuda_graphs: bool = True  # ignored on CPU
