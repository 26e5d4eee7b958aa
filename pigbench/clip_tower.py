"""The image tower of a transformers CLIP model, run for projected features with less work per image.

``CLIPImageTower(model)`` reads the vision weights of a loaded ``CLIPModel`` or
``CLIPVisionModelWithProjection`` (transformers 4 or 5; the weights are shared, not copied, except
the concatenated q/k/v projections) and maps pixel values to what ``model.get_image_features``
returns, the projected class-token features. It differs from transformers' modules in how, not
what, it computes:

* the q, k and v projections of a layer are one matrix product;
* each residual addition is fused with the layer norm after it (:mod:`pigbench.add_layer_norm`);
* the last layer computes queries, attention, the output projection and the MLP for the class
  token only, the one row the projection reads (keys and values still for every token).

Results equal transformers' up to float rounding (tests compare them in float32). Only the
standard CLIP layout is supported: image size equal to the model's, no position interpolation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pigbench.add_layer_norm import add_layer_norm


class CLIPImageTower:
    """Callable: pixel values (N, 3, S, S) in the model's dtype -> projected features (N, projection_dim)."""

    def __init__(self, model: Any) -> None:
        vision = model.vision_model
        config = vision.config if hasattr(vision, "config") else model.config.vision_config
        self.embeddings = vision.embeddings
        self.pre_norm, self.post_norm = vision.pre_layrnorm, vision.post_layernorm
        self.projection = model.visual_projection.weight
        self.layers = list(vision.encoder.layers)
        self.heads = config.num_attention_heads
        from transformers.activations import ACT2FN

        self.activation = ACT2FN[config.hidden_act]
        self.qkv = [(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
                     torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach())
                    for a in (layer.self_attn for layer in self.layers)]

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(pixels)  # (N, T, C): class token first, position embeddings added
        n, t, c = h.shape
        h = F.layer_norm(h, (c,), self.pre_norm.weight, self.pre_norm.bias, self.pre_norm.eps).reshape(n * t, c)
        first = self.layers[0].layer_norm1
        y = F.layer_norm(h, (c,), first.weight, first.bias, first.eps)
        for i, layer in enumerate(self.layers[:-1]):
            attn = self._attention(i, y, n, t)
            y = self._add_norm(h, attn, layer.layer_norm2)
            mlp = self._mlp(layer, y)
            y = self._add_norm(h, mlp, self.layers[i + 1].layer_norm1)
        cls = self._last_layer(h, y, n, t)
        cls = F.layer_norm(cls, (c,), self.post_norm.weight, self.post_norm.bias, self.post_norm.eps)
        return F.linear(cls, self.projection)

    def _attention(self, i: int, y: torch.Tensor, n: int, t: int) -> torch.Tensor:
        """Self-attention of layer ``i`` over the normed rows ``y`` (n * t, C), output projection included."""
        weight, bias = self.qkv[i]
        q, k, v = F.linear(y, weight, bias).view(n, t, 3, self.heads, -1).unbind(2)  # each (n, t, heads, d)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        proj = self.layers[i].self_attn.out_proj
        return F.linear(out.transpose(1, 2).reshape(n * t, -1), proj.weight, proj.bias)

    def _mlp(self, layer: Any, y: torch.Tensor) -> torch.Tensor:
        return layer.mlp.fc2(self.activation(layer.mlp.fc1(y)))

    @staticmethod
    def _add_norm(h: torch.Tensor, x: torch.Tensor, norm: Any) -> torch.Tensor:
        return add_layer_norm(h, x, norm.weight, norm.bias, norm.eps)

    def _last_layer(self, h: torch.Tensor, y: torch.Tensor, n: int, t: int) -> torch.Tensor:
        """The last layer's output at the class token (n, C): keys and values from every row of ``y``."""
        layer, (weight, bias) = self.layers[-1], self.qkv[-1]
        c = h.shape[-1]
        kv = F.linear(y, weight[c:], bias[c:]).view(n, t, 2, self.heads, -1)
        q = F.linear(y.view(n, t, c)[:, 0], weight[:c], bias[:c]).view(n, 1, self.heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2))
        proj = layer.self_attn.out_proj
        cls = h.view(n, t, c)[:, 0] + F.linear(out.reshape(n, c), proj.weight, proj.bias)
        mlp = self._mlp(layer, F.layer_norm(cls, (c,), layer.layer_norm2.weight, layer.layer_norm2.bias, layer.layer_norm2.eps))
        return cls + mlp
