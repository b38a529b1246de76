"""Cross-modal retrieval recall@k from a similarity matrix (host-side NumPy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Text-to-audio and audio-to-text recall@k.

    Args:
      similarity: `[num_texts, num_audios]`, square; entry (i, j) scores caption i
        against clip j, and clip i is the correct match of caption i.
      ks: the cut-offs; a k larger than the number of items is clipped to it.

    Returns:
      `text_to_audio_recall@k`, `audio_to_text_recall@k` for each k, and `chance@k`
      (k / n, the expected recall of a random ranking). Ties count against the match: a
      constant similarity gives recall 0 at k < n rather than a lucky 1.
    """
    similarity = np.asarray(similarity, np.float64)
    n = similarity.shape[0]
    if similarity.ndim != 2 or similarity.shape[1] != n:
        raise ValueError(f"similarity must be square [n, n], got {similarity.shape}")
    matched = np.diag(similarity)
    # Rank of the correct item = number of others scoring at least as high.
    t2a_rank = (similarity >= matched[:, None]).sum(axis=1) - 1
    a2t_rank = (similarity >= matched[None, :]).sum(axis=0) - 1
    result = {}
    for k in ks:
        k_eff = min(k, n)
        result[f"text_to_audio_recall@{k}"] = float(np.mean(t2a_rank < k_eff))
        result[f"audio_to_text_recall@{k}"] = float(np.mean(a2t_rank < k_eff))
        result[f"chance@{k}"] = k_eff / n
    return result
