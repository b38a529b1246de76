"""How long generated audio really is: the end of its non-silent part.

The model always generates its whole window and is told by `seconds_total` where the
content should stop (arXiv 2402.04825); the rest should decode to silence. This measures where
the content stops, to check that timing conditioning works (issue 4's acceptance).

A frame counts as sounding when its RMS is within `relative_db` of the clip's loudest
frame and above `floor_db` dBFS; the non-silent length is the end of the last sounding
frame. Quiet tails of real notes sit well above -40 dB relative, while the decoded
"silence" latents of a small VAE leave a low hiss far below it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def frame_rms_db(audio: np.ndarray, frame_length: int) -> np.ndarray:
    """RMS level per frame in dBFS.

    Args:
      audio: `[samples]` or `[samples, channels]`; channels are pooled.
      frame_length: samples per frame; a partial last frame is measured as it is.

    Returns:
      float64 `[ceil(samples / frame_length)]`.
    """
    audio = np.asarray(audio, np.float64)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples] or [samples, channels], got shape {audio.shape}")
    frames = -(-len(audio) // frame_length)
    padded = np.zeros((frames * frame_length, audio.shape[1]))
    padded[: len(audio)] = audio
    power = np.square(padded).reshape(frames, -1).sum(axis=1)
    counts = np.minimum(frame_length, len(audio) - frame_length * np.arange(frames)) * audio.shape[1]
    return 10.0 * np.log10(np.maximum(power / np.maximum(counts, 1), 1e-20))


FRAME_SECONDS = 0.05  # the level-measurement frame: the resolution of every length measured here


def _frame_length(sample_rate: int, frame_seconds: float) -> int:
    return max(1, int(round(frame_seconds * sample_rate)))


def loudest_frame_db(audio: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> float:
    """Level in dBFS of the loudest `frame_seconds` frame of `[samples(, channels)]` audio."""
    return float(np.max(frame_rms_db(audio, _frame_length(sample_rate, frame_seconds))))


def non_silent_seconds(
    audio: np.ndarray,
    sample_rate: int,
    *,
    frame_seconds: float = FRAME_SECONDS,
    relative_db: float = 40.0,
    floor_db: float = -60.0,
) -> float:
    """Seconds from the start of `audio` (`[samples(, channels)]`) to the end of its last sounding frame.

    0.0 for a silent clip. The resolution is one frame (`frame_seconds`).
    """
    frame_length = _frame_length(sample_rate, frame_seconds)
    levels = frame_rms_db(audio, frame_length)
    if levels.size == 0:
        return 0.0
    threshold = max(levels.max() - relative_db, floor_db)
    sounding = np.nonzero(levels > threshold)[0]
    if sounding.size == 0:
        return 0.0
    return min(len(audio), (int(sounding[-1]) + 1) * frame_length) / sample_rate


def timing_errors(
    clips: Sequence[np.ndarray], requested_seconds: Sequence[float], sample_rate: int, **kwargs
) -> list[dict[str, float]]:
    """`non_silent_seconds` of each uncut clip against the `seconds_total` it was generated with."""
    if len(clips) != len(requested_seconds):
        raise ValueError(f"{len(clips)} clips but {len(requested_seconds)} requested lengths")
    rows = []
    for clip, requested in zip(clips, requested_seconds):
        measured = non_silent_seconds(clip, sample_rate, **kwargs)
        rows.append({"requested": float(requested), "measured": measured, "error": measured - float(requested)})
    return rows
