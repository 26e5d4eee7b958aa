"""``color-reference``: how close a candidate's colour and texture statistics are to the user's
preferred reference images, compared with the rejected ones.

Each image is resized to ``size`` x ``size`` and summarized by 10 statistics, all in unit-free
ranges of about [0, 1]:

* CIELAB means and standard deviations of L/100, a/128, b/128, and mean chroma (colour, warmth,
  brightness, saturation, contrast);
* mean Sobel gradient magnitude of L/100, share of pixels above 0.05 (edge density), and mean
  absolute difference of L/100 from its Gaussian blur, sigma 1 px (fine texture).

Per user, each statistic is divided by its spread over that user's reference images,
sqrt(std^2 + min_spread^2), so that a statistic nearly constant across the references cannot
blow up. With d the Euclidean distance in that space::

    score(x) = mean_rejected d(x, r) - mean_preferred d(x, p)      (contrastive, default)
    score(x) = - mean_preferred d(x, p)                             (contrastive=false)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from pigbench.evaluator import EvaluatorConfig, Runtime, ScalarConfig, ScalarEvaluator, ScoreRequest
from pigbench.image_features import PerImageCache, check_side, load_rgb


def color_texture_features(rgb: np.ndarray) -> np.ndarray:
    """The 10 statistics of an (H, W, 3) uint8 RGB array; see the module docstring."""
    from scipy.ndimage import gaussian_filter
    from skimage.color import rgb2lab
    from skimage.filters import sobel

    lab = rgb2lab(rgb.astype(np.float64) / 255.0)
    lum, a, b = lab[..., 0] / 100.0, lab[..., 1] / 128.0, lab[..., 2] / 128.0
    grad = sobel(lum)
    fine = np.abs(lum - gaussian_filter(lum, 1.0))
    return np.array([lum.mean(), a.mean(), b.mean(), lum.std(), a.std(), b.std(), np.hypot(a, b).mean(),
                     grad.mean(), (grad > 0.05).mean(), fine.mean()])


@dataclass(frozen=True)
class ColorReferenceConfig(ScalarConfig):
    size: int = 64  # side of the square images are resized to before computing statistics
    contrastive: bool = True  # subtract the mean distance to the rejected references
    min_spread: float = 0.02  # floor of each statistic's per-user spread (statistics are ~[0, 1])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_side("color-reference", self.size, 8)
        if not self.min_spread > 0:
            raise ValueError(f"color-reference: min_spread must be > 0, got {self.min_spread!r}")


class ColorReference(ScalarEvaluator):
    """Scores an image by colour/texture distance to the user's preferred vs rejected references."""

    kind = "similarity"
    uses_references = True
    uses_prompt = False
    description = "Colour and texture statistics: distance to rejected minus distance to preferred references"
    Config = ColorReferenceConfig

    def __init__(self, config: Optional[EvaluatorConfig] = None, runtime: Optional[Runtime] = None) -> None:
        super().__init__(config, runtime)
        self.features = PerImageCache(lambda img: color_texture_features(load_rgb(img, self.config.size)), 65536)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [self._score(r) for r in requests]

    def _score(self, request: ScoreRequest) -> float:
        if not request.references:
            raise ValueError("color-reference needs at least one reference pair for the user")
        preferred = np.stack([self.features(p.preferred) for p in request.references])
        rejected = np.stack([self.features(p.rejected) for p in request.references])
        spread = np.hypot(np.concatenate([preferred, rejected]).std(0), self.config.min_spread)
        x = self.features(request.image) / spread
        to_preferred = np.linalg.norm(preferred / spread - x, axis=1).mean()
        if not self.config.contrastive:
            return float(-to_preferred)
        return float(np.linalg.norm(rejected / spread - x, axis=1).mean() - to_preferred)
