"""Interleaved multimodal prompts: one list of ``{type: text|image, value}`` parts in reading order.

A :class:`Prompt` is one user turn (plus an optional system line). Every backend, local or served,
takes this one shape; each translates it into its own chat format (a transformers chat template
with image placeholders, or OpenAI ``content`` parts with base64 data URLs).

:func:`reference_prompt` builds the reference-conditioned judge prompt of the evaluator spec
(section 4.3): a role line, each reference as prompt + "Preferred image:" + "Rejected image:", the
target as prompt + "Image A:" + "Image B:", and an instruction ending with exactly one tagged answer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal, Optional, Union

from PIL import Image

from pigbench.protocol import Episode, ImageRef, as_rgb, open_image

PartType = Literal["text", "image"]


@dataclass(frozen=True)
class Part:
    """One item of a prompt: ``type`` is "text" (``value`` a string) or "image" (``value`` an image)."""

    type: PartType
    value: Union[str, ImageRef]


@dataclass(frozen=True)
class Prompt:
    """One user turn of interleaved parts, in reading order, and an optional system message."""

    parts: tuple[Part, ...]
    system: Optional[str] = None

    @property
    def images(self) -> list[ImageRef]:
        return [p.value for p in self.parts if p.type == "image"]  # type: ignore[misc]


def text(value: str) -> Part:
    return Part("text", value)


def image(value: ImageRef) -> Part:
    return Part("image", value)


# --------------------------------------------------------------------------------------------
# Image preparation, shared by the backends so that the same budget applies everywhere.


@dataclass(frozen=True)
class ImagePolicy:
    """How each image is sized before it reaches a model.

    ``size`` > 0 resizes every image to ``size`` x ``size`` (UnifiedReward-Think's evaluation uses
    512). Otherwise ``max_pixels`` > 0 shrinks an image, keeping its aspect ratio, until
    width x height <= ``max_pixels``; smaller images are left alone. 0 disables both.
    """

    max_pixels: int = 0
    size: int = 0

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an image of the given size is resized to (unchanged if no resize)."""
        if self.size > 0:
            return self.size, self.size
        if self.max_pixels > 0 and width * height > self.max_pixels:
            scale = (self.max_pixels / (width * height)) ** 0.5
            return max(1, int(width * scale)), max(1, int(height * scale))
        return width, height

    def apply(self, img: Image.Image) -> Image.Image:
        size = self.target_size(*img.size)
        return img if size == img.size else img.resize(size, Image.Resampling.BICUBIC)


def load_image(ref: ImageRef, policy: ImagePolicy) -> Image.Image:
    """The RGB image of ``ref`` sized by ``policy``, an RGBA image laid over white as qwen-vl-utils
    does (the Qwen2-VL recipes' loader; transformers 5's processors do so too). Raises
    :class:`pigbench.protocol.ImageError`."""
    return policy.apply(ref.open(rgba_background=WHITE))


WHITE = (255, 255, 255)
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def encode_image(ref: ImageRef, policy: ImagePolicy) -> tuple[str, bytes]:
    """(MIME type, encoded bytes) for upload: the original file when it decodes, the policy leaves it
    unchanged, its format is one servers accept, it has no alpha channel and one frame, else the
    image as :func:`load_image` gives it (sized, an RGBA image laid over white, an animation's first
    frame, as local judges see it), as PNG (deterministic). The file is decoded once (twice only
    when it does not decode, for :func:`load_image`'s error).
    Raises :class:`pigbench.protocol.ImageError` for an image that does not decode (a truncated file)."""
    raw = ref.read_bytes()
    try:
        with open_image(io.BytesIO(raw)) as probe:
            probe.load()  # a truncated file opens (headers only) but fails here, as it does for local judges
            fmt, size, mode, animated = probe.format, probe.size, probe.mode, getattr(probe, "is_animated", False)
            if fmt in _MIME and mode != "RGBA" and not animated and policy.target_size(*size) == size:
                return _MIME[fmt], raw
            decoded: Optional[Image.Image] = as_rgb(probe, WHITE)
    except Exception:
        decoded = None
    buf = io.BytesIO()
    (load_image(ref, policy) if decoded is None else policy.apply(decoded)).save(buf, format="PNG")
    return "image/png", buf.getvalue()


# --------------------------------------------------------------------------------------------
# The reference-conditioned judge prompt (evaluators spec, section 4.3).

ROLE_LINE = "You predict the preferences of one specific user."


def answer_instruction(offer_tie: bool, reason: bool) -> str:
    """The closing instruction: optional brief reasoning, then exactly one tagged answer."""
    choices = "<answer>A</answer> or <answer>B</answer>"
    if offer_tie:
        choices = (
            "<answer>A</answer>, <answer>B</answer> or <answer>Tie</answer> "
            "(Tie should be rare: use it only if this user would like both images equally)"
        )
    lead = (
        "First explain briefly what the user's past choices say about this pair, then end your reply"
        if reason
        else "Reply"
    )
    return (
        "Which of the two images does this user prefer? Base your judgement on the taste shown in the "
        f"user's past choices, not on your own taste, and be decisive. {lead} with exactly one of {choices}."
    )


def reference_prompt(episode: Episode, offer_tie: bool = False, reason: bool = False) -> Prompt:
    """The judge prompt for one episode: references in their given order, then the target pair."""
    parts: list[Part] = [text(ROLE_LINE)]
    refs = episode.references
    if refs:
        parts.append(text(f"Here are {len(refs)} of this user's past choices. For each prompt, the user "
                          "preferred one generated image over the other."))
        for k, ref in enumerate(refs, 1):
            parts += [
                text(f"Past choice {k}. Prompt: {ref.prompt}"),
                text("Preferred image:"), image(ref.preferred),
                text("Rejected image:"), image(ref.rejected),
            ]
        parts.append(text("Now the same user compares two new images generated for one prompt."))
    else:
        parts.append(text("No past choices of this user are available; judge how this user is likely to "
                          "choose between two images generated for one prompt."))
    target = episode.target
    parts += [
        text(f"Prompt: {target.prompt}"),
        text("Image A:"), image(target.image_a),
        text("Image B:"), image(target.image_b),
        text(answer_instruction(offer_tie, reason)),
    ]
    return Prompt(tuple(parts))
