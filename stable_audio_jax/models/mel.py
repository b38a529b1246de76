"""The log-mel front end of the CLAP audio tower (HTSAT), in JAX.

The same transform as LAION-CLAP's torchlibrosa front end (`Spectrogram` +
`LogmelFilterBank(ref=1.0, amin=1e-10, top_db=None)`): a centred, reflect-padded STFT
with a periodic Hann window, the power spectrum, librosa's Slaney mel filterbank, and
decibels `10 * log10(max(power, 1e-10))`. Equal to `librosa.power_to_db(
librosa.feature.melspectrogram(..., center=True, pad_mode='reflect', power=2.0),
ref=1.0, amin=1e-10, top_db=None)`.

The framing is `stable_audio_jax.spectral.stft(center=True)`, which already pads
`n_fft // 2` samples by reflection at both ends and centres a short window inside
`n_fft`, as librosa does; so there is one STFT in the project.

Shapes: audio `[batch, time]` -> log-mel `[batch, frames, n_mels]`, frames last-but-one
(channels last), `frames = 1 + time // hop_length`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from stable_audio_jax.spectral import stft

# Floor of the power before the logarithm (torchlibrosa's and librosa's `amin`).
AMIN = 1e-10


@functools.lru_cache(maxsize=None)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float, htk: bool = False
) -> np.ndarray:
    """librosa's Slaney-style, Slaney-normalised mel filterbank, float32 `[n_fft // 2 + 1, n_mels]`;
    with `htk`, the HTK mel scale without normalisation (torchaudio's `MelSpectrogram` default,
    which LAION-CLAP's fusion front end uses).

    Transposed from librosa's `[n_mels, bins]` so that `power @ filterbank` maps
    channels-last spectra to channels-last mels. Cached; the array is read-only.
    """
    norm = None if htk else "slaney"
    weights = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=htk, norm=norm
    )
    weights = np.ascontiguousarray(weights.T, dtype=np.float32)
    weights.setflags(write=False)
    return weights


def log_mel_spectrogram(
    audio: jax.Array,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    win_length: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    htk: bool = False,
) -> jax.Array:
    """Log-mel power spectrogram in dB.

    Args:
      audio: `[batch, time]` mono signal (computed in float32); `time` must exceed
        `n_fft // 2` for the reflect padding.
      sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max: as in
        `librosa.feature.melspectrogram`; `htk`: see `mel_filterbank`.

    Returns:
      float32 `[batch, 1 + time // hop_length, n_mels]`, `10 * log10(max(mel, 1e-10))`.
    """
    if audio.ndim != 2:
        raise ValueError(f"expected mono audio [batch, time], got shape {audio.shape}")
    if audio.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"audio of length {audio.shape[-1]} is too short for reflect padding of n_fft // 2 = {n_fft // 2} samples"
        )
    spec = stft(audio.astype(jnp.float32), n_fft, hop_length, win_length, center=True)
    power = jnp.square(spec.real) + jnp.square(spec.imag)  # [batch, frames, bins]
    filterbank = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, float(f_min), float(f_max), htk))
    # HIGHEST: the default matmul precision on TPU/GPU (bf16 or TF32 passes, relative
    # errors 1e-3..1e-2) would cost up to a few hundredths of a dB; float32 stays within
    # 1e-4 dB of librosa.
    mel = jnp.matmul(power, filterbank, precision=jax.lax.Precision.HIGHEST)
    return 10.0 * jnp.log10(jnp.maximum(mel, AMIN))
