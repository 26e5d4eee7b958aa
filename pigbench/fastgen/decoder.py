"""Qwen2-VL's language model as plain functions over a static KV cache.

The weights are the model's own (q/k/v and gate/up fused into one GEMM each, see
:class:`TextDecoder`); this module replaces what ``transformers`` does around them: the cache,
the masks, the rotary embedding, fused RMSNorm and attention. Attention is grouped-query without ``repeat_kv``: the query heads that
share a KV head are folded into the query-length axis, so each KV head is read once::

    q (B, Hq, T, D) -> (B, Hkv, G*T, D)  attends  k, v (B, Hkv, L, D)   with G = Hq / Hkv

The cache is one tensor per K and V of shape ``(layers, rows, Hkv, L, D)``. A forward writes the
new tokens' K/V at given (row, position) pairs and attends under an additive mask, so the same
code serves prefill (many tokens per row, rows starting after a shared prefix) and decoding (one
token per row, shapes fixed for CUDA graph capture).
"""

from __future__ import annotations

import weakref
from typing import Any

from pigbench.fastgen.rope import apply_rope, rope_cos_sin


def language_model(model: Any) -> Any:
    """The text decoder inside a ``Qwen2VLForConditionalGeneration`` (transformers 4.5x and 5.x)."""
    inner = model.model
    return getattr(inner, "language_model", inner)


def vision_tower(model: Any) -> Any:
    inner = model.model
    return getattr(inner, "visual", None) or getattr(model, "visual")


def _mrope_section(config: Any) -> list[int]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return list(params.get("mrope_section", [16, 24, 24]))


class TextDecoder:
    """Forward passes of the language model over an external static KV cache.

    Construction fuses each layer's q/k/v projections, and its gate/up projections, into one
    weight each and makes the model's own parameters views of those (same values, no extra
    memory; ``transformers`` keeps working on the same model), so a layer runs two GEMMs where
    it ran five.
    """

    def __init__(self, model: Any) -> None:
        import torch

        lm = language_model(model)
        cfg = lm.config
        self.layers = list(lm.layers)
        self.embed_tokens = lm.embed_tokens
        self.norm = lm.norm
        self.lm_head = model.lm_head
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.dtype = self.embed_tokens.weight.dtype
        self.device = self.embed_tokens.weight.device
        self.inv_freq = lm.rotary_emb.inv_freq.to(self.device, torch.float32)
        self.rope_scaling = float(getattr(lm.rotary_emb, "attention_scaling", 1.0))
        self.mrope_section = _mrope_section(cfg)
        self.mask_min = torch.finfo(self.dtype).min
        with torch.no_grad():
            self.qkv = [_fuse(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
                        for layer in self.layers]
            self.gate_up = [_fuse(layer.mlp.gate_proj, layer.mlp.up_proj)[0] for layer in self.layers]

    # -- building blocks -------------------------------------------------------------------
    def rope(self, positions):
        """cos/sin for positions ``(3, B, T)`` (prompt) or ``(B, T)`` (generated text)."""
        return rope_cos_sin(positions, self.inv_freq, self.mrope_section, self.dtype, self.rope_scaling)

    def causal_mask(self, starts, lengths: int, keys: int):
        """Additive mask ``(B, 1, T, L)``: the token at ``starts[b] + t`` sees keys up to itself."""
        import torch

        query_pos = starts[:, None] + torch.arange(lengths, device=starts.device)[None, :]
        key_pos = torch.arange(keys, device=starts.device)
        blocked = key_pos[None, None, :] > query_pos[:, :, None]
        return (blocked.to(self.dtype) * self.mask_min)[:, None]

    def logits(self, hidden):
        """Float logits for hidden states ``(B, H)`` (final norm then LM head)."""
        return self.lm_head(self.norm(hidden)).float()

    # -- the forward -------------------------------------------------------------------------
    def forward(self, x, cos, sin, k_cache, v_cache, write_rows, write_pos, mask, keys: int):
        """Run all layers on ``x`` ``(B, T, hidden)``; returns the hidden states ``(B, T, hidden)``.

        ``k_cache``/``v_cache`` are ``(layers, B, Hkv, L_alloc, D)`` views whose row b belongs to
        ``x[b]``. Token t of row b is written at ``(write_rows[b, t], write_pos[b, t])`` and
        attends the first ``keys`` cache positions of its row under ``mask`` ``(B, 1, T, keys)``.
        """
        import torch.nn.functional as F

        batch, length, _ = x.shape
        hq, hkv = self.num_heads, self.num_kv_heads
        cos, sin = cos[:, :, None], sin[:, :, None]
        for i, layer in enumerate(self.layers):
            norm = layer.input_layernorm
            h = F.rms_norm(x, (self.hidden,), norm.weight, norm.variance_epsilon)
            qkv = F.linear(h, *self.qkv[i]).view(batch, length, hq + 2 * hkv, self.head_dim)
            qk = apply_rope(qkv[:, :, : hq + hkv], cos, sin)  # (B, T, heads, D)
            k_cache[i][write_rows, :, write_pos] = qk[:, :, hq:]
            v_cache[i][write_rows, :, write_pos] = qkv[:, :, hq + hkv :]
            out = grouped_attention(qk[:, :, :hq], k_cache[i][:, :, :keys], v_cache[i][:, :, :keys], mask)
            x = x + layer.self_attn.o_proj(out.reshape(batch, length, hq * self.head_dim))
            norm = layer.post_attention_layernorm
            h = F.rms_norm(x, (self.hidden,), norm.weight, norm.variance_epsilon)
            gate, up = F.linear(h, self.gate_up[i]).chunk(2, dim=-1)
            x = x + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        return x


_FUSED: "weakref.WeakKeyDictionary[Any, tuple[Any, Any]]" = weakref.WeakKeyDictionary()


def _fuse(*linears: Any) -> tuple[Any, Any]:
    """(weight, bias or None) concatenating ``linears`` along outputs; their parameters become views.
    Fusing the same modules again returns the same tensors (a model can serve several engines)."""
    import torch

    if linears[0] in _FUSED:
        return _FUSED[linears[0]]
    weight = torch.cat([lin.weight for lin in linears])
    bias = torch.cat([lin.bias for lin in linears]) if linears[0].bias is not None else None
    start = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = weight[start : start + n]
        if bias is not None:
            lin.bias.data = bias[start : start + n]
        start += n
    _FUSED[linears[0]] = (weight, bias)
    return weight, bias


def grouped_attention(q, k, v, mask):
    """Softmax attention of q ``(B, T, Hq, D)`` over k, v ``(B, Hkv, L, D)`` with an additive mask
    ``(B, 1, T, L)``, reading each KV head once (query heads ``h`` use KV head ``h // G``).
    Returns ``(B, T, Hq, D)``."""
    import torch.nn.functional as F

    batch, length, heads, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    group = heads // kv_heads
    q = q.transpose(1, 2).reshape(batch, kv_heads, group * length, dim)
    if length > 1:
        mask = mask[:, :, None].expand(batch, 1, group, length, keys).reshape(batch, 1, group * length, keys)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.reshape(batch, heads, length, dim).transpose(1, 2)
