"""MPS (Zhang et al. 2024, Kwai-Kolors): multi-dimensional preference score, overall condition.

Weights: ``MPS_overall_checkpoint.pth`` (Google Drive link in Kwai-Kolors/MPS's README; a pickled
whole model, read here without importing its classes) or the safetensors re-export
``MPS_overall_checkpoint_diffsynth.safetensors`` (ModelScope DiffSynth-Studio/QualityMetric_reward_pretrained).
Architecture config, image processor and tokenizer: ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``.
Recipe (``eval_overall_mps_on_imagereward.py``, ``infer_one_sample``): prompt and condition padded
to 77 tokens; token-level projected text features T, condition token features C, projected image
tokens I; sim = max over condition tokens of <T, C>, divided by its maximum; text tokens with
sim <= 0.3 are masked; f = cross_model(I, T, mask)[:, 0]; s = exp(logit_scale) * cos(EOS text
feature, f). The maximum is taken per sample (the reference scores one sample at a time).

Example::

    pigbench run --evaluator mps --dataset pickapic --model-path ./MPS_overall_checkpoint.pth
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

from pigbench.evaluator import ScoreRequest, resolve_local_or_hub
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, configured, exp_logit_scale
from pigbench.evaluators._weights import WeightFile, check_file
from pigbench.hub import cache_only, model_folder_hint

OVERALL_CONDITION = (
    "light, color, clarity, tone, style, ambiance, artistry, shape, face, hair, hands, limbs, structure, "
    "instance, texture, quantity, attributes, position, number, location, word, things."
)
CLIP_ENV = "PIGBENCH_MPS_CLIP_PATH"


@dataclass(frozen=True)
class MPSConfig(EmbeddingConfig):
    """``clip_path``: CLIP-H config, processor and tokenizer; ``condition``: the condition text;
    ``mask_threshold``: prompt tokens whose condition similarity (scaled to a maximum of 1) is at or
    below it are masked, so it must be a finite number below 1."""

    clip_path: str = ""
    condition: str = OVERALL_CONDITION
    mask_threshold: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.mask_threshold) and self.mask_threshold < 1):  # nan masked nothing; >= 1 masks every token
            raise ValueError(f"mps: option mask_threshold must be a finite number below 1, got {self.mask_threshold!r}")


class MPS(EmbeddingScorer):
    kind = "scalar"
    description = "MPS overall: CLIP-H with condition-masked cross-attention, exp(logit_scale)*cos"
    Config = MPSConfig
    env_var = "PIGBENCH_MPS_PATH"
    default_clip = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    @classmethod
    def weight_file(cls) -> WeightFile:
        return WeightFile(
            cls.name or "mps", "the MPS overall checkpoint", "MPS_overall_checkpoint.pth", cls.env_var,
            "https://github.com/Kwai-Kolors/MPS (README: 'Download the MPS checkpoint') or ModelScope "
            "DiffSynth-Studio/QualityMetric_reward_pretrained (MPS_overall_checkpoint_diffsynth.safetensors)",
            also=("MPS_overall_checkpoint_diffsynth.safetensors",),
        )

    @classmethod
    def clip_source(cls, config: MPSConfig) -> str:
        return configured(config.clip_path, CLIP_ENV, cls.default_clip)

    def model_sources(self) -> list[str]:
        return [*super().model_sources(), self.clip_source(self.config)]

    @classmethod
    def check_weights(cls, config: MPSConfig) -> None:
        check_file(cls.model_source(config), cls.weight_file())
        resolve_local_or_hub(cls.clip_source(config), cls.name or "mps", CLIP_ENV, "the CLIP-H config/processor",
                             flag="--option clip_path=", default=cls.default_clip)

    def load(self) -> None:
        import torch
        from transformers import CLIPConfig

        from pigbench.checkpoint import check_config_file, load_tokenizer
        from pigbench.evaluators._hf_clip import processor_transform
        from pigbench.evaluators._mps_net import MPSNet, cross_model_shape
        from pigbench.evaluators._weights import CheckpointError, fetch_file, load_strict, read_state_dict, source_fingerprint

        path = fetch_file(self.model_source(self.config), self.weight_file())
        clip = self.clip_source(self.config)
        clip_hint = model_folder_hint(self.default_clip, "--option clip_path=", CLIP_ENV)
        check_config_file(clip, "the CLIP-H config/processor", clip_hint)  # before the checkpoint is read
        tokenizer = load_tokenizer(clip, "the CLIP-H config/processor", clip_hint)
        config = CLIPConfig.from_pretrained(clip, local_files_only=cache_only(clip))
        state = read_state_dict(path, "the MPS checkpoint")
        try:
            shape = cross_model_shape(state)
        except KeyError as exc:
            raise CheckpointError(f"mps: the MPS checkpoint {path} has no tensor {exc} (its cross model): "
                                  "it is not MPS_overall_checkpoint.pth") from None
        self.net = MPSNet(config, shape)
        load_strict(self.net, state, "the MPS checkpoint", str(path))
        self.net.eval().to(device=self.device, dtype=self.dtype)
        length = min(tokenizer.model_max_length, config.text_config.max_position_embeddings)

        def encode(texts: list[str]) -> torch.Tensor:
            ids = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt").input_ids
            return self.net.text_tokens(ids.to(self.device))

        self.texts = self.text_embedder(encode)
        self.condition = self.texts.get(self.config.condition)[:-1]
        self.logit_scale = exp_logit_scale(self.net.model)
        sha = source_fingerprint(str(path))
        vision = hashlib.sha256(config.vision_config.to_json_string().encode()).hexdigest()[:16]  # heads, activation, eps: not in the checkpoint
        transform = processor_transform(clip, "floor", "the CLIP-H config/processor", clip_hint)
        self.images = self.image_embedder(self.net.image_tokens, transform, f"mps:{sha}:vision-{vision}")
        self._provenance = {"checkpoint": str(path), "checkpoint_sha256": sha, "clip": clip}

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        import torch

        from pigbench.embedding import l2_normalize

        text = self.texts.stack([r.prompt for r in requests]).to(self.device)
        tokens, pooled = text[:, :-1], text[:, -1]
        sim = torch.einsum("bid,jd->bij", tokens.float(), self.condition.to(self.device).float()).amax(dim=-1)
        sim = sim / sim.amax(dim=-1, keepdim=True)
        mask = torch.zeros_like(sim).masked_fill(sim <= self.config.mask_threshold, float("-inf"))
        image = self.images.stack([r.image for r in requests]).to(self.device)
        with torch.inference_mode():
            fused = self.net.cross_model(image, tokens, mask[:, None, :].to(self.dtype))[:, 0]
        return (self.logit_scale * (l2_normalize(fused) * l2_normalize(pooled)).sum(-1)).cpu().tolist()
