"""Log-spectral distance between two clips, inside or outside given time regions.

    LSD = mean over STFT frames of sqrt(mean over bins of (10 log10 P_a - 10 log10 P_b)^2)   [dB]

with P the power of the channel-mean signal (Hann window of `n_fft` samples, hop `n_fft / 4`,
a floor of 1e-10 so digital silence stays finite). It is 0 dB for identical audio. The
inpainting demo uses it to show what a regeneration keeps: outside its regions the output
should be (nearly) the VAE reconstruction of the input, inside it should not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _power_frames(audio: np.ndarray, n_fft: int) -> np.ndarray:
    from scipy import signal

    mono = np.asarray(audio, np.float64)
    mono = mono.mean(axis=-1) if mono.ndim == 2 else mono
    _, _, spec = signal.stft(mono, nperseg=n_fft, noverlap=n_fft - n_fft // 4, boundary=None, padded=False)
    return np.abs(spec.T) ** 2  # [frames, bins]


def frame_centers(num_frames: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Seconds at the centre of each STFT frame of `_power_frames`."""
    return (np.arange(num_frames) * (n_fft // 4) + n_fft / 2) / sample_rate


def log_spectral_distance(
    a: np.ndarray,
    b: np.ndarray,
    sample_rate: int,
    *,
    regions: Sequence[Sequence[float]] = (),
    inside: bool = False,
    margin: float = 0.0,
    n_fft: int = 2048,
) -> float:
    """LSD in dB of two `[samples]` or `[samples, channels]` clips (cut to the shorter).

    Args:
      regions: `(start, end)` seconds; with `inside` only frames whose span lies within a
        region count, else only frames that stay `margin` seconds clear of every region
        (no regions: every frame).
      margin: seconds around each region's edges left out on the outside (e.g. a crossfade).

    Raises:
      ValueError when no frame is selected.
    """
    n = min(len(a), len(b))
    pa, pb = _power_frames(np.asarray(a)[:n], n_fft), _power_frames(np.asarray(b)[:n], n_fft)
    half = n_fft / 2 / sample_rate
    centers = frame_centers(len(pa), n_fft, sample_rate)
    if regions:
        within = np.zeros(len(pa), bool)
        clear = np.ones(len(pa), bool)
        for start, end in regions:
            within |= (centers - half >= start) & (centers + half <= end)
            clear &= (centers + half <= start - margin) | (centers - half >= end + margin)
        selected = within if inside else clear
    else:
        selected = np.ones(len(pa), bool)
    if not selected.any():
        raise ValueError("no STFT frame lies in the selected part of the clips")
    diff = 10 * np.log10(pa[selected] + 1e-10) - 10 * np.log10(pb[selected] + 1e-10)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=-1))))
