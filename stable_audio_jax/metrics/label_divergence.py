"""KL divergence between the label distributions of generated and reference clips (the paper's KL_passt).

As stable-audio-metrics' `passt_kld` computes it: a clip's tagger logits are averaged over its
analysis windows ("mean"; or their maximum, "max") and turned into one distribution over the
labels with a softmax. AudioSet taggers are trained with sigmoid outputs, but the distribution
over labels that a KL needs is the softmax, as MusicGen's and the reference's metric use. Each
generated clip is compared with the reference clip of the same prompt:

    KL(p_gen || p_ref) = sum_c p_gen[c] (log p_gen[c] - log(p_ref[c] + 1e-6))

(PyTorch's `F.kl_div(log(p_ref + 1e-6), p_gen, reduction="sum")`; a zero p_gen[c] adds 0), and
the metric is its mean over the pairs.
"""

from __future__ import annotations

import numpy as np

COLLECT = ("mean", "max")
REFERENCE_EPS = 1e-6


def clip_distribution(window_logits: np.ndarray, collect: str = "mean") -> np.ndarray:
    """`[windows, labels]` logits of one clip -> its label distribution `[labels]` (float64, sums to 1)."""
    logits = np.asarray(window_logits, np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"need [windows >= 1, labels] logits, got shape {logits.shape}")
    if collect not in COLLECT:
        raise ValueError(f"collect must be one of {list(COLLECT)}, got {collect!r}")
    pooled = logits.mean(axis=0) if collect == "mean" else logits.max(axis=0)
    shifted = np.exp(pooled - pooled.max())
    return shifted / shifted.sum()


def kl_divergence(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pair KL(generated || reference) of `[pairs, labels]` distributions -> `[pairs]`."""
    p, q = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"need matching [pairs, labels] distributions, got {p.shape} and {q.shape}")
    safe_p = np.where(p > 0, p, 1.0)
    return np.sum(np.where(p > 0, p * (np.log(safe_p) - np.log(q + REFERENCE_EPS)), 0.0), axis=-1)
