"""ImageReward's network rebuilt from transformers' BLIP blocks, and its checkpoint's key mapping.

``ImageReward.pt`` (THUDM/ImageReward) holds a BLIP ViT (timm-style names under
``blip.visual_encoder``), BLIP's BERT with cross-attention (``blip.text_encoder``; the same
names as transformers' ``BlipTextModel``), BLIP's unused ``vision_proj``/``text_proj``, and the
rating MLP (``mlp.layers``). The ViT maps one-to-one onto ``BlipVisionModel``; its shape is read
from the checkpoint tensors (64-dimensional heads, as in BLIP's ViT-B and ViT-L).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import nn
from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from pigbench.evaluators._rating_head import RatingHead

_RENAMES = [
    (r"^blip\.visual_encoder\.cls_token$", "visual_encoder.embeddings.class_embedding"),
    (r"^blip\.visual_encoder\.pos_embed$", "visual_encoder.embeddings.position_embedding"),
    (r"^blip\.visual_encoder\.patch_embed\.proj\.", "visual_encoder.embeddings.patch_embedding."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm1\.", r"visual_encoder.encoder.layers.\1.layer_norm1."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm2\.", r"visual_encoder.encoder.layers.\1.layer_norm2."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"visual_encoder.encoder.layers.\1.self_attn.qkv."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"visual_encoder.encoder.layers.\1.self_attn.projection."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.mlp\.", r"visual_encoder.encoder.layers.\1.mlp."),
    (r"^blip\.visual_encoder\.norm\.", "visual_encoder.post_layernorm."),
    (r"^blip\.(text_encoder|vision_proj|text_proj)\.", r"\1."),
]


def translate_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> :class:`ImageRewardNet` names; unknown names are kept (and then rejected)."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


class ImageRewardNet(nn.Module):
    """BLIP ViT -> image tokens; BERT over the prompt, cross-attending to them -> [CLS] -> MLP."""

    def __init__(self, vision: BlipVisionConfig, text: BlipTextConfig, embed_dim: int) -> None:
        super().__init__()
        self.visual_encoder = BlipVisionModel(vision)
        self.text_encoder = BlipTextModel(text, add_pooling_layer=False)
        self.vision_proj = nn.Linear(vision.hidden_size, embed_dim)  # in the checkpoint; unused for rewards
        self.text_proj = nn.Linear(text.hidden_size, embed_dim)
        self.mlp = RatingHead(text.hidden_size)

    @property
    def image_size(self) -> int:
        return self.visual_encoder.config.image_size

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalized pixels -> (N, 1 + patches, width) layer-normed ViT tokens."""
        return self.visual_encoder(pixel_values=pixels).last_hidden_state

    def raw_reward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """The MLP output on the [CLS] state of the text encoder run bidirectionally with cross-attention."""
        out = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=torch.ones(image_tokens.shape[:2], dtype=torch.long, device=image_tokens.device),
        )
        return self.mlp(out.last_hidden_state[:, 0].float())


def build_from_checkpoint(state: Mapping[str, torch.Tensor], med_config: Mapping[str, Any]) -> ImageRewardNet:
    """An :class:`ImageRewardNet` shaped like the checkpoint (ViT) and ``med_config.json`` (BERT)."""
    prefix = "blip.visual_encoder."
    pos = state[prefix + "pos_embed"]
    patch = state[prefix + "patch_embed.proj.weight"]
    width, patch_size = patch.shape[0], patch.shape[-1]
    depth = len({k.split(".")[3] for k in state if k.startswith(prefix + "blocks.")})
    grid = round((pos.shape[1] - 1) ** 0.5)
    vision = BlipVisionConfig(
        hidden_size=width, intermediate_size=state[prefix + "blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=depth, num_attention_heads=max(1, width // 64), image_size=grid * patch_size,
        patch_size=patch_size, layer_norm_eps=1e-6, hidden_act="gelu",
    )
    text = BlipTextConfig(
        vocab_size=med_config["vocab_size"], hidden_size=med_config["hidden_size"], encoder_hidden_size=width,
        intermediate_size=med_config["intermediate_size"], num_hidden_layers=med_config["num_hidden_layers"],
        num_attention_heads=med_config["num_attention_heads"],
        max_position_embeddings=med_config["max_position_embeddings"], hidden_act=med_config["hidden_act"],
        layer_norm_eps=med_config["layer_norm_eps"], pad_token_id=med_config.get("pad_token_id", 0),
        is_decoder=True,  # creates the cross-attention layers; forward runs bidirectionally
    )
    return ImageRewardNet(vision, text, embed_dim=state["blip.vision_proj.weight"].shape[0])
