"""Pre-drawn noise for the reference's stochastic samplers (shared by the generator scripts)."""

from __future__ import annotations

import torch


class PreDrawnRandnLike:
    """Stands in for `torch.randn_like` in `inference/sampling.py`: `noise[i]` at call i."""

    def __init__(self, noise: torch.Tensor):
        self.noise, self.calls = noise, 0

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        assert like.shape == self.noise.shape[1:]
        out = self.noise[self.calls]
        self.calls += 1
        return out
