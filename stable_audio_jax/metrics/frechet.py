"""Frechet distance between two sets of embeddings, each summarised as a Gaussian (float64, host).

    FD = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))

(the paper's FD_openl3, arXiv 2402.04825 section 5.2, computed as stable-audio-metrics'
`calculate_frechet_distance` does, on the embeddings of every analysis frame). The trace of the
matrix square root is taken from a symmetric eigenproblem instead of `scipy.linalg.sqrtm`:
`(S_a S_b)^(1/2)` has the eigenvalues of `S_a^(1/2) S_b S_a^(1/2)`, which is symmetric positive
semi-definite, so the square roots of its (clipped) eigenvalues give the trace without the
complex round-off `sqrtm` returns for nearly singular products.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianStatistics:
    """Mean `[d]`, covariance `[d, d]` (unbiased, as `np.cov`) and count of a set of embeddings."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int

    @classmethod
    def of(cls, embeddings: np.ndarray) -> "GaussianStatistics":
        """The statistics of `[n, d]` embeddings (n >= 2)."""
        x = np.asarray(embeddings, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need [n >= 2, dims] embeddings for a covariance, got shape {x.shape}")
        return cls(x.mean(axis=0), np.cov(x, rowvar=False), len(x))

    def to_arrays(self) -> dict[str, Any]:
        return {"mean": self.mean, "covariance": self.covariance, "count": np.int64(self.count)}

    @classmethod
    def from_arrays(cls, arrays: Any) -> "GaussianStatistics":
        return cls(
            np.asarray(arrays["mean"], np.float64), np.asarray(arrays["covariance"], np.float64), int(arrays["count"])
        )


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: GaussianStatistics, b: GaussianStatistics) -> float:
    """FD of the two Gaussians (>= 0 up to round-off; 0 for identical statistics)."""
    if a.mean.shape != b.mean.shape or a.covariance.shape != b.covariance.shape:
        raise ValueError(
            f"statistics of different embedders: means {a.mean.shape} vs {b.mean.shape}, "
            f"covariances {a.covariance.shape} vs {b.covariance.shape}"
        )
    root_a = _psd_sqrt(a.covariance)
    middle = root_a @ b.covariance @ root_a
    trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None))))
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.covariance) + np.trace(b.covariance) - 2.0 * trace_sqrt)
