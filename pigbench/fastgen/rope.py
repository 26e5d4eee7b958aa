"""Qwen2-VL's multimodal rotary positions (M-RoPE), computed per prompt without the model.

Text tokens advance one position per token, identical in the three components (temporal,
height, width). An image of ``t x h x w`` patches merged by ``m`` occupies ``t*(h/m)*(w/m)``
tokens whose components are ``start + (frame, row, column)``; the text after it resumes at
``start + max(h, w)/m``. Generated tokens continue the text positions, so decoding needs only a
1-D position. This reproduces ``Qwen2VLModel.get_rope_index`` (checked in the tests).
"""

from __future__ import annotations

from typing import Sequence


def mrope_positions(token_ids: Sequence[int], image_token_id: int, grids: Sequence[tuple[int, int, int]],
                    merge_size: int):
    """Positions ``(3, len(token_ids))`` and the position of the first generated token.

    Raises ``ValueError`` when the image tokens do not match ``grids`` in number or size.
    """
    import torch

    n = len(token_ids)
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    positions = torch.empty(3, n, dtype=torch.long)
    is_image = (ids == image_token_id).tolist()
    cur, i, k = 0, 0, 0
    while i < n:
        if not is_image[i]:
            j = i
            while j < n and not is_image[j]:
                j += 1
            positions[:, i:j] = torch.arange(cur, cur + j - i)
            cur, i = cur + j - i, j
            continue
        if k >= len(grids):
            raise ValueError(f"prompt has more image-token runs than its {len(grids)} image(s)")
        t, h, w = grids[k]
        gh, gw = h // merge_size, w // merge_size
        count = t * gh * gw
        if i + count > n or not all(is_image[i : i + count]):
            raise ValueError(f"image {k}: expected {count} image tokens for grid {tuple(grids[k])}")
        frame = torch.arange(t).repeat_interleave(gh * gw)
        row = torch.arange(gh).repeat_interleave(gw).repeat(t)
        col = torch.arange(gw).repeat(t * gh)
        positions[:, i : i + count] = torch.stack([frame, row, col]) + cur
        cur, i, k = cur + max(gh, gw), i + count, k + 1
    if k != len(grids):
        raise ValueError(f"prompt has {k} image-token runs but {len(grids)} image(s)")
    return positions, cur


def rope_cos_sin(positions, inv_freq, mrope_section: Sequence[int], dtype, scaling: float = 1.0):
    """cos and sin of shape ``(B, T, head_dim)`` for positions ``(3, B, T)`` (M-RoPE) or ``(B, T)``
    (text only: the three components are equal)."""
    import torch

    if positions.dim() == 2:
        freqs = positions[..., None].float() * inv_freq  # (B, T, D/2)
    else:
        per_axis = positions[..., None].float() * inv_freq  # (3, B, T, D/2)
        chunks = per_axis.split(list(mrope_section), dim=-1)
        freqs = torch.cat([c[i % 3] for i, c in enumerate(chunks)], dim=-1)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def apply_rope(x, cos, sin):
    """Rotate ``x`` by cos/sin broadcastable to it (e.g. x ``(B, T, heads, D)``, cos ``(B, T, 1, D)``)."""
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
