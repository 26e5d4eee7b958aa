"""Qwen2-VL's language model as plain functions over a static KV cache.

The projections, norms and MLPs are the model's own modules (same weights, same kernels); this
module replaces only what ``transformers`` does around them: the cache, the masks, the rotary
embedding and attention. Attention is grouped-query without ``repeat_kv``: the query heads that
share a KV head are folded into the query-length axis, so each KV head is read once::

    q (B, Hq, T, D) -> (B, Hkv, G*T, D)  attends  k, v (B, Hkv, L, D)   with G = Hq / Hkv

The cache is one tensor per K and V of shape ``(layers, rows, Hkv, L, D)``. A forward writes the
new tokens' K/V at given (row, position) pairs and attends under an additive mask, so the same
code serves prefill (many tokens per row, rows starting after a shared prefix) and decoding (one
token per row, shapes fixed for CUDA graph capture).
"""

from __future__ import annotations

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
    """Forward passes of the language model over an external static KV cache."""

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
        self.dtype = self.embed_tokens.weight.dtype
        self.device = self.embed_tokens.weight.device
        self.inv_freq = lm.rotary_emb.inv_freq.to(self.device, torch.float32)
        self.rope_scaling = float(getattr(lm.rotary_emb, "attention_scaling", 1.0))
        self.mrope_section = _mrope_section(cfg)
        self.mask_min = torch.finfo(self.dtype).min

    # -- building blocks -------------------------------------------------------------------
    def rope(self, positions):
        """cos/sin for positions ``(3, B, T)`` (prompt) or ``(B, T)`` (generated text)."""
        return rope_cos_sin(positions, self.inv_freq, self.mrope_section, self.dtype, self.rope_scaling)

    def causal_mask(self, starts, lengths: int, keys: int):
        """Additive mask ``(B, 1, T, L)``: the token at ``starts[b] + t`` sees keys up to itself."""
        import torch

        query_pos = starts[:, None] + torch.arange(lengths, device=starts.device)[None, :]
        key_pos = torch.arange(keys, device=starts.device)
        allowed = key_pos[None, None, :] <= query_pos[:, :, None]
        return torch.where(allowed, 0.0, self.mask_min).to(self.dtype)[:, None]

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
        batch, length, _ = x.shape
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(batch, length, self.num_kv_heads, self.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            k_cache[i][write_rows, :, write_pos] = k.transpose(1, 2)
            v_cache[i][write_rows, :, write_pos] = v
            out = grouped_attention(q, k_cache[i][:, :, :keys], v_cache[i][:, :, :keys], mask)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x


def grouped_attention(q, k, v, mask):
    """Softmax attention of q ``(B, Hq, T, D)`` over k, v ``(B, Hkv, L, D)`` with an additive mask
    ``(B, 1, T, L)``, reading each KV head once (query heads ``h`` use KV head ``h // G``)."""
    import torch.nn.functional as F

    batch, heads, length, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    group = heads // kv_heads
    q = q.reshape(batch, kv_heads, group * length, dim)
    if length > 1:
        mask = mask[:, :, None].expand(batch, 1, group, length, keys).reshape(batch, 1, group * length, keys)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.view(batch, heads, length, dim)
