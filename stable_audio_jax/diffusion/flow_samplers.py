"""Samplers for rectified-flow models, each one `jax.lax.scan` over its steps.

A *velocity model* maps `x` `[batch, ...]` and times `t` `[batch]` (1 = noise, 0 = data) to the
predicted velocity `noise - x0`, shaped like `x` (`flow.denoised` turns it into a data
estimate). A sampler walks a decreasing grid of times `ts` `[steps + 1]` (usually ending in 0:
`flow.sampling_times`, or `flow.linear_times` for rk4, as the reference builds them) from
`x_init`, which is noise, or `(1 - ts[0]) init + ts[0] noise` for audio-to-audio.

The samplers mirror stable-audio-tools 0.0.19 `inference/sampling.py` (names as its
`sample_rf` `sampler_type`):
  euler     `x <- x + (t' - t) v(x, t)` (`sample_discrete_euler`).
  rk4       classic 4th-order Runge-Kutta on `dx/dt = v`, four calls per step (`sample_rk4`).
  dpmpp     DPM-Solver++ in the flow's log-SNR `lambda = log((1 - t)/t)`: first order at the
            first step and on a step to t = 0, second order (from the previous data
            estimate) otherwise (`sample_flow_dpmpp`).
  pingpong  denoise, then re-noise to the next time with fresh noise: `x <- (1 - t') D + t' z`
            (`sample_flow_pingpong`), what few-step (ARC-trained) models use; it draws one
            `x`-shaped normal per step (the last one is multiplied by t' = 0).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from stable_audio_jax.diffusion import flow
from stable_audio_jax.diffusion.samplers import StepCallback, UnknownSamplerError, draw_noise, scan_steps

VelocityModel = Callable[[jax.Array, jax.Array], jax.Array]


def _at(velocity: VelocityModel, x: jax.Array, t: jax.Array) -> jax.Array:
    """`velocity` at the step's scalar time `t`, given to the model per example, as the reference does."""
    return velocity(x, jnp.broadcast_to(t, (x.shape[0],)))


def _prepare(x_init: jax.Array, ts: jax.Array) -> tuple[jax.Array, jax.Array]:
    ts = jnp.asarray(ts, jnp.float32)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be 1-D with at least 2 entries, got shape {ts.shape}")
    return jnp.asarray(x_init), ts


def sample_euler(
    velocity: VelocityModel,
    x_init: jax.Array,
    ts: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
) -> jax.Array:
    """Euler steps `x + (t' - t) v(x, t)` over `ts`; `rng` is ignored. Returns `[batch, ...]`."""
    del rng
    x, ts = _prepare(x_init, ts)

    def step(x, s):
        return (x + (s["sigma_next"] - s["sigma"]) * _at(velocity, x, s["sigma"])).astype(x.dtype)

    return scan_steps(step, x, ts, None, callback)


def sample_rk4(
    velocity: VelocityModel,
    x_init: jax.Array,
    ts: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
) -> jax.Array:
    """Runge-Kutta 4 on `dx/dt = v(x, t)` over `ts`; `rng` is ignored. Returns `[batch, ...]`."""
    del rng
    x, ts = _prepare(x_init, ts)

    def step(x, s):
        t, dt = s["sigma"], s["sigma_next"] - s["sigma"]
        k1 = _at(velocity, x, t)
        k2 = _at(velocity, x + dt / 2 * k1, t + dt / 2)
        k3 = _at(velocity, x + dt / 2 * k2, t + dt / 2)
        k4 = _at(velocity, x + dt * k3, s["sigma_next"])
        return (x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)).astype(x.dtype)

    return scan_steps(step, x, ts, None, callback)


def _log_snr(t: jax.Array) -> jax.Array:
    return jnp.log((1.0 - t) / t)


def sample_dpmpp(
    velocity: VelocityModel,
    x_init: jax.Array,
    ts: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
) -> jax.Array:
    """DPM-Solver++(2M) for flows over `ts` (with `h = lambda(t') - lambda(t)`):
    `x <- (t'/t) x - (1 - t') expm1(-h) D_hat`, where `D_hat` is this step's data estimate
    at first order and `(1 + 1/2r) D - (1/2r) D_prev` (`r = h_prev / h`) at second order.
    `rng` is ignored. Returns `[batch, ...]`."""
    del rng
    x, ts = _prepare(x_init, ts)
    t_prev = jnp.concatenate([ts[:1], ts[:-2]])  # t_{i-1}; step 0 has none and runs first order

    def step(carry, s):
        x, old_denoised = carry
        t, t_next = s["sigma"], s["sigma_next"]
        d = flow.denoised(x, t, _at(velocity, x, t))
        # At t' = 0, lambda(t') = inf: expm1(-h) = -1 and the step lands on D exactly; the
        # second-order branch is then non-finite and discarded by the select below.
        h = _log_snr(t_next) - _log_snr(t)
        r = (_log_snr(t) - _log_snr(s["t_prev"])) / h
        second = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * old_denoised
        first_order = (s["index"] == 0) | (t_next == 0)
        d_hat = jnp.where(first_order, d, second)
        x = (t_next / t) * x - (1.0 - t_next) * jnp.expm1(-h) * d_hat
        return x.astype(old_denoised.dtype), d.astype(old_denoised.dtype)

    x, _ = scan_steps(step, (x, jnp.zeros_like(x)), ts, None, callback, per_step={"t_prev": t_prev})
    return x


def sample_pingpong(
    velocity: VelocityModel,
    x_init: jax.Array,
    ts: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    noise: Optional[jax.Array] = None,
) -> jax.Array:
    """Ping-pong sampling over `ts`: `D = x - t v(x, t)`, then `x <- (1 - t') D + t' z` with
    `z` fresh standard normal noise, from `rng` or given as `noise` `[steps, *x.shape]`.
    Returns `[batch, ...]`."""
    x, ts = _prepare(x_init, ts)
    z = draw_noise(rng, noise, x, ts, "pingpong")

    def step(x, s):
        d = flow.denoised(x, s["sigma"], _at(velocity, x, s["sigma"]))
        return ((1.0 - s["sigma_next"]) * d + s["sigma_next"] * s["noise"]).astype(x.dtype)

    return scan_steps(step, x, ts, z, callback)


FLOW_SAMPLERS = {"euler": sample_euler, "rk4": sample_rk4, "dpmpp": sample_dpmpp, "pingpong": sample_pingpong}
STOCHASTIC_FLOW_SAMPLERS = frozenset({"pingpong"})
# The grid each sampler takes in the reference's `sample_rf`: rk4 builds its own linear one.
LINEAR_GRID_SAMPLERS = frozenset({"rk4"})


def canonical_flow_sampler_name(name: str) -> str:
    """`name` lower-cased and checked; raises `UnknownSamplerError` listing the flow samplers."""
    key = name.strip().lower()
    if key not in FLOW_SAMPLERS:
        raise UnknownSamplerError(
            f"unknown sampler {name!r} for a rectified-flow model; choose one of {', '.join(FLOW_SAMPLERS)}"
        )
    return key


def sampler_times(
    sampler: str,
    steps: int,
    sigma_max: float = 1.0,
    *,
    shift: flow.DistributionShift | None = None,
    length: int | None = None,
) -> jax.Array:
    """The time grid `[steps + 1]` the reference's `sample_rf` hands `sampler`."""
    if canonical_flow_sampler_name(sampler) in LINEAR_GRID_SAMPLERS:
        return flow.linear_times(steps, sigma_max, shift, length)
    return flow.sampling_times(steps, sigma_max)


def sample(
    velocity: VelocityModel,
    x_init: jax.Array,
    ts: jax.Array,
    *,
    sampler: str,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    noise: Optional[jax.Array] = None,
) -> jax.Array:
    """Runs the flow sampler named `sampler` (static under `jit`); `rng` or `noise` for
    pingpong, as in `sample_pingpong`. Returns `[batch, ...]`."""
    name = canonical_flow_sampler_name(sampler)
    if noise is None:
        return FLOW_SAMPLERS[name](velocity, x_init, ts, rng=rng, callback=callback)
    if name not in STOCHASTIC_FLOW_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is deterministic and takes no noise")
    return FLOW_SAMPLERS[name](velocity, x_init, ts, rng=rng, callback=callback, noise=noise)
