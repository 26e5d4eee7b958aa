"""``ssim-reference``: mean structural similarity of a candidate to the user's preferred reference
images minus its mean SSIM to the rejected ones.

Recipe (``docs/evaluators`` spec, SSIM): both images resized to ``size`` x ``size`` (bicubic,
RGB uint8), then ``skimage.metrics.structural_similarity`` with ``channel_axis=-1``,
``data_range=255`` and the Wang et al. settings ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False``::

    score(x) = mean_preferred SSIM(x, p) - mean_rejected SSIM(x, r)   (contrastive, default)
    score(x) = mean_preferred SSIM(x, p)                               (contrastive=false)

Decoded, resized reference arrays are cached per image, so each is decoded once per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pigbench.evaluator import ScalarConfig, ScalarEvaluator, ScoreRequest
from pigbench.image_features import PerImageCache, load_rgb


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two equally sized RGB uint8 arrays with the Wang et al. settings."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(
        x, y, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    ))


@dataclass(frozen=True)
class SSIMReferenceConfig(ScalarConfig):
    size: int = 64  # side of the square both images are resized to
    contrastive: bool = True  # subtract the mean SSIM to the rejected references


class SSIMReference(ScalarEvaluator):
    """Scores an image by SSIM to the user's preferred references (minus SSIM to the rejected ones)."""

    kind = "similarity"
    uses_references = True
    uses_prompt = False
    description = "Mean SSIM to the user's preferred reference images minus to the rejected ones (scikit-image)"
    Config = SSIMReferenceConfig

    def __init__(self, config=None, runtime=None) -> None:
        super().__init__(config, runtime)
        max_items = max(64, (64 << 20) // (3 * self.config.size**2))  # about 64 MiB of arrays
        self.arrays = PerImageCache(lambda img: load_rgb(img, self.config.size), max_items)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [self._score(r) for r in requests]

    def _score(self, request: ScoreRequest) -> float:
        if not request.references:
            raise ValueError("ssim-reference needs at least one reference pair for the user")
        x = self.arrays(request.image)
        to_preferred = np.mean([ssim(x, self.arrays(p.preferred)) for p in request.references])
        if not self.config.contrastive:
            return float(to_preferred)
        return float(to_preferred - np.mean([ssim(x, self.arrays(p.rejected)) for p in request.references]))
