"""LAION improved aesthetic predictor: a linear MLP on the L2-normalized CLIP ViT-L/14 image embedding.

Head ``sac+logos+ava1-l14-linearMSE.pth`` (christophschuhmann/improved-aesthetic-predictor,
``simple_inference.py``); backbone OpenAI CLIP ViT-L/14 (HF ``openai/clip-vit-large-patch14``)
with OpenAI CLIP's preprocessing. The prompt is ignored. Scores are predicted ratings (~1-10).

Example::

    pigbench run --evaluator aesthetics --dataset pickapic --model-path ./sac+logos+ava1-l14-linearMSE.pth
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pigbench.evaluator import ScoreRequest, resolve_local_or_hub
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, configured
from pigbench.evaluators._weights import WeightFile, check_file
from pigbench.hub import model_folder_hint

HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"
CLIP_ENV = "PIGBENCH_AESTHETICS_CLIP_PATH"


@dataclass(frozen=True)
class AestheticsConfig(EmbeddingConfig):
    """``model_path``: the MLP head file (or URL); ``clip_path``: the CLIP ViT-L/14 backbone."""

    clip_path: str = ""


class Aesthetics(EmbeddingScorer):
    kind = "scalar"
    uses_prompt = False
    description = "LAION improved aesthetic predictor (sac+logos+ava1 linear MLP on CLIP ViT-L/14); ignores the prompt"
    Config = AestheticsConfig
    env_var = "PIGBENCH_AESTHETICS_PATH"
    default_model = HEAD_URL
    default_clip = "openai/clip-vit-large-patch14"

    @classmethod
    def head_file(cls) -> WeightFile:
        return WeightFile(
            cls.name or "aesthetics", "the aesthetic MLP head", "sac+logos+ava1-l14-linearMSE.pth", cls.env_var,
            "https://github.com/christophschuhmann/improved-aesthetic-predictor",
        )

    @classmethod
    def clip_source(cls, config: AestheticsConfig) -> str:
        return configured(config.clip_path, CLIP_ENV, cls.default_clip)

    def model_sources(self) -> list[str]:
        return [*super().model_sources(), self.clip_source(self.config)]

    @classmethod
    def check_weights(cls, config: AestheticsConfig) -> None:
        check_file(cls.model_source(config), cls.head_file())
        resolve_local_or_hub(cls.clip_source(config), cls.name or "aesthetics", CLIP_ENV, "the CLIP ViT-L/14 backbone",
                             flag="--option clip_path=", default=cls.default_clip)

    def load(self) -> None:
        from pigbench.evaluators._hf_clip import image_encoder, load_clip_model, processor_transform
        from pigbench.evaluators._rating_head import RatingHead
        from pigbench.evaluators._weights import fetch_file, load_strict, read_state_dict, source_fingerprint

        clip = self.clip_source(self.config)
        clip_hint = model_folder_hint(self.default_clip, "--option clip_path=", CLIP_ENV)
        model = load_clip_model(clip, self.device, self.dtype, clip_hint)
        head_path = fetch_file(self.model_source(self.config), self.head_file())
        self.head = RatingHead(model.config.projection_dim)
        load_strict(self.head, read_state_dict(head_path, "the aesthetic head"), "the aesthetic head", str(head_path))
        self.head.eval().to(self.device)
        clip_revision = source_fingerprint(clip, model)
        encode, tower = image_encoder(model, self.device)
        self.images = self.image_embedder(
            encode, processor_transform(clip, "round", "the CLIP model", clip_hint), f"clip:{clip}:{clip_revision}"
        )
        self._provenance = {"head": str(head_path), "head_sha256": source_fingerprint(str(head_path)), "clip": clip, "clip_revision": clip_revision, "image_tower": tower}

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        import torch

        from pigbench.embedding import l2_normalize

        emb = l2_normalize(self.images.stack([r.image for r in requests])).to(self.device)
        with torch.inference_mode():
            return self.head(emb).float().cpu().tolist()
