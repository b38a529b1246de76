"""Samplers for the v-objective diffusion models, in k-diffusion's variance-exploding form.

A *denoiser* maps a noisy input `x = x0 + sigma eps` and its noise level to an estimate of
`x0`: `denoise(x, sigma) -> x0_hat`, with `x` `[batch, ...]` (latents `[batch, frames,
channels]`) and `sigma` a scalar array. `v_denoiser` builds one from a v-prediction network
(k-diffusion's `external.VDenoiser`). A sampler walks a decreasing sequence of noise levels
`sigmas` (the last usually 0, see `schedule.polyexponential_sigmas`) from an already scaled
starting point `x_init` (noise times `sigmas[0]`, or init latents plus noise for
audio-to-audio) and returns the final `x0`.

Every sampler is one `jax.lax.scan` over its steps, carrying the previous denoised outputs that
multistep methods need, so `jax.jit` of a sampler compiles the whole loop, model included, into
one program whose size does not grow with the number of steps. Stochastic samplers draw all
their noise up front from `rng` (`[steps, *x.shape]`); the reference uses a Brownian tree
(SDE samplers) or fresh normals (ancestral samplers) whose increments have the same
distribution, so results match it in law, not bit for bit. They also accept that noise
ready-made (`noise=`), which reproduces a reference run that was given the same per-step
noise (tests/test_sampler_parity.py).

Writing `h = log sigma_i - log sigma_{i+1}` (the step in log-SNR time `-log sigma`), the
samplers are (names as in `SAMPLERS`; stable-audio-tools' `sample_k` spellings in brackets):
  euler              Euler on the probability-flow ODE `dx/dsigma = (x - D)/sigma`.
  ddim               ("v-ddim") DDIM: `x' = D + (sigma'/sigma)(x - D)`, which is also
                     DPM-Solver++ of order 1, the exact solution if D were constant.
  dpmpp_2m           ("dpmpp-2m") DPM-Solver++(2M): order 1 plus a correction from the
                     previous D.
  dpmpp_2m_sde       ("dpmpp-2m-sde") DPM-Solver++(2M) SDE (eta 1, midpoint form): the
                     reference `sample_k` default.
  dpmpp_3m_sde       ("dpmpp-3m-sde") DPM-Solver++(3M) SDE (eta 1): the Gradio and
                     model-card default.
  heun               ("k-heun") Heun's 2nd-order method (Karras et al. 2022, Alg. 1).
  dpm_2              ("k-dpm-2") Euler to the log-midpoint, then the full step with the
                     midpoint's slope (k-diffusion's variant of DPM-Solver-2).
  lms                ("k-lms") 4th-order linear multistep in sigma.
  euler_ancestral    ("k-euler-ancestral") Euler to `sigma_down`, then fresh noise.
  dpm_2_ancestral    ("k-dpm-2-ancestral") dpm_2's step to `sigma_down`, then noise.
  dpmpp_2s_ancestral ("k-dpmpp-2s-ancestral") DPM-Solver++(2S) to `sigma_down`, then noise.
  dpm_fast           ("k-dpm-fast") DPM-Solver (Lu et al. 2022) with fixed steps in
                     `-log sigma` and orders 3, ..., 3, then 2/1, on its own grid.
euler, ddim, the DPM-Solver++ multistep samplers, lms and euler_ancestral call the denoiser
once per step; heun, dpm_2, dpm_2_ancestral and dpmpp_2s_ancestral twice (once on a step to
sigma = 0); dpm_fast spends exactly `len(sigmas) - 1` calls in all. A step to sigma = 0
returns that step's D (up to rounding: heun, dpm_2 and the ancestral samplers take an Euler
step there), except lms's, which is its usual multistep step, as in the reference.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.diffusion.schedule import sigma_to_t
from stable_audio_jax.errors import UserError

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
VModel = Callable[[jax.Array, jax.Array], jax.Array]
StepCallback = Callable[[jax.Array], Any]


def v_denoiser(v_model: VModel) -> Denoiser:
    """Wraps a v-prediction model as a denoiser (k-diffusion's VDenoiser with sigma_data = 1).

    Args:
      v_model: `v_model(x, t) -> v`, with `x` the variance-preserving input `[batch, ...]`
        and `t` `[batch]` times in [0, 1); returns `v` shaped like `x`.

    Returns:
      `denoise(x, sigma) = c_skip x + c_out v_model(c_in x, t(sigma))` with
      `c_in = 1/sqrt(sigma^2+1)`, `c_skip = 1/(sigma^2+1)`, `c_out = -sigma/sqrt(sigma^2+1)`
      and `t = (2/pi) atan(sigma)`. `c_in x` is exactly the cosine schedule's `x_t` and the
      result is `alpha x_t - sigma_vp v`, the data the v-model implies. `sigma` may be a
      scalar or `[batch]`.
    """

    def denoise(x: jax.Array, sigma: jax.Array) -> jax.Array:
        sigma = jnp.asarray(sigma, jnp.float32)
        sigma_b = jnp.broadcast_to(sigma, (x.shape[0],))
        sigma_x = sigma_b.reshape((-1,) + (1,) * (x.ndim - 1))
        c_skip = 1.0 / (sigma_x**2 + 1.0)
        c_in = jnp.sqrt(c_skip)
        c_out = -sigma_x * c_in
        v = v_model((c_in * x).astype(x.dtype), sigma_to_t(sigma_b))
        return (c_skip * x + c_out * v).astype(x.dtype)

    return denoise


def _safe_next(sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """`sigma_next`, or a stand-in `sigma/2` where it is 0, so that log-space step sizes stay
    finite; the results computed from the stand-in are discarded by the sigma = 0 branch."""
    return jnp.where(sigma_next > 0, sigma_next, 0.5 * sigma)


def scan_steps(
    step: Callable[[Any, dict], Any],
    carry: Any,
    sigmas: jax.Array,
    noise: Optional[jax.Array],
    callback: Optional[StepCallback],
    per_step: Optional[dict[str, jax.Array]] = None,
) -> Any:
    """Runs `step(carry, xs) -> carry` once per interval of `sigmas` in a single `lax.scan`.

    `xs` holds the step `index`, `sigma`, `sigma_next`, for stochastic samplers that step's
    `noise` (`x`-shaped standard normal), and a slice of each array in `per_step`
    (`[num_steps, ...]`, e.g. precomputed step coefficients).
    """
    num_steps = sigmas.shape[0] - 1
    xs = {"index": jnp.arange(num_steps), "sigma": sigmas[:-1], "sigma_next": sigmas[1:], **(per_step or {})}
    if noise is not None:
        xs["noise"] = noise

    def body(carry, xs):
        if callback is not None:  # host side-effect, e.g. a progress bar; off by default
            jax.debug.callback(callback, xs["index"])
        return step(carry, xs), None

    carry, _ = jax.lax.scan(body, carry, xs)
    return carry


def _prepare(x_init: jax.Array, sigmas: jax.Array) -> tuple[jax.Array, jax.Array]:
    sigmas = jnp.asarray(sigmas, jnp.float32)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {sigmas.shape}")
    return jnp.asarray(x_init), sigmas


def draw_noise(
    rng: Optional[jax.Array], noise: Optional[jax.Array], x: jax.Array, sigmas: jax.Array, name: str
) -> jax.Array:
    """All of a stochastic sampler's noise, `[num_steps, *x.shape]` standard normal: `noise`
    itself when given (shape-checked), else drawn from `rng`."""
    shape = (sigmas.shape[0] - 1,) + x.shape
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(
                f"sampler {name!r}: noise must have shape [num_steps, *x.shape] = {shape}, got {tuple(noise.shape)}"
            )
        return jnp.asarray(noise, x.dtype)
    if rng is None:
        raise ValueError(f"sampler {name!r} is stochastic: pass rng=jax.random.key(...) or noise=")
    return jax.random.normal(rng, shape, x.dtype)


def sample_euler(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
) -> jax.Array:
    """Deterministic Euler (Karras et al. 2022, Alg. 1 without churn): `d = (x - D)/sigma`,
    `x <- x + d (sigma_next - sigma)`. `rng` is ignored.

    In this variance-exploding parameterisation the step is algebraically the DDIM step
    (`x + (x - D)(sigma'/sigma - 1) = D + (sigma'/sigma)(x - D)`); the two differ only in
    float rounding. Both are kept because users know both names.

    Args:
      denoise: `denoise(x, sigma) -> x0_hat`.
      x_init: `[batch, ...]` starting point, already scaled to `sigmas[0]`.
      sigmas: `[num_steps + 1]` decreasing noise levels.

    Returns:
      The sample, shaped like `x_init`.
    """
    del rng
    x, sigmas = _prepare(x_init, sigmas)

    def step(x, s):
        denoised = denoise(x, s["sigma"])
        slope = (x - denoised) / s["sigma"]
        return (x + slope * (s["sigma_next"] - s["sigma"])).astype(x.dtype)

    return scan_steps(step, x, sigmas, None, callback)


def sample_ddim(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
) -> jax.Array:
    """Deterministic DDIM in sigma form: `x <- D + (sigma_next/sigma)(x - D)`.

    In the variance-preserving form this is the reference's "v-ddim" step; it is also exactly
    DPM-Solver++ of order 1 (`x' = e^{-h} x + (1 - e^{-h}) D` with `e^{-h} = sigma'/sigma`).
    Arguments as in `sample_euler`; `rng` is ignored.
    """
    del rng
    x, sigmas = _prepare(x_init, sigmas)

    def step(x, s):
        denoised = denoise(x, s["sigma"])
        ratio = s["sigma_next"] / s["sigma"]
        return (denoised + ratio * (x - denoised)).astype(x.dtype)

    return scan_steps(step, x, sigmas, None, callback)


def sample_dpmpp_2m(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022), deterministic, one denoiser call per step.

    With `h_i = log sigma_i - log sigma_{i+1}` and `r = h_{i-1}/h_i`, the step uses the
    extrapolated prediction `D' = D_i + (D_i - D_{i-1})/(2r)` in the order-1 update
    `x <- (sigma'/sigma) x + (1 - sigma'/sigma) D'`. The first step (no history) and a step
    to sigma = 0 use `D_i` itself, so the last step returns `D`. Arguments as in
    `sample_euler`; `rng` is ignored.
    """
    del rng
    x, sigmas = _prepare(x_init, sigmas)

    def step(carry, s):
        x, prev_denoised, prev_h = carry
        sigma, sigma_next = s["sigma"], s["sigma_next"]
        denoised = denoise(x, sigma)
        h = jnp.log(sigma) - jnp.log(_safe_next(sigma, sigma_next))
        ratio = sigma_next / sigma
        # 1/(2r) = h / (2 h_prev); written this way it has no division by a zero h.
        extrapolated = denoised + (h / (2.0 * prev_h)) * (denoised - prev_denoised)
        use_history = (s["index"] > 0) & (sigma_next > 0)
        target = jnp.where(use_history, extrapolated, denoised)
        x = ratio * x + (1.0 - ratio) * target
        return x.astype(carry[0].dtype), denoised.astype(carry[0].dtype), h

    carry = (x, jnp.zeros_like(x), jnp.ones((), jnp.float32))
    return scan_steps(step, carry, sigmas, None, callback)[0]


def sample_dpmpp_2m_sde(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    noise: Optional[jax.Array] = None,
) -> jax.Array:
    """DPM-Solver++(2M) SDE with eta = 1, s_noise = 1 and the midpoint correction.

    Per step, with `h = log sigma - log sigma'` and `e = e^{-2h} = (sigma'/sigma)^2`:
    `x <- e x + (1 - e) D + [(1 - e)/2 (h/h_prev) (D - D_prev)] + sigma' sqrt(1 - e) n`,
    the bracket from the second step on and `n` i.i.d. standard normal. A step to sigma = 0
    returns `D`. Arguments as in `sample_euler`, plus the noise: `rng`, or `noise`
    `[num_steps, *x.shape]` standard normal (slice i is step i's `n`; the last step's is unused).
    """
    x, sigmas = _prepare(x_init, sigmas)
    noise = draw_noise(rng, noise, x, sigmas, "dpmpp_2m_sde")

    def step(carry, s):
        x, prev_denoised, prev_h = carry
        sigma, sigma_next = s["sigma"], s["sigma_next"]
        denoised = denoise(x, sigma)
        safe_next = _safe_next(sigma, sigma_next)
        h = jnp.log(sigma) - jnp.log(safe_next)
        one_minus_e = -jnp.expm1(-2.0 * h)  # 1 - e^{-2h}, accurate for small h
        x_new = (1.0 - one_minus_e) * x + one_minus_e * denoised
        correction = 0.5 * one_minus_e * (h / prev_h) * (denoised - prev_denoised)
        x_new = jnp.where(s["index"] > 0, x_new + correction, x_new)
        x_new = x_new + safe_next * jnp.sqrt(one_minus_e) * s["noise"]
        x = jnp.where(sigma_next > 0, x_new, denoised)
        return x.astype(carry[0].dtype), denoised.astype(carry[0].dtype), h

    carry = (x, jnp.zeros_like(x), jnp.ones((), jnp.float32))
    return scan_steps(step, carry, sigmas, noise, callback)[0]


def sample_dpmpp_3m_sde(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    noise: Optional[jax.Array] = None,
) -> jax.Array:
    """DPM-Solver++(3M) SDE with eta = 1, s_noise = 1 (k-diffusion `sample_dpmpp_3m_sde`).

    Per step, with `h = log sigma - log sigma'` and `g = 2h`:
    `x <- e^{-g} x + (1 - e^{-g}) D`, then a multistep correction from the last one or two
    denoised outputs, using `phi_2 = 1 + (e^{-g} - 1)/g`, `phi_3 = phi_2/g - 1/2` and the
    step ratios `r0 = h_{i-1}/h`, `r1 = h_{i-2}/h`:
      second step:  `+ phi_2 (D - D_1)/r0`
      later steps:  `+ phi_2 d1 - phi_3 d2`, with `a = (D - D_1)/r0`, `b = (D_1 - D_2)/r1`,
                    `d1 = a + (a - b) r0/(r0 + r1)`, `d2 = (a - b)/(r0 + r1)`,
    then noise `sigma' sqrt(1 - e^{-2h}) n`. A step to sigma = 0 returns `D`. Arguments as in
    `sample_dpmpp_2m_sde` (`rng` or `noise`).
    """
    x, sigmas = _prepare(x_init, sigmas)
    noise = draw_noise(rng, noise, x, sigmas, "dpmpp_3m_sde")

    def step(carry, s):
        x, denoised_1, denoised_2, h_1, h_2 = carry
        sigma, sigma_next, index = s["sigma"], s["sigma_next"], s["index"]
        denoised = denoise(x, sigma)
        safe_next = _safe_next(sigma, sigma_next)
        h = jnp.log(sigma) - jnp.log(safe_next)
        g = 2.0 * h  # h_eta = (eta + 1) h with eta = 1
        x_new = jnp.exp(-g) * x - jnp.expm1(-g) * denoised
        phi_2 = jnp.expm1(-g) / g + 1.0
        phi_3 = phi_2 / g - 0.5
        r0, r1 = h_1 / h, h_2 / h
        diff_0 = (denoised - denoised_1) / r0
        diff_1 = (denoised_1 - denoised_2) / r1
        d1 = diff_0 + (diff_0 - diff_1) * (r0 / (r0 + r1))
        d2 = (diff_0 - diff_1) / (r0 + r1)
        correction = jnp.where(index >= 2, phi_2 * d1 - phi_3 * d2, jnp.where(index == 1, phi_2 * diff_0, 0.0))
        x_new = x_new + correction + safe_next * jnp.sqrt(-jnp.expm1(-2.0 * h)) * s["noise"]
        x = jnp.where(sigma_next > 0, x_new, denoised)
        dtype = carry[0].dtype
        return x.astype(dtype), denoised.astype(dtype), denoised_1, h, h_1

    one = jnp.ones((), jnp.float32)  # placeholder step sizes, unused until history exists
    carry = (x, jnp.zeros_like(x), jnp.zeros_like(x), one, one)
    return scan_steps(step, carry, sigmas, noise, callback)[0]


# ------------------------------------------------------------- moves of the k-diffusion samplers
# A move goes from `sigma` to `sigma_to > 0` given `denoised = denoise(x, sigma)`; the
# two-stage ones call the denoiser once more on the way. Several samplers share them: the
# deterministic and ancestral samplers differ only in where the move ends (`sigma_next`, or
# `sigma_down` before fresh noise), and DPM-Solver's order-1/2 steps are the Euler and dpm_2
# moves.
Move = Callable[[Denoiser, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _slope(x: jax.Array, denoised: jax.Array, sigma: jax.Array) -> jax.Array:
    """The probability-flow ODE's `dx/dsigma = (x - D)/sigma`; also DPM-Solver's noise
    prediction `eps`."""
    return (x - denoised) / sigma


def _log_midpoint(sigma: jax.Array, sigma_to: jax.Array) -> jax.Array:
    """`sqrt(sigma sigma_to)`, halfway between the two in `log sigma`."""
    return jnp.exp(0.5 * (jnp.log(sigma) + jnp.log(sigma_to)))


def _euler_move(
    denoise: Denoiser, x: jax.Array, denoised: jax.Array, sigma: jax.Array, sigma_to: jax.Array
) -> jax.Array:
    """One Euler step; to `sigma_to = 0` it lands on `denoised`."""
    del denoise
    return x + _slope(x, denoised, sigma) * (sigma_to - sigma)


def _heun_move(
    denoise: Denoiser, x: jax.Array, denoised: jax.Array, sigma: jax.Array, sigma_to: jax.Array
) -> jax.Array:
    """Heun (Karras et al. 2022, Alg. 1): an Euler predictor, then the step with the mean of
    the slopes at both ends."""
    slope = _slope(x, denoised, sigma)
    predicted = x + slope * (sigma_to - sigma)
    slope_end = _slope(predicted, denoise(predicted, sigma_to), sigma_to)
    return x + 0.5 * (slope + slope_end) * (sigma_to - sigma)


def _dpm_2_move(
    denoise: Denoiser, x: jax.Array, denoised: jax.Array, sigma: jax.Array, sigma_to: jax.Array
) -> jax.Array:
    """Euler to the log-midpoint, then the whole step with the midpoint's slope.

    This is also DPM-Solver-2 (Lu et al. 2022, r1 = 1/2) in its noise-prediction form:
    there `sigma_to (e^h - 1) = sigma - sigma_to`, so its two updates are these Euler steps.
    """
    sigma_mid = _log_midpoint(sigma, sigma_to)
    x_mid = x + _slope(x, denoised, sigma) * (sigma_mid - sigma)
    return x + _slope(x_mid, denoise(x_mid, sigma_mid), sigma_mid) * (sigma_to - sigma)


def _dpmpp_2s_move(
    denoise: Denoiser, x: jax.Array, denoised: jax.Array, sigma: jax.Array, sigma_to: jax.Array
) -> jax.Array:
    """DPM-Solver++(2S) (Lu et al. 2022b, r = 1/2): the data-prediction update
    `x' = (s'/s) x + (1 - s'/s) D` to the log-midpoint with `D`, then over the whole step
    with the midpoint's `D`."""
    sigma_mid = _log_midpoint(sigma, sigma_to)
    h = jnp.log(sigma) - jnp.log(sigma_to)
    x_mid = (sigma_mid / sigma) * x - jnp.expm1(-0.5 * h) * denoised
    return (sigma_to / sigma) * x - jnp.expm1(-h) * denoise(x_mid, sigma_mid)


def _dpm_solver_3_move(
    denoise: Denoiser, x: jax.Array, denoised: jax.Array, sigma: jax.Array, sigma_to: jax.Array
) -> jax.Array:
    """DPM-Solver-3 (Lu et al. 2022, Alg. 2 with r1 = 1/3, r2 = 2/3) on the noise prediction
    `eps = (x - D)/sigma`, with `h = log sigma - log sigma_to` the step in `-log sigma`."""
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    h = jnp.log(sigma) - jnp.log(sigma_to)
    eps = _slope(x, denoised, sigma)
    sigma_1, sigma_2 = sigma * jnp.exp(-r1 * h), sigma * jnp.exp(-r2 * h)
    x_1 = x - sigma_1 * jnp.expm1(r1 * h) * eps
    eps_1 = _slope(x_1, denoise(x_1, sigma_1), sigma_1)
    x_2 = (
        x
        - sigma_2 * jnp.expm1(r2 * h) * eps
        - sigma_2 * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * (eps_1 - eps)
    )
    eps_2 = _slope(x_2, denoise(x_2, sigma_2), sigma_2)
    return x - sigma_to * jnp.expm1(h) * eps - (sigma_to / r2) * (jnp.expm1(h) / h - 1.0) * (eps_2 - eps)


def _eta_noise(
    name: str,
    eta: float,
    s_noise: float,
    rng: Optional[jax.Array],
    noise: Optional[jax.Array],
    x: jax.Array,
    sigmas: jax.Array,
) -> Optional[jax.Array]:
    """The noise of a sampler with an `eta` option: `draw_noise`'s `[num_steps, *x.shape]`
    for eta > 0, None for eta = 0 (deterministic, so given noise is an error)."""
    if eta < 0 or s_noise < 0:
        raise ValueError(f"sampler {name!r}: eta and s_noise must be >= 0, got eta={eta}, s_noise={s_noise}")
    if eta > 0:
        return draw_noise(rng, noise, x, sigmas, name)
    if noise is not None:
        raise ValueError(f"sampler {name!r} with eta = 0 is deterministic and takes no noise")
    return None


def _ancestral_step(sigma: jax.Array, sigma_next: jax.Array, eta: float) -> tuple[jax.Array, jax.Array]:
    """Splits a step to `sigma_next` into a deterministic move to `sigma_down` and fresh
    noise of std `sigma_up`, with `sigma_down^2 + sigma_up^2 = sigma_next^2`
    (k-diffusion `get_ancestral_step`):
    `sigma_up = min(sigma_next, eta sigma_next sqrt(1 - sigma_next^2/sigma^2))`.
    eta = 0 is the deterministic step, eta = 1 the ancestral (DDPM-like) one."""
    if eta == 0:
        return sigma_next, jnp.zeros_like(sigma_next)
    sigma_up = jnp.minimum(sigma_next, eta * jnp.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return jnp.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def _sample_moves(
    move: Move,
    name: str,
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    eta: float,
    s_noise: float,
    rng: Optional[jax.Array],
    noise: Optional[jax.Array],
    callback: Optional[StepCallback],
) -> jax.Array:
    """The single-step samplers of k-diffusion (`sample_heun`, `sample_dpm_2` and the
    ancestral ones), told apart by `move` and `eta`.

    Per step: `D = denoise(x, sigma)`; `move` from `sigma` to `sigma_down` (an Euler step
    instead where `sigma_down = 0`, which lands on `D`); then, for eta > 0 and
    `sigma_next > 0`, `+ s_noise sigma_up n`. `noise` (or `rng`) gives the `n`s,
    `[num_steps, *x.shape]`; with eta = 0 there is none.
    """
    x, sigmas = _prepare(x_init, sigmas)
    noise = _eta_noise(name, eta, s_noise, rng, noise, x, sigmas)
    stochastic = noise is not None

    def step(x, s):
        sigma, sigma_next = s["sigma"], s["sigma_next"]
        denoised = denoise(x, sigma)
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        # lax.cond, not where: the two-stage moves would spend a denoiser call (and divide by
        # zero) on a step that ends at sigma = 0.
        x_new = jax.lax.cond(
            sigma_down > 0,
            functools.partial(move, denoise),
            functools.partial(_euler_move, denoise),
            x,
            denoised,
            sigma,
            sigma_down,
        )
        if stochastic:
            x_new = jnp.where(sigma_next > 0, x_new + (s_noise * sigma_up) * s["noise"], x_new)
        return x_new.astype(x.dtype)

    return scan_steps(step, x, sigmas, noise, callback)


def _move_sampler(move: Move, name: str, doc: str, *, ancestral: bool) -> Callable[..., jax.Array]:
    """The public `sample_<name>` over `_sample_moves`: deterministic (eta = 0, arguments as
    in `sample_euler`) or ancestral (also `noise`, `eta`, `s_noise`)."""
    if ancestral:

        def sampler(
            denoise: Denoiser,
            x_init: jax.Array,
            sigmas: jax.Array,
            *,
            rng: Optional[jax.Array] = None,
            callback: Optional[StepCallback] = None,
            noise: Optional[jax.Array] = None,
            eta: float = 1.0,
            s_noise: float = 1.0,
        ) -> jax.Array:
            return _sample_moves(
                move, name, denoise, x_init, sigmas, eta=eta, s_noise=s_noise, rng=rng, noise=noise, callback=callback
            )
    else:

        def sampler(
            denoise: Denoiser,
            x_init: jax.Array,
            sigmas: jax.Array,
            *,
            rng: Optional[jax.Array] = None,
            callback: Optional[StepCallback] = None,
        ) -> jax.Array:
            del rng
            return _sample_moves(
                move, name, denoise, x_init, sigmas, eta=0.0, s_noise=1.0, rng=None, noise=None, callback=callback
            )

    sampler.__name__ = sampler.__qualname__ = f"sample_{name}"
    sampler.__doc__ = doc
    return sampler


_ANCESTRAL_ARGS = """
    Arguments as in `sample_dpmpp_2m_sde` (`rng`, or `noise` `[num_steps, *x.shape]`, slice i
    for step i, the last unused), plus the static floats `eta` (>= 0; 0 is the deterministic
    sampler) and `s_noise` (the noise's scale).
    """

sample_heun = _move_sampler(
    _heun_move,
    "heun",
    """Heun's method (Karras et al. 2022, Alg. 1;
    k-diffusion `sample_heun` at its defaults, s_churn = 0): Euler to `sigma'`, denoise
    there, and redo the step with the mean of both slopes. Two denoiser calls per step, one
    (Euler) on a step to sigma = 0. Arguments as in `sample_euler`; `rng` is ignored.
    """,
    ancestral=False,
)

sample_dpm_2 = _move_sampler(
    _dpm_2_move,
    "dpm_2",
    """k-diffusion's `sample_dpm_2` (s_churn = 0):
    Euler to the log-midpoint `sqrt(sigma sigma')`, denoise there, and take the whole step
    with that slope. Two denoiser calls per step, one on a step to sigma = 0. Arguments as in
    `sample_euler`; `rng` is ignored.
    """,
    ancestral=False,
)

sample_euler_ancestral = _move_sampler(
    _euler_move,
    "euler_ancestral",
    """Ancestral Euler
    (k-diffusion `sample_euler_ancestral`): Euler to `sigma_down`, then
    `+ s_noise sigma_up n` (see `_ancestral_step`). One denoiser call per step.
    """
    + _ANCESTRAL_ARGS,
    ancestral=True,
)

sample_dpm_2_ancestral = _move_sampler(
    _dpm_2_move,
    "dpm_2_ancestral",
    """Ancestral dpm_2
    (k-diffusion `sample_dpm_2_ancestral`): `sample_dpm_2`'s step to `sigma_down`, then
    noise. With eta > 1, `sigma_down` can be 0 before the last step; the noise is added there
    too (as in the Euler and 2S ancestral samplers), where the reference's dpm_2 variant
    skips it. With eta <= 1 the two agree.
    """
    + _ANCESTRAL_ARGS,
    ancestral=True,
)

sample_dpmpp_2s_ancestral = _move_sampler(
    _dpmpp_2s_move,
    "dpmpp_2s_ancestral",
    """Ancestral
    DPM-Solver++(2S) (k-diffusion `sample_dpmpp_2s_ancestral`): the 2S step to `sigma_down`
    through its log-midpoint, then noise. Two denoiser calls per step.
    """
    + _ANCESTRAL_ARGS,
    ancestral=True,
)


# ------------------------------------------------------------------------- linear multistep


def lms_coefficients(sigmas: jax.Array, order: int = 4) -> jax.Array:
    """The weights of the linear multistep method in sigma (k-diffusion `sample_lms`).

    Step i adds `sum_j c[i, j] slope_{i-j}` for `j < min(i + 1, order)`, where `c[i, j]` is
    the integral over `[sigma_i, sigma_{i+1}]` of the Lagrange basis polynomial of node
    `sigma_{i-j}` on the nodes `sigma_i, ..., sigma_{i-min(i+1,order)+1}`. The reference
    integrates numerically (scipy `quad`); these polynomials have degree < `order`, so
    `order`-point Gauss-Legendre quadrature integrates them exactly, on the device and under
    `jit` alike.

    Args:
      sigmas: `[num_steps + 1]` noise levels.
      order: how many past slopes a step combines (>= 1).

    Returns:
      `[num_steps, order]` float32, zero where a step has fewer past slopes.
    """
    if order < 1:
        raise ValueError(f"lms order must be >= 1, got {order}")
    sigmas = jnp.asarray(sigmas, jnp.float32)
    steps = jnp.arange(sigmas.shape[0] - 1)[:, None]  # [num_steps, 1]
    lag = jnp.arange(order)  # j (or k): how many steps back
    have = lag[None, :] < jnp.minimum(steps + 1, order)  # [num_steps, order]
    node = sigmas[jnp.clip(steps - lag[None, :], 0)]  # sigma_{i-j}, [num_steps, order]
    points, weights = np.polynomial.legendre.leggauss(order)
    half = 0.5 * (sigmas[1:] - sigmas[:-1])[:, None]  # [num_steps, 1]; negative: sigma decreases
    tau = 0.5 * (sigmas[1:] + sigmas[:-1])[:, None] + half * points  # [num_steps, order]
    # Factor (tau - s_k)/(s_j - s_k) of basis j, for existing k != j; 1 elsewhere.
    uses = have[:, :, None] & have[:, None, :] & (lag[:, None] != lag[None, :])  # [steps, j, k]
    gap = jnp.where(uses, node[:, :, None] - node[:, None, :], 1.0)
    factor = jnp.where(uses[..., None], (tau[:, None, None, :] - node[:, None, :, None]) / gap[..., None], 1.0)
    basis = jnp.prod(factor, axis=2)  # [num_steps, j, quadrature point]
    return jnp.where(have, jnp.sum(basis * weights * half[:, :, None], axis=-1), 0.0)


def sample_lms(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    order: int = 4,
) -> jax.Array:
    """Linear multistep (k-diffusion `sample_lms`, order 4): the ODE in sigma integrated with
    the Lagrange polynomial through the last `order` slopes (`lms_coefficients`; lower
    order while the history is shorter). One denoiser call per step; the coefficients are
    computed before the scan. Arguments as in `sample_euler`; `order` static.
    """
    del rng
    x, sigmas = _prepare(x_init, sigmas)
    coeffs = lms_coefficients(sigmas, order)

    def step(carry, s):
        x, slopes = carry  # slopes: [order, *x.shape], newest first
        slope = _slope(x, denoise(x, s["sigma"]), s["sigma"])
        slopes = jnp.concatenate([slope[None].astype(slopes.dtype), slopes[:-1]])
        # An elementwise weighted sum, not a dot: full float32 on every backend.
        weights = s["coeffs"].reshape((order,) + (1,) * x.ndim)
        return (x + jnp.sum(weights * slopes, axis=0)).astype(x.dtype), slopes

    carry = (x, jnp.zeros((order,) + x.shape, x.dtype))
    return scan_steps(step, carry, sigmas, None, callback, {"coeffs": coeffs})[0]


# ------------------------------------------------------------------------------ DPM-fast

_DPM_SOLVER_MOVES: tuple[Move, ...] = (_euler_move, _dpm_2_move, _dpm_solver_3_move)  # orders 1, 2, 3


def dpm_fast_orders(num_calls: int) -> tuple[int, ...]:
    """The orders of DPM-Solver-fast's steps for a budget of `num_calls` denoiser calls
    (Lu et al. 2022, sec. 3.4; k-diffusion `DPMSolver.dpm_solver_fast`): `num_calls // 3 + 1`
    steps, all of order 3 except the last one or two, so that the orders sum to `num_calls`.
    """
    if num_calls < 1:
        raise ValueError(f"dpm_fast needs at least 1 denoiser call, got {num_calls}")
    steps = num_calls // 3 + 1
    if num_calls % 3 == 0:
        return (3,) * (steps - 2) + (2, 1)
    return (3,) * (steps - 1) + (num_calls % 3,)


def sample_dpm_fast(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    noise: Optional[jax.Array] = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> jax.Array:
    """DPM-Solver-fast (Lu et al. 2022; k-diffusion `sample_dpm_fast`), fixed step size.

    "Fixed-step" is in `lambda = -log sigma`, on the solver's own grid: from
    `sigma_max = sigmas[0]` to `sigma_min` = the smallest positive entry of `sigmas`,
    `len(dpm_fast_orders(n))` equal steps in lambda with those orders, where
    `n = len(sigmas) - 1` is the budget of denoiser calls (the reference counts calls, not
    steps). The other entries of `sigmas` are not used: this is what stable-audio-tools'
    `sample_k` does with ("k-dpm-fast", steps, sigma_min, sigma_max), given the polyexponential
    sigmas of the same three numbers. The solve ends at `sigma_min`, not 0, so the result keeps
    `sigma_min`'s noise, as the reference's does.

    With eta > 0 each step moves to `max(sigma_down, sigma_min)` (`_ancestral_step`) and adds
    `s_noise sqrt(sigma_next^2 - target^2) n`, except on the last step, which ends on
    `sigma_min`; `noise` (or `rng`) gives the `n`s, `[len(dpm_fast_orders(n)), *x.shape]`,
    one per step (the last unused). eta = 0 (the
    reference's and `sample_k`'s default) is deterministic. `callback` is called once per
    denoiser call (indices 0 .. n-1), as the reference's progress bar counts.
    """
    x, sigmas = _prepare(x_init, sigmas)
    orders = dpm_fast_orders(sigmas.shape[0] - 1)
    sigma_min = jnp.min(jnp.where(sigmas > 0, sigmas, jnp.inf))
    grid = jnp.exp(-jnp.linspace(-jnp.log(sigmas[0]), -jnp.log(sigma_min), len(orders) + 1))
    noise = _eta_noise("dpm_fast", eta, s_noise, rng, noise, x, grid)
    stochastic = noise is not None
    per_step = {
        "order": jnp.asarray(orders, jnp.int32) - 1,
        "first_call": jnp.asarray(np.cumsum((0,) + orders[:-1]), jnp.int32),
    }

    def branch(order: int) -> Callable[..., jax.Array]:
        def run(x, denoised, sigma, sigma_to, first_call):
            if callback is not None:  # the move's own calls; the step reported the first
                for k in range(1, order):
                    jax.debug.callback(callback, first_call + k)
            return _DPM_SOLVER_MOVES[order - 1](denoise, x, denoised, sigma, sigma_to)

        return run

    def step(x, s):
        sigma, sigma_next = s["sigma"], s["sigma_next"]
        if callback is not None:
            jax.debug.callback(callback, s["first_call"])
        denoised = denoise(x, sigma)
        target = sigma_next
        if stochastic:
            sigma_down, _ = _ancestral_step(sigma, sigma_next, eta)
            target = jnp.maximum(sigma_down, grid[-1])  # never below the grid's end
        x_new = jax.lax.switch(s["order"], [branch(o) for o in (1, 2, 3)], x, denoised, sigma, target, s["first_call"])
        if stochastic:
            # The last step ends on sigma_min itself: no noise (as in the reference, whose grid
            # ends on it exactly), which an ulp between two copies of the grid's end would add.
            sigma_up = jnp.where(
                s["index"] < len(orders) - 1, jnp.sqrt(jnp.maximum(sigma_next**2 - target**2, 0.0)), 0.0
            )
            x_new = x_new + (s_noise * sigma_up) * s["noise"]
        return x_new.astype(x.dtype)

    return scan_steps(step, x, grid, noise, None, per_step)


# ----------------------------------------------------------------------------- registry

SAMPLERS: dict[str, Callable[..., jax.Array]] = {
    "euler": sample_euler,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "heun": sample_heun,
    "lms": sample_lms,
    "dpm_2": sample_dpm_2,
    "dpm_fast": sample_dpm_fast,
    "euler_ancestral": sample_euler_ancestral,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
}
# Those that need `rng` or `noise` (dpm_fast only with eta > 0, which `sample` does not set).
STOCHASTIC_SAMPLERS = frozenset(
    {"dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"}
)

# stable-audio-tools' spellings (`sample_k`, `sample`: "v-ddim", "k-heun", ...) map onto ours.
# It has no "k-euler", "k-euler-ancestral" or "k-dpm-2-ancestral"; they are accepted in its
# pattern for the k-diffusion samplers of those names.
REFERENCE_NAMES = {
    "ddim": "v-ddim",
    "euler": "k-euler",
    "dpmpp_2m": "dpmpp-2m",
    "dpmpp_2m_sde": "dpmpp-2m-sde",
    "dpmpp_3m_sde": "dpmpp-3m-sde",
    "heun": "k-heun",
    "lms": "k-lms",
    "dpm_2": "k-dpm-2",
    "dpm_fast": "k-dpm-fast",
    "euler_ancestral": "k-euler-ancestral",
    "dpm_2_ancestral": "k-dpm-2-ancestral",
    "dpmpp_2s_ancestral": "k-dpmpp-2s-ancestral",
}
_ALIASES = {ref.replace("-", "_"): ours for ours, ref in REFERENCE_NAMES.items()}


class UnknownSamplerError(UserError, ValueError):
    """A sampler name that is neither ours nor a stable-audio-tools spelling."""


def canonical_sampler_name(name: str) -> str:
    """`name` in this module's spelling (dashes to underscores, reference spellings such as
    "k-dpm-2" or "v-ddim" resolved); raises `UnknownSamplerError` (a `UserError` and a
    `ValueError`) listing every known sampler if there is no such sampler."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in SAMPLERS:
        known = ", ".join(f"{ours} ({REFERENCE_NAMES[ours]})" for ours in sorted(SAMPLERS))
        raise UnknownSamplerError(f"unknown sampler {name!r}; known samplers (reference spelling): {known}")
    return key


def sample(
    denoise: Denoiser,
    x_init: jax.Array,
    sigmas: jax.Array,
    *,
    sampler: str,
    rng: Optional[jax.Array] = None,
    callback: Optional[StepCallback] = None,
    noise: Optional[jax.Array] = None,
) -> jax.Array:
    """Runs the sampler named `sampler` (a key of `SAMPLERS`, or a reference spelling such as
    "dpmpp-3m-sde" or "k-heun") with its default options (eta 1 for the ancestral samplers,
    0 for dpm_fast).

    Args:
      denoise: `denoise(x, sigma) -> x0_hat`, e.g. `v_denoiser(guided_v_model(...))`.
      x_init: `[batch, ...]`, already scaled: `noise * sigmas[0]` (or init latents plus noise).
      sigmas: `[num_steps + 1]` decreasing noise levels, usually ending in 0 (dpm_fast uses
        only their range and count, see `sample_dpm_fast`).
      sampler: which sampler; `sampler` must be static under `jit`.
      rng: PRNG key, required by the stochastic samplers (`STOCHASTIC_SAMPLERS`).
      callback: optional host function called as `callback(step_index)` once per step
        (dpm_fast: per denoiser call) through `jax.debug.callback` (e.g. to advance a
        progress bar); None adds nothing to the compiled program.
      noise: stochastic samplers only, instead of `rng`: the per-step standard normal noise
        `[num_steps, *x_init.shape]`, e.g. to replay a reference run's noise sequence.

    Returns:
      The final sample, shaped like `x_init`.
    """
    name = canonical_sampler_name(sampler)
    if noise is None:
        return SAMPLERS[name](denoise, x_init, sigmas, rng=rng, callback=callback)
    if name not in STOCHASTIC_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is deterministic and takes no noise")
    return SAMPLERS[name](denoise, x_init, sigmas, rng=rng, callback=callback, noise=noise)
