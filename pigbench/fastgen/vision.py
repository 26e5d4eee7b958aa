"""Qwen2-VL's vision tower with same-size frames attended together, from the tower's own modules.

``VisionEncoder(model)(pixels, grid_thw)`` returns the merged image features the model's vision tower
returns (its ``pooler_output`` in transformers 5.x), for the processor's ``pixel_values`` and
``image_grid_thw``, with the tower's weights and modules (``norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp``, ``merger``). What differs from transformers' SDPA path, which it matches up to
floating-point differences (the tests compare them):

- Attention: every frame of every image is its own attention segment, as in transformers' ``cu_seqlens``.
  transformers runs one SDPA call per segment; here the frames of equal size ``(h, w)`` are attended in one
  call on ``(frames, heads, h*w, head_dim)`` without a mask. Mixed sizes form one group per size: the tokens
  are reordered group by group before the blocks (the other layers act on each token alone) and put back in
  input order before the merger.
- Rotary embedding: as transformers applies it (q and k rotated in float32, then cast back), in four passes
  over q and k instead of about seven.
- Patch embedding: the ``Conv3d`` of kernel equal to stride as the one GEMM it amounts to (cuDNN runs this
  convolution slowly on some GPUs and dtypes).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from pigbench.fastgen.decoder import vision_tower

_Group = tuple[int, int, int]  # frame height and width in patches, number of frames


class VisionEncoder:
    """Merged features of a ``Qwen2VLForConditionalGeneration``'s vision tower; see the module docstring."""

    def __init__(self, model: Any) -> None:
        cfg = model.config.vision_config
        self.visual = vision_tower(model)
        self.blocks = list(self.visual.blocks)
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.embed_dim // cfg.num_heads
        self.merge_size = cfg.spatial_merge_size
        self._rotary: dict[tuple[int, int, Any], tuple[Any, Any]] = {}

    @property
    def dtype(self) -> Any:
        """The tower's parameter dtype (pixels are cast to it)."""
        return self.visual.patch_embed.proj.weight.dtype

    def __call__(self, pixels: Any, grid_thw: Any) -> Any:
        """Features ``(sum(t*h*w) / merge_size**2, hidden)`` of the images in input order, for pixel
        rows ``(sum(t*h*w), channels*temporal_patch*patch*patch)`` and grids ``(images, 3)`` (a long
        tensor on any device; read on the host)."""
        import torch
        import torch.nn.functional as F

        groups, order = frame_groups(grid_thw.tolist())
        if order is not None:
            pixels = pixels[order.to(pixels.device)]
        proj = self.visual.patch_embed.proj
        x = F.linear(pixels.to(proj.weight.dtype), proj.weight.reshape(proj.weight.shape[0], -1), proj.bias)
        rotary = [self._rotary_table(h, w, x.device) for h, w, _ in groups]
        for block in self.blocks:
            x = x + self._attention(block.attn, block.norm1(x), groups, rotary)
            x = x + block.mlp(block.norm2(x))
        if order is not None:
            x = x[torch.argsort(order).to(x.device)]
        return self.visual.merger(x)

    def _attention(self, attn: Any, h: Any, groups: Sequence[_Group], rotary: Sequence[tuple[Any, Any]]) -> Any:
        """The block's self-attention output (after ``attn.proj``) for normed tokens ``h`` ``(S, dim)``."""
        import torch
        import torch.nn.functional as F

        tokens, heads, dim = h.shape[0], self.num_heads, self.head_dim
        qkv = attn.qkv(h).view(tokens, 3, heads, dim)
        out = torch.empty(tokens, heads, dim, dtype=h.dtype, device=h.device)
        start = 0
        for (rows, cols, frames), (cos, sin) in zip(groups, rotary):
            length = rows * cols
            end = start + frames * length
            part = qkv[start:end].view(frames, length, 3, heads, dim)
            qk = rotate_in_float32(part[:, :, :2], cos, sin)
            q, k, v = qk[:, :, 0], qk[:, :, 1], part[:, :, 2]  # (frames, length, heads, dim)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               scale=dim**-0.5)
            out[start:end].view(frames, length, heads, dim).copy_(o.transpose(1, 2))
            start = end
        return attn.proj(out.view(tokens, heads * dim))

    def _rotary_table(self, rows: int, cols: int, device: Any) -> tuple[Any, Any]:
        """float32 cos and sin ``(rows*cols, 1, 1, head_dim)`` of one frame's tokens, from the tower's rotary module."""
        import torch

        key = (rows, cols, device)
        if key not in self._rotary:
            grid = torch.tensor([[1, rows, cols]], device=device)
            cos, sin = _rotary_cos_sin(self.visual, grid, self.merge_size)
            self._rotary[key] = (cos.float()[:, None, None], sin.float()[:, None, None])
        return self._rotary[key]


def _rotary_cos_sin(visual: Any, grid: Any, merge_size: int) -> tuple[Any, Any]:
    """cos and sin ``(tokens, head_dim)`` that the tower's forward computes for ``grid``."""
    import torch

    if hasattr(visual, "rot_pos_emb"):  # transformers 4.x: half-width frequencies
        freqs = visual.rot_pos_emb(grid)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()
    from transformers.vision_utils import get_vision_position_ids

    positions = get_vision_position_ids(grid, merge_size)
    return visual.rotary_pos_emb(positions, positions)  # the first argument only gives the device


def frame_groups(grid_thw: Sequence[Sequence[int]]) -> tuple[list[_Group], Optional[Any]]:
    """Frames grouped by size, ``[(h, w, frames)]`` in order of first appearance, and the token order
    (a long tensor) that puts each group's tokens together in that order, frames in input order;
    ``None`` when the input order already does."""
    import torch

    starts: dict[tuple[int, int], list[int]] = {}
    offset = 0
    for t, h, w in grid_thw:
        for _ in range(t):
            starts.setdefault((h, w), []).append(offset)
            offset += h * w
    groups = [(h, w, len(s)) for (h, w), s in starts.items()]
    in_order = [s for group in starts.values() for s in group]
    if in_order == sorted(in_order):
        return groups, None
    return groups, torch.cat([torch.arange(s, s + h * w) for (h, w), group in starts.items() for s in group])


def rotate_in_float32(x: Any, cos: Any, sin: Any) -> Any:
    """``x * cos + rotate_half(x) * sin`` computed in float32 and cast back to ``x.dtype``, as
    transformers' ``apply_rotary_pos_emb_vision``; cos/sin are float32 and broadcast to ``x``."""
    half = x.shape[-1] // 2
    x32 = x.float()
    out = x32 * cos
    out[..., :half].addcmul_(x32[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x32[..., :half], sin[..., half:])
    return out.to(x.dtype)
