"""``colorfulness``: a reference-free scalar score, the Hasler-Suesstrunk colourfulness metric.

For an RGB image, with opponent channels rg = R - G and yb = (R + G) / 2 - B::

    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)

(D. Hasler and S. Suesstrunk, "Measuring colourfulness in natural images", SPIE 2003). It
ignores the prompt and the user, so on personalized data it shows what ignoring the user costs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pigbench.evaluator import ScalarEvaluator, ScoreRequest
from pigbench.image_features import load_rgb


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler-Suesstrunk M of an (H, W, 3) RGB array in 0..255 (0 for a grey image)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


class Colorfulness(ScalarEvaluator):
    """Prefers the more colourful image, for every user alike."""

    kind = "scalar"
    uses_references = False
    uses_prompt = False
    description = "Hasler-Suesstrunk colourfulness of each image (reference-free, ignores the user)"

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [colorfulness(load_rgb(r.image)) for r in requests]
