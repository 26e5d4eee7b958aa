"""PickScore (Kirstain et al. 2023): s = exp(logit_scale) * cos(text, image) with PickScore_v1.

Model ``yuvalkirstain/PickScore_v1`` (a CLIP ViT-H/14 fine-tuned on Pick-a-Pic); processor and
tokenizer ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, as in the PickScore README: bicubic
short-side resize to 224 with PIL, HF center crop, OpenAI mean/std; prompts padded and truncated
to 77 tokens. The pair probability softmax([s_A, s_B]) is monotone in s_A - s_B, so predictions use
the raw delta (see ``pigbench.calibration`` for the Pick-a-Pic tie-threshold protocol).

Example::

    pigbench run --evaluator pickscore --dataset pickapic --model-path /models/PickScore_v1 \\
        --option processor_path=/models/CLIP-ViT-H-14-laion2B-s32B-b79K
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pigbench.evaluator import ScoreRequest, resolve_local_or_hub
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, configured, exp_logit_scale
from pigbench.hub import model_folder_hint

PROCESSOR_ENV = "PIGBENCH_PICKSCORE_PROCESSOR_PATH"


@dataclass(frozen=True)
class PickScoreConfig(EmbeddingConfig):
    """``processor_path``: image processor and tokenizer (empty: $PIGBENCH_PICKSCORE_PROCESSOR_PATH, then LAION CLIP-H)."""

    processor_path: str = ""


class PickScore(EmbeddingScorer):
    kind = "scalar"
    description = "PickScore_v1: exp(logit_scale)*cos(text, image), CLIP ViT-H/14 fine-tuned on Pick-a-Pic"
    Config = PickScoreConfig
    env_var = "PIGBENCH_PICKSCORE_PATH"
    default_model = "yuvalkirstain/PickScore_v1"
    default_processor = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    @classmethod
    def processor_source(cls, config: PickScoreConfig) -> str:
        return configured(config.processor_path, PROCESSOR_ENV, cls.default_processor)

    def model_sources(self) -> list[str]:
        return [*super().model_sources(), self.processor_source(self.config)]

    @classmethod
    def check_weights(cls, config: PickScoreConfig) -> None:
        name = cls.name or "pickscore"
        cls.check_model(config, "the PickScore model")
        resolve_local_or_hub(cls.processor_source(config), name, PROCESSOR_ENV, "the CLIP-H processor",
                             flag="--option processor_path=", default=cls.default_processor)

    def load(self) -> None:
        from pigbench.checkpoint import load_tokenizer
        from pigbench.evaluators._hf_clip import encode_texts, image_encoder, load_clip_model, processor_transform
        from pigbench.evaluators._weights import source_fingerprint

        source, processor = self.model_source(self.config), self.processor_source(self.config)
        model = load_clip_model(source, self.device, self.dtype, self.folder_hint())
        processor_hint = model_folder_hint(self.default_processor, "--option processor_path=", PROCESSOR_ENV)
        tokenizer = load_tokenizer(processor, "the CLIP-H processor", processor_hint)
        fingerprint = source_fingerprint(source, model)
        transform = processor_transform(processor, "floor", "the CLIP-H processor", processor_hint)
        encode, tower = image_encoder(model, self.device)
        self.images = self.image_embedder(encode, transform, f"pickscore:{source}:{fingerprint}",
                                          compile_encoder=True)
        self.texts = self.text_embedder(lambda t: encode_texts(model, tokenizer, t, self.device))
        self.logit_scale = exp_logit_scale(model)
        self._provenance = {"model": source, "revision": fingerprint, "processor": processor, "image_tower": tower}

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        from pigbench.embedding import l2_normalize

        img = l2_normalize(self.images.stack([r.image for r in requests]))
        txt = l2_normalize(self.texts.stack([r.prompt for r in requests]))
        return (self.logit_scale * (img * txt).sum(-1)).tolist()
