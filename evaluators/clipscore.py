"""CLIPScore (Hessel et al. 2021): reference-free text-image alignment, 2.5 * max(cos, 0).

The caption is prefixed with "A photo depicts " (jmhessel/clipscore), cleaned as OpenAI CLIP's
tokenizer cleans text before BPE (:func:`openai_clean`), and both embeddings are L2-normalized.
Default backbone ``openai/clip-vit-base-patch32`` (the paper's ViT-B/32); any HF CLIP checkpoint
can be selected with ``--model-path``. Images follow OpenAI CLIP's preprocessing
(bicubic short-side resize, torchvision center crop, OpenAI mean/std).

Example::

    pigbench run --evaluator clipscore --dataset pickapic --model-path openai/clip-vit-large-patch14
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pigbench.evaluator import ScoreRequest
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, exp_logit_scale


@dataclass(frozen=True)
class CLIPScoreConfig(EmbeddingConfig):
    """``prefix`` is prepended to every prompt; ``weight`` is w in w * max(cos, 0), a finite number > 0."""

    prefix: str = "A photo depicts "
    weight: float = 2.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.weight) and self.weight > 0):  # 0 makes every pair a tie, < 0 flips every choice
            raise ValueError(f"clipscore: option weight must be a finite number > 0, got {self.weight!r}")


def openai_clean(text: str) -> str:
    """``text`` as OpenAI CLIP's tokenizer (``basic_clean``, used by the CLIPScore reference) cleans it
    before BPE: ftfy's ``fix_text`` (straight quotes, ligatures, full-width letters), HTML entities
    unescaped twice, outer whitespace stripped. transformers' CLIP tokenizers do none of it, so
    "a dog’s" or "&amp;" would otherwise become other tokens."""
    import html

    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


class CLIPScore(EmbeddingScorer):
    version = "2"  # 2: captions cleaned as OpenAI CLIP's tokenizer cleans them (openai_clean)
    kind = "scalar"
    description = "CLIPScore (Hessel et al.): 2.5*max(cos,0) between image and 'A photo depicts <prompt>', CLIP ViT-B/32"
    Config = CLIPScoreConfig
    packages = ("torch", "transformers", "ftfy")
    env_var = "PIGBENCH_CLIPSCORE_PATH"
    default_model = "openai/clip-vit-base-patch32"

    @classmethod
    def check_weights(cls, config: CLIPScoreConfig) -> None:
        cls.check_model(config, "the CLIP model")

    def load(self) -> None:
        from pigbench.checkpoint import load_tokenizer
        from pigbench.evaluators._hf_clip import encode_texts, image_encoder, load_clip_model, processor_transform
        from pigbench.evaluators._weights import source_fingerprint

        source = self.model_source(self.config)
        model = load_clip_model(source, self.device, self.dtype, self.folder_hint())
        tokenizer = load_tokenizer(source, "the CLIP model", self.folder_hint())
        fingerprint = source_fingerprint(source, model)
        encode, tower = image_encoder(model, self.device)
        self.images = self.image_embedder(
            encode, processor_transform(source, "round", "the CLIP model", self.folder_hint()),
            f"clip:{source}:{fingerprint}",
        )
        prefix = self.config.prefix
        self.texts = self.text_embedder(lambda t: encode_texts(model, tokenizer, [openai_clean(prefix + s) for s in t], self.device))
        self._provenance = {"model": source, "revision": fingerprint, "image_tower": tower}
        # scores are weight * cos: CLIP's logits are logit_scale * cos
        self.calibration_scale = exp_logit_scale(model) / self.config.weight

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        from pigbench.embedding import l2_normalize

        img = l2_normalize(self.images.stack([r.image for r in requests]))
        txt = l2_normalize(self.texts.stack([r.prompt for r in requests]))
        cos = (img * txt).sum(-1)
        return (self.config.weight * cos.clamp(min=0)).tolist()
