"""DINOScore: mean DINOv2 CLS-embedding cosine of an image to the user's preferred references.

e(x) = the final layer-normed CLS token (``last_hidden_state[:, 0]``, which is DINOv2's
``pooler_output``), L2-normalized; s(x) = mean over reference pairs of cos(e(x), e(preferred)),
minus the mean over the rejected images with ``subtract_rejected``. Default ``facebook/dinov2-base``
(``--model-path`` or ``$PIGBENCH_DINO_PATH`` select small/large/giant); preprocessing from its
image processor: bicubic short side 256, center crop 224, ImageNet mean/std.

Example::

    pigbench run --evaluator dinoscore --dataset pigbench --model-path facebook/dinov2-large
"""

from __future__ import annotations

from pigbench.evaluators._scorer import ReferenceSimilarity, SimilarityConfig


class DINOScore(ReferenceSimilarity):
    description = "Mean DINOv2 CLS cosine to the user's preferred reference images (optionally minus rejected)"
    env_var = "PIGBENCH_DINO_PATH"
    calibration_scale = 100.0  # cosines, with no logit scale of DINOv2's own: read at CLIP's (100)
    default_model = "facebook/dinov2-base"

    @classmethod
    def check_weights(cls, config: SimilarityConfig) -> None:
        cls.check_model(config, "the DINOv2 model")

    def load(self) -> None:
        from transformers import AutoModel

        from pigbench.checkpoint import from_pretrained_strict
        from pigbench.evaluators._hf_clip import processor_transform
        from pigbench.evaluators._weights import source_fingerprint

        source = self.model_source(self.config)
        model = from_pretrained_strict(AutoModel, source, "the DINOv2 model", self.folder_hint()).eval().to(device=self.device, dtype=self.dtype)
        fingerprint = source_fingerprint(source, model)
        self.images = self.image_embedder(
            lambda x: model(pixel_values=x).last_hidden_state[:, 0],
            processor_transform(source, "floor", "the DINOv2 model", self.folder_hint()),
            f"dino:{source}:{fingerprint}",
        )
        self._provenance = {"model": source, "revision": fingerprint}
