"""Rectified flow: the straight path from data to noise, its training times and its sampling grid.

A rectified-flow model is trained on `x_t = (1 - t) x0 + t noise` to predict the velocity
`noise - x0` (stable-audio-tools 0.0.19, `training/diffusion.py`, objectives
"rectified_flow" and "rf_denoiser", which train identically). `x_t - t v` is then its estimate
of the data. Times: `t = 1` is pure noise, `t = 0` clean data. Arrays are `[batch, frames,
channels]` latents and `[batch]` times.

Training times come from one of `TIMESTEP_SAMPLERS` (the reference's `timestep_sampler`), then
optionally a `DistributionShift` that moves them towards the noise end for longer sequences
(the reference's `inference/sampling.py: DistributionShift`). Each sampler is a fixed map of
one standard-normal (or uniform) draw per example, `times_from_draws`, so a test can feed it
the reference's draws.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri

from stable_audio_jax.errors import UserError

TIMESTEP_SAMPLERS = ("uniform", "logit_normal", "trunc_logit_normal", "log_snr")
# `truncated_logistic_normal_rescaled`'s defaults: the lowest 7.5% of t is cut off, then the
# rest rescaled to [0, 1).
_TRUNC_LEFT = 0.075
# `sample_timesteps_logsnr`: times are clamped away from 0 and 1.
_LOG_SNR_CLAMP = 1e-4


def _per_example(t: jax.Array, like: jax.Array) -> jax.Array:
    return jnp.reshape(t, t.shape + (1,) * (like.ndim - t.ndim)).astype(like.dtype)


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """`x_t = (1 - t) x0 + t noise` for `x0`, `noise` `[batch, ...]` and `t` `[batch]` in [0, 1]."""
    t = _per_example(t, x0)
    return (1.0 - t) * x0 + t * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
    """The regression target `noise - x0` (the path's constant velocity `dx_t / dt`)."""
    return noise - x0


def denoised(x: jax.Array, t: jax.Array, velocity: jax.Array) -> jax.Array:
    """The data a velocity implies: `x - t v` (`t` scalar or `[batch]`)."""
    return x - _per_example(jnp.asarray(t, jnp.float32), x) * velocity


def check_timestep_sampler(name: str) -> str:
    if name not in TIMESTEP_SAMPLERS:
        raise UserError(f"unknown timestep sampler {name!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}")
    return name


def times_from_draws(
    draws: jax.Array, sampler: str, *, mean_logsnr: float = -1.2, std_logsnr: float = 2.0
) -> jax.Array:
    """Training times `[batch]` in [0, 1] from one draw per example.

    `draws` are U[0, 1) for "uniform" (returned as they are) and standard normals otherwise:
      logit_normal        `sigmoid(z)`
      trunc_logit_normal  `1 - (sigmoid(Phi^-1(a + (1 - a) Phi(z))) - 0.075) / 0.925`, with
                          `a = Phi(logit(0.075))`: a logit-normal with its lowest 7.5%
                          cut off and the rest stretched to [0, 1), then flipped so the
                          mass leans towards the data end (`1 - t`, as the reference does)
      log_snr             `sigmoid(-(mean + std z))`, clamped to [1e-4, 1 - 1e-4]: the
                          log-SNR `log((1 - t)/t)` is Gaussian
    """
    check_timestep_sampler(sampler)
    draws = jnp.asarray(draws, jnp.float32)
    if sampler == "uniform":
        return draws
    if sampler == "logit_normal":
        return jax.nn.sigmoid(draws)
    if sampler == "trunc_logit_normal":
        lower = ndtr(jnp.float32(math.log(_TRUNC_LEFT / (1.0 - _TRUNC_LEFT))))
        # Phi(logit(1)) = 1: the reference's right truncation point is 1.
        truncated = jax.nn.sigmoid(ndtri(lower + (1.0 - lower) * ndtr(draws)))
        return 1.0 - (truncated - _TRUNC_LEFT) / (1.0 - _TRUNC_LEFT)
    logsnr = draws * std_logsnr + mean_logsnr
    return jnp.clip(jax.nn.sigmoid(-logsnr), _LOG_SNR_CLAMP, 1.0 - _LOG_SNR_CLAMP)


@dataclasses.dataclass(frozen=True)
class DistributionShift:
    """A length-dependent shift of times towards the noise end (the reference's
    `DistributionShift`): with `mu = -(base + (max - base)(L - min_length)/(max_length - min_length))`
    for a sequence of `L` latent frames, `t -> 1 - e^mu / (e^mu + 1/(1 - t) - 1)`, optionally
    followed by `sin(pi t / 2)`. `t = 0` and `t = 1` stay put."""

    base_shift: float = 0.5
    max_shift: float = 1.15
    min_length: int = 256
    max_length: int = 4096
    use_sine: bool = False

    def __post_init__(self):
        if self.max_length == self.min_length:
            raise UserError("distribution_shift: max_length and min_length must differ")

    def __call__(self, t: jax.Array, length: int) -> jax.Array:
        mu = -(
            self.base_shift
            + (self.max_shift - self.base_shift) * (length - self.min_length) / (self.max_length - self.min_length)
        )
        t = jnp.asarray(t, jnp.float32)
        odds = 1.0 / (1.0 - t) - 1.0  # inf at t = 1, which maps to 1
        shifted = 1.0 - math.exp(mu) / (math.exp(mu) + odds)
        return jnp.sin(shifted * (math.pi / 2)) if self.use_sine else shifted


def sampling_times(steps: int, sigma_max: float = 1.0) -> jax.Array:
    """The reference's sampling grid (`inference/sampling.py: sample_rf`), `[steps + 1]`
    float32 from `sigma_max` down to 0: even steps in log-SNR from
    `log((1 - sigma_max)/sigma_max + 1e-6)` (or -6 when `sigma_max` = 1) to 2, mapped to
    `t = sigmoid(-logsnr)`, with the ends set to exactly `sigma_max` and 0."""
    check_sampling_range(steps, sigma_max)
    logsnr_max = math.log((1.0 - sigma_max) / sigma_max + 1e-6) if sigma_max < 1 else -6.0
    t = jax.nn.sigmoid(-jnp.linspace(logsnr_max, 2.0, steps + 1, dtype=jnp.float32))
    return t.at[0].set(sigma_max).at[-1].set(0.0)


def linear_times(
    steps: int, sigma_max: float = 1.0, shift: DistributionShift | None = None, length: int | None = None
) -> jax.Array:
    """`linspace(sigma_max, 0, steps + 1)`, shifted for `length` latent frames when `shift` is
    given: the grid the reference's RK4 builds for itself (`sample_rk4`)."""
    check_sampling_range(steps, sigma_max)
    t = jnp.linspace(sigma_max, 0.0, steps + 1, dtype=jnp.float32)
    return t if shift is None else shift(t, length)


def check_sampling_range(steps: int, sigma_max: float) -> None:
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    if not 0.0 < sigma_max <= 1.0:
        raise UserError(f"sigma_max must be in (0, 1] for a rectified-flow model, got {sigma_max:g}")
