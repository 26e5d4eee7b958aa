"""CLIP reference-similarity evaluators: ``clip-i`` (image to the user's preferred images) and
``text-align`` (image to the user's preferred prompts).

clip-i: s(x) = mean over reference pairs of cos(CLIP(x), CLIP(preferred)); with
``subtract_rejected`` minus the same mean over the rejected images (DreamBooth's CLIP-I, made
user-conditioned). text-align: s(x) = mean over the user's distinct reference prompts of
cos(CLIP(x), CLIP_text(prompt)). A reference pair's two images share its prompt, so text-align has
no rejected-side variant. Default backbone ``openai/clip-vit-base-patch32`` (``$PIGBENCH_CLIP_PATH``
or ``--model-path`` select another); HF processor preprocessing.

Example::

    pigbench run --evaluator clip-i --dataset pickapic --option subtract_rejected=true
"""

from __future__ import annotations

from typing import Hashable, Sequence

from pigbench.evaluator import ScoreRequest
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, ReferenceSimilarity, exp_logit_scale
from pigbench.protocol import Episode, ImageRef


class _CLIPBackbone(EmbeddingScorer):
    env_var = "PIGBENCH_CLIP_PATH"
    default_model = "openai/clip-vit-base-patch32"
    with_text = False

    @classmethod
    def check_weights(cls, config: EmbeddingConfig) -> None:
        cls.check_model(config, "the CLIP model")

    def load(self) -> None:
        from pigbench.checkpoint import load_tokenizer
        from pigbench.evaluators._hf_clip import encode_texts, image_encoder, load_clip_model, processor_transform
        from pigbench.evaluators._weights import source_fingerprint

        source = self.model_source(self.config)
        model = load_clip_model(source, self.device, self.dtype, self.folder_hint())
        fingerprint = source_fingerprint(source, model)
        encode, tower = image_encoder(model, self.device)
        self.images = self.image_embedder(
            encode, processor_transform(source, "floor", "the CLIP model", self.folder_hint()),
            f"clip:{source}:{fingerprint}",
        )
        if self.with_text:
            tokenizer = load_tokenizer(source, "the CLIP model", self.folder_hint())
            self.texts = self.text_embedder(lambda t: encode_texts(model, tokenizer, t, self.device))
        self._provenance = {"model": source, "revision": fingerprint, "image_tower": tower}
        self.calibration_scale = exp_logit_scale(model)  # scores are (sums of) cosines


class ClipI(ReferenceSimilarity, _CLIPBackbone):
    description = "Mean CLIP image-image cosine to the user's preferred reference images (optionally minus rejected)"


class TextAlign(_CLIPBackbone):
    version = "2"  # 2: scores memoized by the reference prompts they read (version 1 could reuse another user's)
    kind = "similarity"
    uses_references = True
    uses_prompt = False
    with_text = True
    description = "Mean CLIP cosine between the image and the user's distinct reference prompts"

    def prompts_of(self, episode: Episode) -> list[str]:
        return [r.prompt for r in episode.references]

    def images_of(self, episode: Episode) -> list[ImageRef]:
        """The pair only: the score reads the reference prompts, not the reference images."""
        return [episode.target.image_a, episode.target.image_b]

    def request_key(self, request: ScoreRequest) -> Hashable:
        """The image and the distinct reference prompts, all that the score reads (the reference
        images are not: two users with the same reference images but other prompts score apart)."""
        return request.image.content_hash, tuple(dict.fromkeys(r.prompt for r in request.references))

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        from pigbench.embedding import l2_normalize

        out = []
        for req in requests:
            prompts = list(dict.fromkeys(r.prompt for r in req.references))
            if not prompts:
                raise ValueError("the episode has no reference pairs to compare with")
            x = l2_normalize(self.images.get(req.image))
            out.append(float((l2_normalize(self.texts.stack(prompts)) @ x).mean()))
        return out
