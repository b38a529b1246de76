"""Samplers for the v-objective diffusion models, in k-diffusion's variance-exploding form.

A *denoiser* maps a noisy input `x = x0 + sigma eps` and its noise level to an estimate of
`x0`: `denoise(x, sigma) -> x0_hat`, with `x` `[batch, ...]` (latents `[batch, frames,
channels]`) and `sigma` a scalar array. `v_denoiser` builds one from a v-prediction network
(SPEC 4.2). A sampler walks a decreasing sequence of noise levels `sigmas` (the last usually 0,
see `schedule.polyexponential_sigmas`) from an already scaled starting point `x_init` (noise
times `sigmas[0]`, or init latents plus noise for audio-to-audio) and returns the final `x0`.

Every sampler is one `jax.lax.scan` over its steps, carrying the previous denoised outputs that
multistep methods need, so `jax.jit` of a sampler compiles the whole loop, model included, into
one program whose size does not grow with the number of steps. Stochastic samplers draw all
their noise up front from `rng` (`[steps, *x.shape]`); the reference uses a Brownian tree
whose increments have the same distribution, so results match it in law, not bit for bit.
They also accept that noise ready-made (`noise=`), which reproduces a reference run that was
given the same per-step noise (tests/test_sampler_parity.py).

Writing `h = log sigma_i - log sigma_{i+1}` (the step in log-SNR time `-log sigma`), the
samplers are:
  euler         Euler on the probability-flow ODE `dx/dsigma = (x - D)/sigma`.
  ddim          DDIM (the reference's "v-ddim"): `x' = D + (sigma'/sigma)(x - D)`, which is
                also DPM-Solver++ of order 1, the exact solution if D were constant.
  dpmpp_2m      DPM-Solver++(2M): order 1 plus a correction from the previous D.
  dpmpp_2m_sde  DPM-Solver++(2M) SDE (eta 1, midpoint form): the reference `sample_k` default.
  dpmpp_3m_sde  DPM-Solver++(3M) SDE (eta 1): the Gradio and model-card default, SPEC 4.2.
All use one denoiser call per step; a step to sigma = 0 returns that step's D.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from stable_audio_jax.diffusion.schedule import sigma_to_t

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


def _scan_steps(step: Callable[[Any, dict], Any], carry: Any, sigmas: jax.Array,
                noise: Optional[jax.Array], callback: Optional[StepCallback]) -> Any:
    """Runs `step(carry, xs) -> carry` once per interval of `sigmas` in a single `lax.scan`.

    `xs` holds the step `index`, `sigma`, `sigma_next` and, for SDE samplers, that step's
    `noise` (`x`-shaped standard normal).
    """
    num_steps = sigmas.shape[0] - 1
    xs = {"index": jnp.arange(num_steps), "sigma": sigmas[:-1], "sigma_next": sigmas[1:]}
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


def _draw_noise(rng: Optional[jax.Array], noise: Optional[jax.Array], x: jax.Array, sigmas: jax.Array,
                name: str) -> jax.Array:
    """All of a stochastic sampler's noise, `[num_steps, *x.shape]` standard normal: `noise`
    itself when given (shape-checked), else drawn from `rng`."""
    shape = (sigmas.shape[0] - 1,) + x.shape
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"sampler {name!r}: noise must have shape [num_steps, *x.shape] = {shape}, "
                             f"got {tuple(noise.shape)}")
        return jnp.asarray(noise, x.dtype)
    if rng is None:
        raise ValueError(f"sampler {name!r} is stochastic: pass rng=jax.random.key(...) or noise=")
    return jax.random.normal(rng, shape, x.dtype)


def sample_euler(denoise: Denoiser, x_init: jax.Array, sigmas: jax.Array, *,
                 rng: Optional[jax.Array] = None,
                 callback: Optional[StepCallback] = None) -> jax.Array:
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

    return _scan_steps(step, x, sigmas, None, callback)


def sample_ddim(denoise: Denoiser, x_init: jax.Array, sigmas: jax.Array, *,
                rng: Optional[jax.Array] = None,
                callback: Optional[StepCallback] = None) -> jax.Array:
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

    return _scan_steps(step, x, sigmas, None, callback)


def sample_dpmpp_2m(denoise: Denoiser, x_init: jax.Array, sigmas: jax.Array, *,
                    rng: Optional[jax.Array] = None,
                    callback: Optional[StepCallback] = None) -> jax.Array:
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
    return _scan_steps(step, carry, sigmas, None, callback)[0]


def sample_dpmpp_2m_sde(denoise: Denoiser, x_init: jax.Array, sigmas: jax.Array, *,
                        rng: Optional[jax.Array] = None,
                        callback: Optional[StepCallback] = None,
                        noise: Optional[jax.Array] = None) -> jax.Array:
    """DPM-Solver++(2M) SDE with eta = 1, s_noise = 1 and the midpoint correction.

    Per step, with `h = log sigma - log sigma'` and `e = e^{-2h} = (sigma'/sigma)^2`:
    `x <- e x + (1 - e) D + [(1 - e)/2 (h/h_prev) (D - D_prev)] + sigma' sqrt(1 - e) n`,
    the bracket from the second step on and `n` i.i.d. standard normal. A step to sigma = 0
    returns `D`. Arguments as in `sample_euler`, plus the noise: `rng`, or `noise`
    `[num_steps, *x.shape]` standard normal (slice i is step i's `n`; the last step's is unused).
    """
    x, sigmas = _prepare(x_init, sigmas)
    noise = _draw_noise(rng, noise, x, sigmas, "dpmpp_2m_sde")

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
    return _scan_steps(step, carry, sigmas, noise, callback)[0]


def sample_dpmpp_3m_sde(denoise: Denoiser, x_init: jax.Array, sigmas: jax.Array, *,
                        rng: Optional[jax.Array] = None,
                        callback: Optional[StepCallback] = None,
                        noise: Optional[jax.Array] = None) -> jax.Array:
    """DPM-Solver++(3M) SDE with eta = 1, s_noise = 1 (SPEC 4.2).

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
    noise = _draw_noise(rng, noise, x, sigmas, "dpmpp_3m_sde")

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
        correction = jnp.where(index >= 2, phi_2 * d1 - phi_3 * d2,
                               jnp.where(index == 1, phi_2 * diff_0, 0.0))
        x_new = x_new + correction + safe_next * jnp.sqrt(-jnp.expm1(-2.0 * h)) * s["noise"]
        x = jnp.where(sigma_next > 0, x_new, denoised)
        dtype = carry[0].dtype
        return x.astype(dtype), denoised.astype(dtype), denoised_1, h, h_1

    one = jnp.ones((), jnp.float32)  # placeholder step sizes, unused until history exists
    carry = (x, jnp.zeros_like(x), jnp.zeros_like(x), one, one)
    return _scan_steps(step, carry, sigmas, noise, callback)[0]


SAMPLERS: dict[str, Callable[..., jax.Array]] = {
    "euler": sample_euler,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
}
STOCHASTIC_SAMPLERS = frozenset({"dpmpp_2m_sde", "dpmpp_3m_sde"})

# The reference's spellings ("dpmpp-3m-sde", "v-ddim", "k-euler") map onto ours.
_ALIASES = {"v_ddim": "ddim", "k_euler": "euler"}


def canonical_sampler_name(name: str) -> str:
    """`name` in this module's spelling (dashes to underscores, reference aliases resolved);
    raises ValueError listing the known samplers if there is no such sampler."""
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(sorted(SAMPLERS))}")
    return key


def sample(denoise: Denoiser, x_init: jax.Array, sigmas: jax.Array, *, sampler: str,
           rng: Optional[jax.Array] = None,
           callback: Optional[StepCallback] = None,
           noise: Optional[jax.Array] = None) -> jax.Array:
    """Runs the sampler named `sampler` (a key of `SAMPLERS`, or a reference spelling such as
    "dpmpp-3m-sde").

    Args:
      denoise: `denoise(x, sigma) -> x0_hat`, e.g. `v_denoiser(guided_v_model(...))`.
      x_init: `[batch, ...]`, already scaled: `noise * sigmas[0]` (or init latents plus noise).
      sigmas: `[num_steps + 1]` decreasing noise levels, usually ending in 0.
      sampler: which sampler; `sampler` must be static under `jit`.
      rng: PRNG key, required by the SDE samplers.
      callback: optional host function called as `callback(step_index)` once per step
        through `jax.debug.callback` (e.g. to advance a progress bar); None adds nothing to
        the compiled program.
      noise: SDE samplers only, instead of `rng`: the per-step standard normal noise
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
