"""The linear rating MLP of the LAION improved aesthetic predictor and of ImageReward.

Five linear layers (in -> 1024 -> 128 -> 64 -> 16 -> 1) with dropouts between the first four
and no activations: at inference it is an affine map. Module indices follow the published
checkpoints (``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``).
"""

from __future__ import annotations

import torch
from torch import nn


class RatingHead(nn.Module):
    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N,) ratings."""
        return self.layers(x).squeeze(-1)
