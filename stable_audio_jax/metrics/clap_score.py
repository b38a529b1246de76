"""CLAP score: cosine similarity of each prompt's text embedding and its audio's embedding.

As in stable-audio-metrics: the audio is resampled to the CLAP rate,
peak-normalised to -1 dBFS and round-tripped through int16; the score is the mean over
prompts of cos(text, audio). The shuffled-pairs score (every prompt against another
prompt's audio) is the baseline a matched score must beat: a random derangement of the
items, or, when prompts repeat (one prompt generated at several lengths), every pair of a
prompt and a clip made for a different prompt. Any encoder with
`embed_text(prompts) -> [n, d]` and `embed_audio_file(path) -> [d]` (unit norm) works:
our trained CLAP (`inference.clap.CLAPEncoder`) or a wrapped LAION-CLAP.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from stable_audio_jax.metrics.retrieval import recall_at_k


class TextAudioEmbedder(Protocol):
    def embed_text(self, prompts: Sequence[str]) -> np.ndarray: ...
    def embed_audio_file(self, path: str) -> np.ndarray: ...


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def cosine_similarities(text_embeddings: np.ndarray, audio_embeddings: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of `[n, d]` and `[n, d]` -> `[n]`."""
    return np.sum(_unit(text_embeddings) * _unit(audio_embeddings), axis=-1)


def clap_score(
    embedder: TextAudioEmbedder,
    prompts: Sequence[str],
    audio_paths: Sequence[str],
    *,
    shuffled_baseline: bool = True,
    seed: int = 0,
    recall_ks: Sequence[int] = (1, 5, 10),
    shuffled: str = "derangement",
) -> dict:
    """CLAP score of `(prompts[i], audio_paths[i])` pairs.

    Returns `{"clap_score": mean matched cosine, "per_item": [...], "num_items": n}` and,
    when n > 1: with `shuffled_baseline`, `"shuffled_clap_score"`, and `"retrieval"`:
    text-to-audio / audio-to-text recall@k among the n items, with chance levels.
    `shuffled` is "derangement" (each prompt against a different item's audio, a random
    derangement drawn from `seed`) or "other_prompts" (the mean over every pair of a prompt
    and an item whose prompt differs; for prompts that repeat).
    """
    if len(prompts) != len(audio_paths):
        raise ValueError(f"{len(prompts)} prompts but {len(audio_paths)} audio files")
    if shuffled not in ("derangement", "other_prompts"):
        raise ValueError(f"shuffled must be 'derangement' or 'other_prompts', got {shuffled!r}")
    if not prompts:
        raise ValueError("no (prompt, audio) pairs to score")
    text = np.asarray(embedder.embed_text(list(prompts)), np.float64)
    audio = np.stack([np.asarray(embedder.embed_audio_file(p), np.float64) for p in audio_paths])
    per_item = cosine_similarities(text, audio)
    result = {"clap_score": float(per_item.mean()), "per_item": per_item.tolist(), "num_items": len(prompts)}
    if shuffled_baseline and len(prompts) > 1 and shuffled == "derangement":
        result["shuffled_clap_score"] = float(cosine_similarities(text, audio[derangement(len(prompts), seed)]).mean())
    elif shuffled_baseline and len(set(prompts)) > 1:
        similarity = _unit(text) @ _unit(audio).T
        labels = np.asarray(prompts)
        result["shuffled_clap_score"] = float(similarity[labels[:, None] != labels[None, :]].mean())
    if len(prompts) > 1:
        result["retrieval"] = recall_at_k(text @ audio.T, recall_ks)
    return result


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A random permutation of `range(n)` with no fixed point (n > 1)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm
