"""The cosine ("v-diffusion") noise schedule, the v-objective and sampling sigmas.

Training works in the variance-preserving form `x_t = alpha x0 + sigma eps` with
`alpha = cos(pi t/2)`, `sigma = sin(pi t/2)` and target `v = alpha eps - sigma x0`
(stable-audio-tools' `diffusion` training wrapper). Sampling works in k-diffusion's
variance-exploding form `x = x0 + sigma_ve eps`; the two describe the
same process with `sigma_ve = sigma / alpha = tan(pi t/2)`, so `t_to_sigma`/`sigma_to_t` move
between them. All functions are pure and jit-friendly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def alpha_sigma(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Signal and noise scales of the cosine schedule: `(cos(pi t/2), sin(pi t/2))`, shapes of `t`."""
    t = jnp.asarray(t)
    angle = 0.5 * math.pi * t
    return jnp.cos(angle), jnp.sin(angle)


def t_to_sigma(t: jax.Array) -> jax.Array:
    """Variance-exploding noise level for time `t` in [0, 1]: `tan(pi t/2)`, shape of `t`.

    At t = 1 (pure noise, no signal left) the result is `+inf`, the limit, and
    `sigma_to_t(inf) = 1` inverts it; it is not clipped, because any finite stand-in would be
    an arbitrary noise level. Samplers need a finite top: `polyexponential_sigmas` refuses an
    infinite `sigma_max`. Written naively, `tan` at float32 `pi/2` (which rounds above pi/2)
    is about -2.3e7; here the upper half of [0, 1] uses `1/tan(pi (1 - t)/2)`, where
    `1 - t` is exact, so the result is non-negative and increasing on all of [0, 1].
    """
    t = jnp.asarray(t)
    upper = t > 0.5
    angle = 0.5 * math.pi * jnp.where(upper, 1.0 - t, t)  # in [0, pi/4]
    return jnp.where(upper, 1.0 / jnp.tan(angle), jnp.tan(angle))


def sigma_to_t(sigma: jax.Array) -> jax.Array:
    """Inverse of `t_to_sigma`: `(2/pi) atan(sigma)`, the time the model is conditioned on."""
    return jnp.arctan(jnp.asarray(sigma)) * (2.0 / math.pi)


def _per_example(scale: jax.Array, like: jax.Array) -> jax.Array:
    """Reshapes a `[batch]` scale to `[batch, 1, ..., 1]` so it broadcasts against `like`."""
    return jnp.reshape(scale, scale.shape + (1,) * (like.ndim - scale.ndim)).astype(like.dtype)


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """Noised input `x_t = alpha x0 + sigma noise`.

    Args:
      x0: clean latents `[batch, ...]` (e.g. `[batch, frames, channels]`).
      noise: standard Gaussian noise, the shape of `x0`.
      t: `[batch]` times in [0, 1], broadcast over the remaining axes.
    """
    alpha, sigma = alpha_sigma(t)
    return _per_example(alpha, x0) * x0 + _per_example(sigma, x0) * noise


def v_target(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """The v-objective's regression target `alpha noise - sigma x0`; shapes as in `add_noise`.

    Together with `x_t` it determines the data exactly: `x0 = alpha x_t - sigma v`.
    """
    alpha, sigma = alpha_sigma(t)
    return _per_example(alpha, x0) * noise - _per_example(sigma, x0) * x0


def sample_training_times(rng: jax.Array, batch_size: int) -> jax.Array:
    """Diffusion times for one training batch: `[batch_size]` float32 in [0, 1).

    The reference draws them from a scrambled 1-D Sobol sequence, which spreads a batch
    evenly over [0, 1) and so lowers the variance of the batch loss. A 1-D stratified draw
    has the same property and needs no sequence state: the batch takes one point in each of
    the `batch_size` equal strata, `(u + i/batch_size) mod 1` with a single uniform offset
    `u`, and a random permutation decides which example gets which stratum. Each `t` is
    still marginally U[0, 1).
    """
    offset_rng, perm_rng = jax.random.split(rng)
    offset = jax.random.uniform(offset_rng, (), jnp.float32)
    strata = jax.random.permutation(perm_rng, batch_size).astype(jnp.float32) / batch_size
    return jnp.mod(offset + strata, 1.0)


def polyexponential_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> jax.Array:
    """Sampling noise levels `[steps + 1]` float32, from `sigma_max` down to `sigma_min`, then 0.

    The log of sigma is interpolated with a ramp running from 1 to 0 raised to `rho`:
    `log sigma_i = ramp_i^rho (log sigma_max - log sigma_min) + log sigma_min`. With `rho = 1`
    (the reference setting) the sigmas are log-linear, i.e. a constant ratio per step. The
    final 0 makes the last sampler step land on the denoised prediction.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < sigma_min <= sigma_max < math.inf:
        raise ValueError(f"need 0 < sigma_min <= sigma_max < inf, got {sigma_min}, {sigma_max}")
    ramp = jnp.linspace(1.0, 0.0, steps, dtype=jnp.float32)  # [1.] when steps == 1
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    sigmas = jnp.exp(ramp**rho * (log_max - log_min) + log_min)
    return jnp.concatenate([sigmas, jnp.zeros((1,), jnp.float32)])
