"""How close an autoencoder's reconstruction is to its input (float64 NumPy, host).

- SI-SDR (Le Roux et al. 2019): `10 log10(|a s|^2 / |a s - r|^2)` with `a = <r, s> / |s|^2`,
  per channel, in dB (higher is better).
- Mel distance: mean absolute difference of `log10(mel power + 1e-5)` (128 bands, 2048-sample
  window, hop 512), channel mean.
- Output level where the input is empty: the RMS level (dBFS) of the reconstruction over the
  50 ms frames where the input is digitally silent (below -80 dBFS), and its STFT power (dB)
  in the bins where the input has no energy (below -100 dB), e.g. above a band-limited input's
  cut-off. A VAE that leaves a hiss there shows it here; None when the input has no such part.
"""

from __future__ import annotations

import numpy as np

from stable_audio_jax.metrics.timing import FRAME_SECONDS, frame_rms_db

SILENT_FRAME_DB = -80.0
EMPTY_BIN_DB = -100.0


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, e = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    r, e = (x[:, None] if x.ndim == 1 else x for x in (r, e))
    n = min(len(r), len(e))
    if r.shape[1] != e.shape[1] or n == 0:
        raise ValueError(f"need two non-empty clips with the same channels, got {r.shape} and {e.shape}")
    return r[:n], e[:n]


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB of `[samples(, channels)]` audio, averaged over channels."""
    r, e = _pair(reference, estimate)
    values = []
    for c in range(r.shape[1]):
        energy = float(r[:, c] @ r[:, c])
        if energy == 0.0:
            continue  # a silent reference channel has no SDR
        target = (float(e[:, c] @ r[:, c]) / energy) * r[:, c]
        noise = e[:, c] - target
        values.append(10 * np.log10(max(float(target @ target), 1e-20) / max(float(noise @ noise), 1e-20)))
    return float(np.mean(values)) if values else float("nan")


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Mean |log10 mel power difference| (see the module docstring)."""
    import librosa

    r, e = _pair(reference, estimate)
    total = 0.0
    for c in range(r.shape[1]):
        mels = [
            librosa.feature.melspectrogram(y=x[:, c], sr=sample_rate, n_fft=2048, hop_length=512, n_mels=128)
            for x in (r, e)
        ]
        total += float(np.mean(np.abs(np.log10(mels[0] + 1e-5) - np.log10(mels[1] + 1e-5))))
    return total / r.shape[1]


def silent_frame_output_db(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """RMS level (dBFS) of `estimate` over the frames where `reference` is below -80 dBFS."""
    r, e = _pair(reference, estimate)
    frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
    silent = frame_rms_db(r, frame) < SILENT_FRAME_DB
    if not silent.any():
        return None
    power = 10 ** (frame_rms_db(e, frame)[silent] / 10)
    return float(10 * np.log10(max(float(power.mean()), 1e-20)))


def empty_band_output_db(reference: np.ndarray, estimate: np.ndarray, n_fft: int = 2048) -> float | None:
    """Mean STFT power (dB) of `estimate` in the bins where `reference`'s power is below -100 dB
    (channel mean signals; the same Hann-windowed STFT as the mel front end)."""
    from scipy import signal

    r, e = _pair(reference, estimate)
    powers = []
    for x in (r.mean(axis=1), e.mean(axis=1)):
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        _, _, spec = signal.stft(x, nperseg=n_fft, noverlap=n_fft - n_fft // 4, boundary=None, padded=False)
        powers.append(np.abs(spec) ** 2)
    empty = 10 * np.log10(powers[0] + 1e-30) < EMPTY_BIN_DB
    if not empty.any():
        return None
    return float(10 * np.log10(max(float(powers[1][empty].mean()), 1e-30)))
