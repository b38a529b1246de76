"""The multi-resolution STFT reconstruction loss (the STFT itself: `spectral.py`).

This is the spectral part of the VAE generator loss (stable-audio-tools' MultiResolutionSTFTLoss), following
stable-audio-tools' copy of auraloss:

* per resolution, spectral convergence `||Y - X||_F / ||Y||_F` (one ratio per signal,
  then averaged over signals) plus the mean L1 distance of log magnitudes, where
  `mag = sqrt(max(re^2 + im^2, 1e-8))`; the resolutions are then averaged;
* optional perceptual weighting: both signals go through a 101-tap FIR fitted to the
  IEC A-weighting curve before the STFT;
* for stereo, the sum/difference loss `(L(l+r) + L(l-r)) / 2` plus down-weighted
  per-channel losses.

`X` is the prediction (the decoded audio) and `Y` the target (the real audio), so the
spectral convergence is normalised by the target, as in stable-audio-tools >= 0.0.17
(which calls the loss as `(decoded, reals)`).

Signals are channels last: mono `[batch, time]`, stereo `[batch, time, 2]`. Everything
here runs in float32, is jittable (configs are hashable and may be static arguments)
and differentiable.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from stable_audio_jax.spectral import a_weighting_fir, apply_fir, stft

# The reference configuration (SA2 / SAO VAE): 75% overlap, window = FFT size.
REFERENCE_FFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
REFERENCE_HOP_SIZES: tuple[int, ...] = (512, 256, 128, 64, 32, 16, 8)


def _magnitude(spec: jax.Array, eps: float) -> jax.Array:
    # Clamping the power (not the magnitude) keeps sqrt and log finite and gives zero
    # gradient for near-silent bins, as in the reference.
    return jnp.sqrt(jnp.maximum(jnp.square(spec.real) + jnp.square(spec.imag), eps))


CONVERGENCE_MODES = ("batch", "signal")


def _grouped_mrstft(
    pred: jax.Array,
    target: jax.Array,
    num_groups: int,
    fft_sizes: Sequence[int],
    hop_sizes: Sequence[int],
    win_lengths: Sequence[int],
    mag_eps: float,
    convergence_over: str,
) -> jax.Array:
    """MR-STFT loss per group of signals, `[num_groups]`, for `[num_groups * batch, time]` inputs.

    Spectral convergence `||Y - X||_F / ||Y||_F` is taken over each group's whole batch
    (`convergence_over='batch'`, auraloss's original form) or per signal and then
    averaged (`'signal'`, stable-audio-tools >= 0.0.17). The per-signal ratio explodes
    when a target crop is (nearly) silent: one such crop turned a loss of 5 into 800 in
    the demo, which the batch form avoids. The log-magnitude L1 is a mean either way.
    """
    if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
        raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
    if convergence_over not in CONVERGENCE_MODES:
        raise ValueError(f"convergence_over must be one of {CONVERGENCE_MODES}, got {convergence_over!r}")
    total = jnp.zeros((num_groups,), jnp.float32)
    for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths):
        pred_mag = _magnitude(stft(pred, n_fft, hop, win, center=True), mag_eps)
        target_mag = _magnitude(stft(target, n_fft, hop, win, center=True), mag_eps)
        pred_mag = pred_mag.reshape(num_groups, -1, *pred_mag.shape[1:])  # [groups, batch, frames, bins]
        target_mag = target_mag.reshape(pred_mag.shape)
        norm_axes = (1, 2, 3) if convergence_over == "batch" else (2, 3)
        convergence = jnp.sqrt(jnp.sum(jnp.square(target_mag - pred_mag), axis=norm_axes)) / jnp.sqrt(
            jnp.sum(jnp.square(target_mag), axis=norm_axes)
        )
        if convergence_over == "signal":
            convergence = jnp.mean(convergence, axis=1)
        log_mag = jnp.mean(jnp.abs(jnp.log(pred_mag) - jnp.log(target_mag)), axis=(1, 2, 3))
        total = total + convergence + log_mag
    return total / len(fft_sizes)


def multi_resolution_stft_loss(
    pred: jax.Array,
    target: jax.Array,
    *,
    fft_sizes: Sequence[int] = REFERENCE_FFT_SIZES,
    hop_sizes: Sequence[int] = REFERENCE_HOP_SIZES,
    win_lengths: Sequence[int] | None = None,
    perceptual_weighting: bool = True,
    sample_rate: int = 44100,
    fir_taps: int = 101,
    mag_eps: float = 1e-8,
    convergence_over: str = "batch",
) -> jax.Array:
    """Multi-resolution STFT loss between mono signals `pred` and `target` `[batch, time]`.

    Per resolution: spectral convergence (normalised by the target) + mean L1 of log
    magnitudes; averaged over resolutions. `win_lengths` defaults to `fft_sizes`. With
    `perceptual_weighting`, both signals are A-weighted first. Returns a float32 scalar.
    """
    if perceptual_weighting:
        taps = a_weighting_fir(sample_rate, fir_taps)
        pred = apply_fir(pred[..., None], taps)[..., 0]
        target = apply_fir(target[..., None], taps)[..., 0]
    return _grouped_mrstft(
        pred.astype(jnp.float32),
        target.astype(jnp.float32),
        1,
        fft_sizes,
        hop_sizes,
        fft_sizes if win_lengths is None else win_lengths,
        mag_eps,
        convergence_over,
    )[0]


@dataclasses.dataclass(frozen=True)
class STFTLossConfig:
    """Spectral loss settings; the defaults are the SA2/SAO VAE configuration.

    Hashable (sequences are stored as tuples), so it can be a static jit argument.

    Attributes:
      fft_sizes, hop_sizes: the STFT resolutions.
      win_lengths: window length per resolution; `None` means `fft_sizes`.
      perceptual_weighting: A-weight both signals before the STFT.
      sample_rate: for the A-weighting filter.
      fir_taps: A-weighting FIR length (odd).
      mag_eps: floor on the STFT power before the square root.
      sum_diff_weight: weight of `(L(l+r) + L(l-r)) / 2` (`spectral.weights.mrstft`).
      left_right_weight: weight of each of the left and right channel losses
        (`mrstft / 2` in the reference).
      convergence_over: 'batch' (robust to silent crops, the default) or 'signal'
        (stable-audio-tools >= 0.0.17); see `_grouped_mrstft`.
    """

    fft_sizes: tuple[int, ...] = REFERENCE_FFT_SIZES
    hop_sizes: tuple[int, ...] = REFERENCE_HOP_SIZES
    win_lengths: tuple[int, ...] | None = None
    perceptual_weighting: bool = True
    sample_rate: int = 44100
    fir_taps: int = 101
    mag_eps: float = 1e-8
    sum_diff_weight: float = 1.0
    left_right_weight: float = 0.5
    convergence_over: str = "batch"

    def __post_init__(self) -> None:
        # Lists from JSON/CLI configs would make the dataclass unhashable.
        for name in ("fft_sizes", "hop_sizes", "win_lengths"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if self.win_lengths is None:
            object.__setattr__(self, "win_lengths", self.fft_sizes)
        if not len(self.fft_sizes) == len(self.hop_sizes) == len(self.win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")

    def mrstft_kwargs(self) -> dict:
        """Keyword arguments of `multi_resolution_stft_loss` for this config."""
        return dict(
            fft_sizes=self.fft_sizes,
            hop_sizes=self.hop_sizes,
            win_lengths=self.win_lengths,
            perceptual_weighting=self.perceptual_weighting,
            sample_rate=self.sample_rate,
            fir_taps=self.fir_taps,
            mag_eps=self.mag_eps,
            convergence_over=self.convergence_over,
        )


def stereo_stft_losses(
    pred: jax.Array,
    target: jax.Array,
    config: STFTLossConfig = STFTLossConfig(),
) -> dict[str, jax.Array]:
    """Stereo spectral losses for `pred` and `target` `[batch, time, 2]`.

    Returns float32 scalars:
      'mrstft_sum_diff': `(mrstft(l+r) + mrstft(l-r)) / 2`;
      'mrstft_left', 'mrstft_right': `mrstft` of each channel;
      'spectral': `sum_diff_weight * sum_diff + left_right_weight * (left + right)`.
    """
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected two [batch, time, 2] arrays, got {pred.shape} and {target.shape}")

    def signals(audio: jax.Array) -> jax.Array:
        # The A-weighting filter is linear, so filtering l and r once also filters l+r, l-r.
        if config.perceptual_weighting:
            audio = apply_fir(audio, a_weighting_fir(config.sample_rate, config.fir_taps))
        audio = audio.astype(jnp.float32)
        left, right = audio[..., 0], audio[..., 1]
        # All four signals in one batch: one STFT per resolution instead of four.
        return jnp.concatenate([left + right, left - right, left, right], axis=0)

    sum_loss, diff_loss, left, right = _grouped_mrstft(
        signals(pred),
        signals(target),
        4,
        config.fft_sizes,
        config.hop_sizes,
        config.win_lengths,
        config.mag_eps,
        config.convergence_over,
    )
    sum_diff = (sum_loss + diff_loss) / 2
    spectral = config.sum_diff_weight * sum_diff + config.left_right_weight * (left + right)
    return {
        "mrstft_sum_diff": sum_diff,
        "mrstft_left": left,
        "mrstft_right": right,
        "spectral": spectral,
    }
