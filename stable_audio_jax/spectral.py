"""Signal processing that models and losses share: the STFT (`torch.stft` conventions) and
A-weighting FIR filtering.

Signals are channels last (`[batch, time]`, or `[batch, time, channels]` for `apply_fir`);
everything runs in float32, is jittable and differentiable. Used by the mel front end
(`models/mel.py`), the discriminator (`models/discriminator.py`) and the MR-STFT loss
(`losses/stft.py`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal


def hann_window(win_length: int, n_fft: int | None = None) -> np.ndarray:
    """Periodic Hann window (`torch.hann_window`'s default), float32 `[n_fft]`.

    A window shorter than `n_fft` is zero-padded on both sides to `n_fft`, centred as
    `torch.stft` does.
    """
    n_fft = win_length if n_fft is None else n_fft
    if win_length > n_fft:
        raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left)).astype(np.float32)


def _frame(x: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
    """Overlapping frames `[batch, frames, frame_length]` of `x` `[batch, time]`.

    Built from hop-sized chunks with slices and a concatenation rather than a gather,
    so the backward pass is a cheap sum of pads instead of a scatter-add.
    """
    time = x.shape[-1]
    if time < frame_length:
        raise ValueError(f"signal of length {time} is shorter than one frame ({frame_length})")
    num_frames = 1 + (time - frame_length) // hop_length
    chunks_per_frame = -(-frame_length // hop_length)
    num_chunks = num_frames + chunks_per_frame - 1
    # Samples past the last full frame only fill the tail chunk and are cut off below.
    needed = num_chunks * hop_length
    x = jnp.pad(x, ((0, 0), (0, max(0, needed - time))))[:, :needed]
    chunks = x.reshape(x.shape[0], num_chunks, hop_length)
    frames = jnp.concatenate([chunks[:, i : i + num_frames] for i in range(chunks_per_frame)], axis=-1)
    return frames[..., :frame_length]


def stft(
    x: jax.Array,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    *,
    center: bool,
    normalized: bool = False,
) -> jax.Array:
    """Complex STFT with a periodic Hann window.

    Args:
      x: `[batch, time]` real signal (computed in float32).
      n_fft, hop_length, win_length: as in `torch.stft` (`win_length` defaults to n_fft).
      center: reflect-pad `n_fft // 2` samples at both ends first (`torch.stft`'s
        default, used by the MR-STFT loss); `False` is the discriminator's framing.
      normalized: divide by `sqrt(sum(window^2))`, torchaudio's `Spectrogram(normalized=
        True)` convention (not `torch.stft`'s `1/sqrt(n_fft)`), as in the EnCodec
        discriminator.

    Returns:
      complex64 `[batch, frames, n_fft // 2 + 1]`, with `frames = 1 + time // hop` when
      centred and `1 + (time - n_fft) // hop` otherwise.
    """
    window = hann_window(win_length or n_fft, n_fft)
    x = x.astype(jnp.float32)
    if center:
        pad = n_fft // 2
        x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    frames = _frame(x, n_fft, hop_length) * jnp.asarray(window)
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)
    if normalized:
        spec = spec * np.float32(1.0 / math.sqrt(float(np.sum(np.square(window, dtype=np.float64)))))
    return spec.astype(jnp.complex64)


# IEC/CD 1672 analog A-weighting: pole frequencies (Hz) and the gain (dB) that makes the
# response 0 dB at 1 kHz.
_A_WEIGHTING_POLES_HZ = (20.598997, 107.65265, 737.86223, 12194.217)
_A_WEIGHTING_1KHZ_GAIN_DB = 1.9997


@functools.lru_cache(maxsize=None)
def a_weighting_fir(sample_rate: int = 44100, num_taps: int = 101) -> np.ndarray:
    """Linear-phase FIR approximating A-weighting at `sample_rate`, float32 `[num_taps]`.

    The analog A-curve is mapped to a digital IIR by the bilinear transform, its magnitude
    sampled at 512 frequencies, and a `num_taps`-tap FIR least-squares fitted to that
    magnitude. Cached; the returned array is read-only.
    """
    if num_taps % 2 == 0:
        raise ValueError(f"num_taps must be odd, got {num_taps}")
    f1, f2, f3, f4 = (2.0 * np.pi * f for f in _A_WEIGHTING_POLES_HZ)
    numerator = [f4**2 * 10.0 ** (_A_WEIGHTING_1KHZ_GAIN_DB / 20.0), 0.0, 0.0, 0.0, 0.0]
    # Double poles at f1 and f4, single poles at f2 and f3.
    denominator = np.polymul([1.0, 2.0 * f4, f4**2], [1.0, 2.0 * f1, f1**2])
    denominator = np.polymul(np.polymul(denominator, [1.0, f3]), [1.0, f2])
    b, a = scipy.signal.bilinear(numerator, denominator, fs=sample_rate)
    freqs, response = scipy.signal.freqz(b, a, worN=512, fs=sample_rate)
    taps = scipy.signal.firls(num_taps, freqs, np.abs(response), fs=sample_rate)
    taps = taps.astype(np.float32)
    taps.setflags(write=False)
    return taps


def apply_fir(x: jax.Array, taps: np.ndarray | jax.Array) -> jax.Array:
    """Filter each channel of `x` `[batch, time, channels]` with `taps` `[num_taps]`.

    'Same'-length output with `num_taps // 2` zeros padded at both ends; a correlation
    (no kernel flip), like PyTorch's `conv1d`, which is the same for symmetric taps.
    """
    x = x.astype(jnp.float32)
    num_taps = taps.shape[0]
    channels = x.shape[-1]
    # One depthwise conv: the same kernel for every channel.
    kernel = jnp.broadcast_to(jnp.asarray(taps, jnp.float32)[:, None, None], (num_taps, 1, channels))
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=[(num_taps // 2, num_taps // 2)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST,
    )
