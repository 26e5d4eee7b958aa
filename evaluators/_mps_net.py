"""MPS's network: an HF CLIP plus the condition-masked cross model, named as in the checkpoint.

The released ``MPS_overall_checkpoint.pth`` is a pickled module with two children: ``model`` (an
HF ``CLIPModel`` subclass) and ``cross_model``: L layers, each a residual pre-norm cross-attention
from image tokens to text tokens (multi-query: one key/value head) with a parallel SwiGLU
feed-forward, then a residual pre-norm "parallel" block (rotary self-attention, multi-query, and
a SwiGLU feed-forward from one fused projection). Layer norms have a fixed zero bias stored as a
buffer. Module names below reproduce the checkpoint's keys; sizes are read from its tensors.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel


class _LayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)


class _SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)
        return F.silu(gate) * value


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *args) + x


class _Rotary(nn.Module):
    def __init__(self, dim_head: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim_head, 2).float() / dim_head)))

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """Rotary position embedding over the second-to-last (sequence) axis, computed in float32."""
        n = t.shape[-2]
        angles = torch.outer(torch.arange(n, device=t.device, dtype=torch.float32), self.inv_freq.float())
        angles = torch.cat((angles, angles), dim=-1)
        first, second = t.float().chunk(2, dim=-1)
        rotated = torch.cat((-second, first), dim=-1)
        return (t.float() * angles.cos() + rotated * angles.sin()).to(t.dtype)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q (b, h, n, d) already scaled; k, v (b, m, d) shared by all heads; additive mask (b, n, m)."""
    sim = torch.einsum("bhnd,bmd->bhnm", q, k)
    if mask is not None:
        sim = sim + mask[:, None]
    return torch.einsum("bhnm,bmd->bhnd", sim.softmax(dim=-1), v)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int, ff_inner: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm = _LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * ff_inner, bias=False), _SwiGLU(), nn.Linear(ff_inner, dim, bias=False))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2) * self.scale
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return self.to_out(_merge_heads(_attend(q, k, v, mask))) + self.ff(x)


class _ParallelBlock(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int, ff_inner: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.splits = (heads * dim_head, dim_head, dim_head, 2 * ff_inner)
        self.norm = _LayerNorm(dim)
        self.rotary_emb = _Rotary(dim_head)
        self.fused_attn_ff_proj = nn.Linear(dim, sum(self.splits), bias=False)
        self.attn_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.ff_out = nn.Sequential(_SwiGLU(), nn.Linear(ff_inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        b, n, _ = x.shape
        q, k, v, ff = self.fused_attn_ff_proj(x).split(self.splits, dim=-1)
        q = self.rotary_emb.rotate(q.view(b, n, self.heads, -1).transpose(1, 2)) * self.scale
        k = self.rotary_emb.rotate(k)
        return self.attn_out(_merge_heads(_attend(q, k, v, None))) + self.ff_out(ff)


class CrossModel(nn.Module):
    """Image tokens attend to masked text tokens, then to themselves; token 0 is the fused feature."""

    def __init__(self, dim: int, layers: int, dim_head: int, heads: int, ff_inner: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                _Residual(_CrossAttention(dim, dim_head, heads, ff_inner)),
                _Residual(_ParallelBlock(dim, dim_head, heads, ff_inner)),
            ])
            for _ in range(layers)
        )

    def forward(self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for cross, block in self.layers:
            query = block(cross(query, context, mask))
        return query


class MPSNet(nn.Module):
    def __init__(self, clip: CLIPConfig, cross: Mapping[str, int]) -> None:
        super().__init__()
        self.model = CLIPModel(clip)
        self.cross_model = CrossModel(**cross)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected tokens of the last vision layer (before the post-layernorm), (N, 1 + patches, dim)."""
        hidden = self.model.vision_model(pixel_values=pixels).last_hidden_state
        return self.model.visual_projection(hidden)

    def text_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, L + 1, dim): the L projected token features, then the projected pooled (EOS) feature."""
        out = self.model.text_model(input_ids=input_ids)
        tokens = self.model.text_projection(out.last_hidden_state)
        pooled = self.model.text_projection(out.pooler_output)
        return torch.cat([tokens, pooled[:, None]], dim=1)


def cross_model_shape(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Sizes of the cross model, read from the checkpoint's tensors (KeyError naming the first
    tensor it needs when the checkpoint has none: not an MPS checkpoint)."""
    prefix = "cross_model.layers."
    q = state[prefix + "0.0.fn.to_q.weight"]
    dim_head = state[prefix + "0.0.fn.to_kv.weight"].shape[0] // 2
    return {
        "dim": q.shape[1],
        "layers": len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)}),
        "dim_head": dim_head,
        "heads": q.shape[0] // dim_head,
        "ff_inner": state[prefix + "0.0.fn.ff.0.weight"].shape[0] // 2,
    }
