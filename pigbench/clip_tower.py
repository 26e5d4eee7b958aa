"""The image tower of a transformers CLIP model, run for projected features with less work per image.

``CLIPImageTower(model)`` reads the vision weights of a loaded ``CLIPModel`` or
``CLIPVisionModelWithProjection`` (transformers 4 or 5; the weights are shared, not copied, except
the concatenated q/k/v projections) and maps pixel values to what ``model.get_image_features``
returns, the projected class-token features. It differs from transformers' modules in how, not
what, it computes:

* the patch embedding (a convolution whose stride equals its kernel) is one matrix product over
  the flattened patches, which needs no per-shape convolution plan from cuDNN;
* the q, k and v projections of a layer are one matrix product;
* each residual addition is fused with the layer norm after it (:mod:`pigbench.add_layer_norm`);
* the last layer computes queries, attention, the output projection and the MLP for the class
  token only, the one row the projection reads (keys and values still for every token);
* on CUDA, attention runs cuDNN's kernel for batch sizes that are multiples of
  :data:`CUDNN_BATCH_MULTIPLE` and flash attention for the others. cuDNN's is faster (the
  ViT-H/14 tower at batch 256 on an H100: about 1,505 against 1,460 images/s) but builds an execution
  plan for each new shape, which took 0.09 to 0.28 s of host time per new batch size. An embedder's
  batches are full, or whole quarter batches at the start of a call, except for a call's last one;
* on CUDA in float16 or bfloat16, a GELU MLP applies its activation in the epilogue of the first
  matrix product (cuBLASLt, through ``torch._addmm_activation``), in float32 before rounding,
  instead of in a separate pass over the 4x wider hidden rows. That epilogue computes GELU's tanh
  form, which differs from the exact (erf) GELU by at most 4.7e-4 (at |x| = 2.7); on a ViT-H/14 MLP
  in float16 the fused product's largest error against float32 exact GELU (2.00e-3) was no larger
  than the unfused one's (2.07e-3).

Results equal transformers' up to float rounding (tests compare them in float32, where the exact
GELU runs). Only the standard CLIP layout is supported: image size equal to the model's, no
position interpolation.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch
import torch.nn.functional as F

from pigbench.add_layer_norm import add_layer_norm

CUDNN_BATCH_MULTIPLE = 64  # batch sizes run with cuDNN's attention (few, so each plan is built once)
# hidden_act values the GELU epilogue stands in for, on CUDA only (for "gelu" the CPU keeps the exact form)
GELU_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh"})


class CLIPImageTower:
    """Callable: pixel values (N, 3, S, S) in the model's dtype -> projected features (N, projection_dim)."""

    def __init__(self, model: Any) -> None:
        vision = model.vision_model
        config = vision.config if hasattr(vision, "config") else model.config.vision_config
        embeddings = vision.embeddings
        self.patch = embeddings.patch_size
        self.patch_weight = embeddings.patch_embedding.weight.detach().flatten(1)  # (C, 3 * patch * patch), a view
        self.class_token = embeddings.class_embedding.detach()
        self.positions = embeddings.position_embedding.weight.detach()  # (T, C): position ids are 0..T-1
        self.pre_norm, self.post_norm = vision.pre_layrnorm, vision.post_layernorm
        self.projection = model.visual_projection.weight
        self.layers = list(vision.encoder.layers)
        self.heads = config.num_attention_heads
        from transformers.activations import ACT2FN

        self.activation = ACT2FN[config.hidden_act]
        self.gelu_epilogue = config.hidden_act in GELU_ACTIVATIONS and hasattr(torch, "_addmm_activation")
        self.qkv = [(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
                     torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach())
                    for a in (layer.self_attn for layer in self.layers)]

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        with _attention_backends(pixels):
            return self._features(pixels)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self._embed(pixels)  # (N, T, C): class token first, position embeddings added
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

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens (N, 1 + G * G, C) of pixels (N, 3, G * patch, G * patch): the class token, then the patches row by row."""
        n, channels, side = pixels.shape[0], pixels.shape[1], pixels.shape[-1]
        p, c = self.patch, self.class_token.shape[0]
        g = side // p
        if pixels.shape[-2:] != (g * p, g * p) or self.positions.shape[0] != 1 + g * g:
            raise ValueError(f"the image tower takes images of the model's size, got {tuple(pixels.shape)}")
        patches = pixels.reshape(n, channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n * g * g, channels * p * p)
        tokens = F.linear(patches.to(self.patch_weight.dtype), self.patch_weight).view(n, g * g, c)
        return torch.cat([self.class_token.expand(n, 1, c), tokens], dim=1).add_(self.positions)

    def _attention(self, i: int, y: torch.Tensor, n: int, t: int) -> torch.Tensor:
        """Self-attention of layer ``i`` over the normed rows ``y`` (n * t, C), output projection included."""
        weight, bias = self.qkv[i]
        q, k, v = F.linear(y, weight, bias).view(n, t, 3, self.heads, -1).unbind(2)  # each (n, t, heads, d)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        proj = self.layers[i].self_attn.out_proj
        return F.linear(out.transpose(1, 2).reshape(n * t, -1), proj.weight, proj.bias)

    def _mlp(self, layer: Any, y: torch.Tensor) -> torch.Tensor:
        fc1 = layer.mlp.fc1
        if self.gelu_epilogue and y.is_cuda and y.dtype in (torch.float16, torch.bfloat16):
            hidden = torch._addmm_activation(fc1.bias, y, fc1.weight.t(), use_gelu=True)
        else:
            hidden = self.activation(fc1(y))
        return layer.mlp.fc2(hidden)

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


def _attention_backends(pixels: torch.Tensor) -> ContextManager:
    """The SDPA backends for a batch: on CUDA, cuDNN first for a multiple of
    :data:`CUDNN_BATCH_MULTIPLE` images, otherwise flash attention first (no per-shape plan)."""
    if not pixels.is_cuda:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    others = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if pixels.shape[0] % CUDNN_BATCH_MULTIPLE:
        return sdpa_kernel(others)
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, *others], set_priority=True)
