"""Audio post-processing for dataset clips: noise reverb, and cut / fade-out / pad / peak-normalise.

Numpy only, shared by the soundfont demo dataset and the synthetic fallback. Audio arrays are
float32 ``[num_samples, 2]`` (channels last).
"""

from __future__ import annotations

import numpy as np

PEAK_LEVEL = 10 ** (-1 / 20)  # peak-normalise to -1 dBFS
FADE_SECONDS = 0.2  # fade-out applied where a clip is cut


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution of ``x`` [n] with each column of ``h`` [m, c], truncated to [n, c]."""
    n = x.shape[0] + h.shape[0] - 1
    nfft = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(x, nfft)[:, None] * np.fft.rfft(h, nfft, axis=0)
    return np.fft.irfft(spectrum, nfft, axis=0)[: x.shape[0]]


def add_reverb(audio: np.ndarray, sample_rate: int, rng: np.random.Generator, rt60: float, wet: float) -> np.ndarray:
    """Adds an exponentially decaying noise reverb with independent L/R tails (decorrelates stereo).

    Args:
      audio: float32 ``[num_samples, 2]``.
      rt60: time in seconds for the tail to decay by 60 dB.
      wet: gain of the reverberant signal relative to the dry one.
    Returns:
      float32 ``[num_samples, 2]`` (the tail beyond the input length is dropped).
    """
    length = max(1, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    ir = rng.standard_normal((length, 2)) * np.exp(-6.91 * t / rt60)[:, None]
    ir[: int(0.01 * sample_rate)] = 0.0  # 10 ms pre-delay
    ir /= np.sqrt(np.sum(ir**2, axis=0, keepdims=True)) + 1e-12
    tail = _fft_convolve(audio.mean(axis=1).astype(np.float64), ir)
    return (audio + wet * tail).astype(np.float32)


def finish_clip(audio: np.ndarray, sample_rate: int, max_samples: int, min_samples: int = 0) -> np.ndarray:
    """Cuts to ``max_samples``, fades out the end, pads with silence to ``min_samples``, peak-normalises.

    Args:
      audio: ``[num_samples, 2]``.
    Returns:
      float32 ``[n, 2]`` with ``min_samples <= n <= max_samples`` (when min <= max) and peak -1 dBFS.
    """
    audio = np.asarray(audio, np.float32)[:max_samples].copy()
    fade = min(int(FADE_SECONDS * sample_rate), audio.shape[0] // 4)
    if fade > 0:
        audio[-fade:] *= (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade, dtype=np.float32)))[:, None]
    if audio.shape[0] < min_samples:
        audio = np.pad(audio, ((0, min_samples - audio.shape[0]), (0, 0)))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0.0:
        audio *= PEAK_LEVEL / peak
    return audio
