"""Hugging Face CLIP pieces shared by clipscore, pickscore, aesthetics, clip-i, text-align and mps.

transformers 4.x returns tensors from ``get_image_features``/``get_text_features``; 5.x returns
a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected embedding. Both work.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Literal

import torch

from pigbench.embedding import ImageTransform
from pigbench.checkpoint import from_pretrained_strict, load_image_processor


def projected(output: Any) -> torch.Tensor:
    """The projected embedding from either transformers 4 (tensor) or 5 (output object)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip_model(source: str, device: torch.device, dtype: torch.dtype, hint: str, model_class: Any = None) -> Any:
    """A CLIP model (``CLIPModel`` unless ``model_class`` is given) in eval mode on ``device``, loaded
    strictly (:func:`pigbench.checkpoint.from_pretrained_strict`; ``hint``: what to do about an
    incomplete local folder)."""
    if model_class is None:
        from transformers import CLIPModel as model_class
    model = from_pretrained_strict(model_class, source, "the CLIP model", hint)
    return model.eval().to(device=device, dtype=dtype)


def processor_transform(source: str, crop_offset: Literal["round", "floor"], what: str, hint: str) -> ImageTransform:
    """The resize/crop/normalization declared by the image processor config at ``source``.

    A local folder without that config is a CheckpointError naming ``what`` and ending with ``hint``
    (:func:`pigbench.checkpoint.load_image_processor`). Raises ValueError for a processor this
    transform cannot reproduce: one that does not resize the short side and center crop, resizes
    with another interpolation than bicubic, or skips rescaling by 1/255 or normalizing."""
    proc = load_image_processor(source, what, hint)
    skipped = [f"{step}=False" for step in ("do_resize", "do_rescale", "do_normalize") if getattr(proc, step, True) is False]
    factor = getattr(proc, "rescale_factor", 1 / 255)
    if skipped or not math.isclose(factor, 1 / 255):
        declared = ", ".join(skipped + ([f"rescale_factor={factor!r}"] if not math.isclose(factor, 1 / 255) else []))
        raise ValueError(f"{source}: only processors that resize, rescale by 1/255 and normalize are supported, "
                         f"the image processor declares {declared}")
    size = proc.size.get("shortest_edge")
    if size is None or not getattr(proc, "do_center_crop", False):
        raise ValueError(f"{source}: only short-side resize + center crop processors are supported, got size={proc.size}")
    resample = getattr(proc, "resample", 3)
    if getattr(resample, "value", resample) not in (3, "bicubic"):  # PIL's BICUBIC, or torchvision's InterpolationMode
        raise ValueError(f"{source}: only bicubic resizing is supported, the image processor declares resample={resample!r}")
    crop = proc.crop_size["height"]
    return ImageTransform(
        size=int(crop), resize_to=int(size), crop_offset=crop_offset,
        mean=tuple(proc.image_mean), std=tuple(proc.image_std),
    )


def encode_texts(model: Any, tokenizer: Any, texts: list[str], device: torch.device) -> torch.Tensor:
    """Projected text embeddings; padded to the longest, truncated to 77 tokens (CLIP's context)."""
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)
    return projected(model.get_text_features(**inputs))


def encode_images(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    return projected(model.get_image_features(pixel_values=pixels))


TOWER_ENV = "PIGBENCH_CLIP_TOWER"


def image_encoder(model: Any, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(encode, name): what embeds pixel values, and its name for provenance.

    On CUDA, :class:`pigbench.clip_tower.CLIPImageTower` (``pigbench``: the same features with less
    work per image); elsewhere, or when ``$PIGBENCH_CLIP_TOWER`` is ``transformers``, the model's
    own ``get_image_features`` (``transformers``).
    """
    choice = os.environ.get(TOWER_ENV, "").strip().lower() or ("pigbench" if device.type == "cuda" else "transformers")
    if choice not in ("pigbench", "transformers"):
        raise ValueError(f"${TOWER_ENV} must be pigbench or transformers, got {choice!r}")
    if choice == "pigbench":
        from pigbench.clip_tower import CLIPImageTower

        return CLIPImageTower(model), choice
    return (lambda x: encode_images(model, x)), choice
