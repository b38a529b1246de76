"""Tests for the diffusion schedule, the jitted samplers and classifier-free guidance.

The samplers are checked two ways on toy data whose exact denoiser is known in closed form
(`x0 ~ N(MU, S^2)` per element): against plain float64 NumPy loops written here from the
published update rules (same sigmas, same pre-drawn noise), and by the statistics of the
samples they produce.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.diffusion import guidance, samplers, schedule

MU, S = 0.7, 0.5  # toy data: every element of x0 is N(MU, S^2), independently

SAMPLER_NAMES = ("euler", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde")  # those with a NumPy loop below
# The k-diffusion ports checked against k-diffusion itself in tests/test_sampler_parity.py.
K_DIFFUSION_NAMES = ("heun", "lms", "dpm_2", "dpm_fast", "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral")
ALL_NAMES = SAMPLER_NAMES + K_DIFFUSION_NAMES
STOCHASTIC = {"dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"}


# ----------------------------------------------------------------------------- toy models


def exact_denoiser(x, sigma):
    """E[x0 | x0 + sigma eps = x] for the toy data (works on NumPy and JAX arrays)."""
    return (S**2 * x + sigma**2 * MU) / (S**2 + sigma**2)


def exact_v_model(x_t, t):
    """E[alpha eps - sigma x0 | x_t] for the toy data, with x_t = alpha x0 + sigma eps.

    x_t ~ N(alpha MU, alpha^2 S^2 + sigma^2) jointly Gaussian with x0 and eps, so both
    posterior means are linear in the centred x_t.
    """
    alpha, sigma = schedule.alpha_sigma(t)
    alpha, sigma = alpha[:, None, None], sigma[:, None, None]
    var = alpha**2 * S**2 + sigma**2
    centred = x_t - alpha * MU
    x0_mean = MU + alpha * S**2 / var * centred
    eps_mean = sigma / var * centred
    return alpha * eps_mean - sigma * x0_mean


def wobbly_denoiser(x, sigma, np_module=jnp):
    """A nonlinear denoiser, so the sampler comparison does not rest on linearity alone."""
    return exact_denoiser(x, sigma) + 0.05 * np_module.sin(x / np_module.sqrt(1.0 + sigma**2))


# ------------------------------------------------------- float64 NumPy reference samplers


def ref_euler(denoise, x, sigmas, noise=None):
    for i in range(len(sigmas) - 1):
        d = (x - denoise(x, sigmas[i])) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def ref_ddim(denoise, x, sigmas, noise=None):
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i])
        x = x0 + (sigmas[i + 1] / sigmas[i]) * (x - x0)
    return x


def ref_dpmpp_2m(denoise, x, sigmas, noise=None):
    lam = lambda sig: -np.log(sig)  # noqa: E731 - log-SNR time
    old = None
    h_last = None
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x0
        else:
            h = lam(sigmas[i + 1]) - lam(sigmas[i])
            if old is None:
                d = x0
            else:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - np.expm1(-h) * d
            h_last = h
        old = x0
    return x


def ref_dpmpp_2m_sde(denoise, x, sigmas, noise):
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x0
        else:
            h = np.log(sigmas[i]) - np.log(sigmas[i + 1])
            x = sigmas[i + 1] / sigmas[i] * np.exp(-h) * x + (1 - np.exp(-2 * h)) * x0
            if old is not None:
                r = h_last / h
                x = x + 0.5 * (1 - np.exp(-2 * h)) * (1 / r) * (x0 - old)
            x = x + noise[i] * sigmas[i + 1] * np.sqrt(1 - np.exp(-2 * h))
            h_last = h
        old = x0
    return x


def ref_dpmpp_3m_sde(denoise, x, sigmas, noise):
    hist_x0, hist_h = [], []  # most recent first
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x0
        else:
            h = np.log(sigmas[i]) - np.log(sigmas[i + 1])
            he = 2 * h
            x = np.exp(-he) * x + (1 - np.exp(-he)) * x0
            phi2 = (np.exp(-he) - 1) / he + 1
            if len(hist_h) >= 2:
                r0, r1 = hist_h[0] / h, hist_h[1] / h
                a = (x0 - hist_x0[0]) / r0
                b = (hist_x0[0] - hist_x0[1]) / r1
                d1 = a + (a - b) * r0 / (r0 + r1)
                d2 = (a - b) / (r0 + r1)
                phi3 = phi2 / he - 0.5
                x = x + phi2 * d1 - phi3 * d2
            elif len(hist_h) == 1:
                x = x + phi2 * (x0 - hist_x0[0]) / (hist_h[0] / h)
            x = x + noise[i] * sigmas[i + 1] * np.sqrt(1 - np.exp(-2 * h))
            hist_h.insert(0, h)
        hist_x0.insert(0, x0)
    return x


REFERENCES = {
    "euler": ref_euler,
    "ddim": ref_ddim,
    "dpmpp_2m": ref_dpmpp_2m,
    "dpmpp_2m_sde": ref_dpmpp_2m_sde,
    "dpmpp_3m_sde": ref_dpmpp_3m_sde,
}


@functools.lru_cache(maxsize=None)
def jitted_sampler(name: str, denoiser_kind: str):
    denoise = {
        "wobbly": wobbly_denoiser,
        "exact": exact_denoiser,
        "v": samplers.v_denoiser(exact_v_model),
    }[denoiser_kind]
    return jax.jit(lambda x, sigmas, rng: samplers.sample(denoise, x, sigmas, sampler=name, rng=rng))


# -------------------------------------------------------------------------------- schedule


def test_polyexponential_sigmas_are_log_linear_and_end_in_zero():
    sigmas = schedule.polyexponential_sigmas(10, 0.01, 100.0)
    assert sigmas.shape == (11,) and sigmas.dtype == jnp.float32
    s = np.asarray(sigmas, np.float64)
    np.testing.assert_allclose(s[0], 100.0, rtol=1e-6)
    np.testing.assert_allclose(s[-2], 0.01, rtol=1e-5)
    assert s[-1] == 0.0
    log_steps = np.diff(np.log(s[:-1]))
    np.testing.assert_allclose(log_steps, np.log(0.01 / 100.0) / 9, rtol=1e-4)
    # rho != 1 keeps the end points but bends the log-spacing.
    bent = np.asarray(schedule.polyexponential_sigmas(10, 0.01, 100.0, rho=2.0), np.float64)
    np.testing.assert_allclose(bent[[0, -2, -1]], [100.0, 0.01, 0.0], rtol=1e-5)
    assert np.all(np.diff(bent) < 0) and not np.allclose(np.diff(np.log(bent[:-1])), log_steps)
    with pytest.raises(ValueError):
        schedule.polyexponential_sigmas(0, 0.01, 1.0)


def test_time_sigma_round_trip_and_cosine_schedule():
    t = jnp.linspace(0.0, 0.995, 50)
    np.testing.assert_allclose(schedule.sigma_to_t(schedule.t_to_sigma(t)), t, atol=1e-6)
    sigma = jnp.array([0.0, 0.01, 0.3, 1.0, 100.0, 500.0])
    np.testing.assert_allclose(schedule.t_to_sigma(schedule.sigma_to_t(sigma)), sigma, rtol=1e-4)
    # The SAO model card's sigma range 0.3..500 in model time.
    np.testing.assert_allclose(schedule.sigma_to_t(500.0), 0.9987, atol=1e-4)
    np.testing.assert_allclose(schedule.sigma_to_t(0.3), 0.1855, atol=1e-4)
    alpha, sig = schedule.alpha_sigma(t)
    np.testing.assert_allclose(alpha**2 + sig**2, 1.0, atol=1e-6)
    # VE sigma is the VP noise-to-signal ratio.
    np.testing.assert_allclose(sig / alpha, schedule.t_to_sigma(t), rtol=1e-4)


def test_t_to_sigma_is_infinite_at_one_and_never_negative():
    """float32 pi/2 rounds above pi/2, where a plain tan is about -2.3e7; t = 1 is +inf."""
    assert float(schedule.t_to_sigma(1.0)) == math.inf
    assert float(schedule.t_to_sigma(jnp.float32(1.0))) == math.inf
    assert float(schedule.sigma_to_t(schedule.t_to_sigma(1.0))) == 1.0
    t = jnp.linspace(0.0, 1.0, 100_001)  # includes 0.5, the switch between the two forms
    sigma = np.asarray(schedule.t_to_sigma(t), np.float64)
    assert sigma[0] == 0.0 and np.all(np.diff(sigma) >= 0) and np.all(np.isfinite(sigma[:-1]))
    exact = np.tan(0.5 * np.pi * np.asarray(t, np.float64)[:-1])
    np.testing.assert_allclose(sigma[:-1], exact, rtol=1e-6)
    near_one = jnp.float32(1.0) - jnp.finfo(jnp.float32).epsneg  # the largest float32 below 1
    np.testing.assert_allclose(float(schedule.t_to_sigma(near_one)), 1.0 / np.tan(0.5 * np.pi * 2.0**-24), rtol=1e-6)


@pytest.mark.slow
def test_sigma_grids_from_model_times():
    """A grid built from model times up to just below 1 is finite and decreasing; t = 1
    (sigma = inf) is refused by name instead of turning the grid into inf/NaN."""
    top = float(schedule.t_to_sigma(0.9995))
    sigmas = schedule.polyexponential_sigmas(10, float(schedule.t_to_sigma(0.02)), top)
    assert np.all(np.isfinite(sigmas)) and np.all(np.diff(np.asarray(sigmas)) < 0)
    np.testing.assert_allclose(sigmas[0], top, rtol=1e-5)
    x = jnp.ones((2, 4, 3)) * sigmas[0]
    for name in ALL_NAMES:
        out = samplers.sample(exact_denoiser, x, sigmas, sampler=name, rng=jax.random.key(0))
        assert bool(jnp.all(jnp.isfinite(out))), name
    with pytest.raises(ValueError, match="sigma_max < inf"):
        schedule.polyexponential_sigmas(10, 0.01, float(schedule.t_to_sigma(1.0)))


def test_add_noise_and_v_target_determine_x0_and_noise():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.normal(k1, (6, 32, 4))
    noise = jax.random.normal(k2, (6, 32, 4))
    t = jax.random.uniform(k3, (6,))
    x_t = schedule.add_noise(x0, noise, t)
    v = schedule.v_target(x0, noise, t)
    alpha, sigma = (a[:, None, None] for a in schedule.alpha_sigma(t))
    np.testing.assert_allclose(x_t, alpha * x0 + sigma * noise, atol=1e-6)
    np.testing.assert_allclose(alpha * x_t - sigma * v, x0, atol=1e-5)
    np.testing.assert_allclose(sigma * x_t + alpha * v, noise, atol=1e-5)


def test_training_times_are_stratified_uniform():
    batch = 64
    t = np.asarray(schedule.sample_training_times(jax.random.key(3), batch))
    assert t.shape == (batch,) and t.dtype == np.float32
    assert np.all((t >= 0) & (t < 1))
    # Exactly one time per stratum [k/B, (k+1)/B) after removing the shared offset.
    offset = t.min()
    strata = np.floor(np.mod(t - offset + 0.5 / batch, 1.0) * batch).astype(int)
    assert sorted(strata) == list(range(batch))
    # Different keys give different draws, and the marginal is uniform.
    many = np.asarray(
        jax.vmap(lambda k: schedule.sample_training_times(k, 8))(jax.random.split(jax.random.key(4), 2000))
    ).ravel()
    assert abs(many.mean() - 0.5) < 0.01
    assert np.histogram(many, bins=10, range=(0, 1))[0].min() > 0.9 * len(many) / 10


# ------------------------------------------------------------------------------- samplers


def test_v_denoiser_of_exact_v_model_is_exact_denoiser():
    denoise = samplers.v_denoiser(exact_v_model)
    x = jax.random.normal(jax.random.key(1), (4, 16, 3)) * 3.0
    for sigma in (0.01, 0.3, 1.0, 5.0, 80.0):
        noisy = x * math.sqrt(1 + sigma**2)  # the scale of x0 + sigma eps
        got = denoise(noisy, jnp.float32(sigma))
        want = exact_denoiser(np.asarray(noisy, np.float64), sigma)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"sigma={sigma}")
    # A per-example sigma vector is accepted too.
    sig = jnp.array([0.1, 1.0, 10.0, 50.0])
    np.testing.assert_allclose(denoise(x, sig), exact_denoiser(x, sig[:, None, None]), atol=1e-5)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_sampler_matches_float64_numpy_reference(name):
    """Jitted float32 sampler vs a float64 NumPy loop: same sigmas, same noise, max |diff| < 2e-5."""
    steps, shape = 25, (4, 16, 8)
    sigmas = schedule.polyexponential_sigmas(steps, 0.01, 80.0)
    k_init, k_noise = jax.random.split(jax.random.key(10))
    x_init = jax.random.normal(k_init, shape) * sigmas[0]
    got = np.asarray(jitted_sampler(name, "wobbly")(x_init, sigmas, k_noise))

    noise = np.asarray(jax.random.normal(k_noise, (steps,) + shape), np.float64) if name in STOCHASTIC else None
    ref_denoise = functools.partial(wobbly_denoiser, np_module=np)
    want = REFERENCES[name](ref_denoise, np.asarray(x_init, np.float64), np.asarray(sigmas, np.float64), noise)
    max_err = np.abs(got - want).max()
    assert max_err < 2e-5, f"{name}: max |jax - numpy| = {max_err:.2e}"
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_sampler_converges_to_data_distribution(name):
    """8192 samples, 100 steps, sigma 80 -> 0.01 -> 0, through v_denoiser: mean and std within 0.03.

    100 steps as in the reference; the first-order samplers (Euler = DDIM here) shrink the
    std by a deterministic 0.011 at 100 steps (0.022 at 50), the 2nd/3rd-order ones by < 0.002;
    the Monte-Carlo error of the estimates is about 0.005. Euler ancestral is first order too.
    dpm_fast stops at sigma 0.01 (its std is sqrt(S^2 + 0.01^2), 0.0001 above S).
    """
    steps, shape = 100, (64, 32, 4)
    sigmas = schedule.polyexponential_sigmas(steps, 0.01, 80.0)
    k_init, k_noise = jax.random.split(jax.random.key(20))
    x_init = jax.random.normal(k_init, shape) * sigmas[0]
    out = np.asarray(jitted_sampler(name, "v")(x_init, sigmas, k_noise))
    assert abs(out.mean() - MU) < 0.03, (name, out.mean())
    assert abs(out.std() - S) < 0.03, (name, out.std())


# Deterministic ports, on the toy Gaussian whose probability-flow ODE is solved in closed form:
# x(sigma) = MU + (x(sigma_max) - MU) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_max^2).
# Max |error| over 512 elements at 25 steps, sigma 80 -> 0.01 -> 0, was measured as heun 3.2e-2,
# lms 2.1e-2, dpm_2 1.5e-2, dpm_fast 2.7e-3 (Euler, first order: 1.5e-1); at 50 steps each
# shrinks 4.5 to 10 times (Euler: 2 times). The tolerances leave 1.5x headroom.
ODE_TOLERANCES = {"heun": 5e-2, "lms": 3e-2, "dpm_2": 2.5e-2, "dpm_fast": 4e-3}


@pytest.mark.parametrize("name", sorted(ODE_TOLERANCES))
def test_deterministic_sampler_solves_the_gaussian_ode(name):
    shape, sigma_max, sigma_min = (8, 16, 4), 80.0, 0.01
    x_init = jax.random.normal(jax.random.key(30), shape) * sigma_max
    errors = []
    for steps in (25, 50):
        sigmas = schedule.polyexponential_sigmas(steps, sigma_min, sigma_max)
        x_init_s = x_init * (sigmas[0] / sigma_max)
        # dpm_fast ends on its own grid at sigma_min; the others take the final step to 0.
        sigma_end = sigma_min if name == "dpm_fast" else 0.0
        exact = MU + (np.asarray(x_init_s, np.float64) - MU) * math.sqrt(S**2 + sigma_end**2) / math.sqrt(
            S**2 + float(sigmas[0]) ** 2
        )
        got = np.asarray(jitted_sampler(name, "exact")(x_init_s, sigmas, jax.random.key(0)), np.float64)
        errors.append(np.abs(got - exact).max())
    assert errors[0] < ODE_TOLERANCES[name], (name, errors)
    assert errors[1] < errors[0] / 3, (name, errors)  # higher than first order (2nd order: / 4)


def test_ancestral_samplers_with_eta_zero_are_their_deterministic_versions():
    sigmas = schedule.polyexponential_sigmas(12, 0.03, 50.0)
    x = jax.random.normal(jax.random.key(5), (2, 8, 3)) * sigmas[0]
    denoise = functools.partial(wobbly_denoiser, np_module=jnp)
    for ancestral, plain in (
        (samplers.sample_euler_ancestral, samplers.sample_euler),
        (samplers.sample_dpm_2_ancestral, samplers.sample_dpm_2),
    ):
        np.testing.assert_allclose(ancestral(denoise, x, sigmas, eta=0.0), plain(denoise, x, sigmas), atol=2e-5)
    # s_noise scales only the added noise: with zero noise, eta still moves the step to sigma_down.
    zero = jnp.zeros((12,) + x.shape)
    a = samplers.sample_dpmpp_2s_ancestral(denoise, x, sigmas, noise=zero)
    b = samplers.sample_dpmpp_2s_ancestral(denoise, x, sigmas, noise=jnp.ones_like(zero), s_noise=0.0)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="eta = 0 is deterministic"):
        samplers.sample_euler_ancestral(denoise, x, sigmas, eta=0.0, noise=zero)
    with pytest.raises(ValueError, match="eta and s_noise must be >= 0"):
        samplers.sample_euler_ancestral(denoise, x, sigmas, eta=-1.0, noise=zero)


def test_dpm_fast_orders_and_grid():
    # k-diffusion's rule: nfe // 3 + 1 steps, orders summing to the call budget.
    assert samplers.dpm_fast_orders(1) == (1,)
    assert samplers.dpm_fast_orders(2) == (2,)
    assert samplers.dpm_fast_orders(3) == (2, 1)
    assert samplers.dpm_fast_orders(10) == (3, 3, 3, 1)
    assert samplers.dpm_fast_orders(11) == (3, 3, 3, 2)
    assert samplers.dpm_fast_orders(12) == (3, 3, 3, 2, 1)
    assert all(sum(samplers.dpm_fast_orders(n)) == n for n in range(1, 200))
    with pytest.raises(ValueError, match="at least 1"):
        samplers.dpm_fast_orders(0)
    # It calls the denoiser exactly len(sigmas) - 1 times, at sigmas log-uniform from
    # sigmas[0] down to the smallest positive one; the other sigmas do not matter.
    seen = []

    def recording(x, sigma):
        jax.debug.callback(lambda s: seen.append(float(s)), sigma)
        return exact_denoiser(x, sigma)

    sigmas = jnp.array([20.0, 7.0, 6.0, 5.0, 0.2, 0.0, 0.0, 0.0])  # odd on purpose; 7 calls
    samplers.sample_dpm_fast(recording, jnp.ones((1, 2, 1)), sigmas).block_until_ready()
    jax.effects_barrier()
    # 7 // 3 + 1 = 3 equal steps in log sigma, orders (3, 3, 1); the order-3 steps evaluate
    # at 0, 1/3 and 2/3 of the step.
    grid = np.geomspace(20.0, 0.2, 4)
    ratio = grid[1] / grid[0]
    want = [
        grid[0],
        grid[0] * ratio ** (1 / 3),
        grid[0] * ratio ** (2 / 3),
        grid[1],
        grid[1] * ratio ** (1 / 3),
        grid[1] * ratio ** (2 / 3),
        grid[2],
    ]
    np.testing.assert_allclose(sorted(seen, reverse=True), want, rtol=1e-5)


def test_dpm_fast_with_eta_adds_no_noise_on_its_last_step():
    """The last step ends on sigma_min: its noise slice must not matter (in the reference the
    grid's end and sigma_min are the same number, so that step's noise scale is exactly 0);
    the earlier ones must."""
    sigmas = schedule.polyexponential_sigmas(12, 0.3, 500.0)  # 5 steps
    x = jax.random.normal(jax.random.key(8), (2, 16, 4)) * sigmas[0]
    noise = jax.random.normal(jax.random.key(9), (5,) + x.shape)
    run = jax.jit(lambda noise: samplers.sample_dpm_fast(exact_denoiser, x, sigmas, noise=noise, eta=1.0))
    base = run(noise)
    np.testing.assert_array_equal(run(noise.at[-1].multiply(100.0)), base)
    assert float(jnp.abs(run(noise.at[-2].multiply(2.0)) - base).max()) > 0.1
    with pytest.raises(ValueError, match=r"noise must have shape \[num_steps, \*x.shape\] = \(5, 2, 16, 4\)"):
        samplers.sample_dpm_fast(exact_denoiser, x, sigmas, noise=noise[:4], eta=1.0)


def test_sampler_traces_the_denoiser_once_as_one_scan():
    calls = []

    def counting_denoiser(x, sigma):
        calls.append(1)
        return exact_denoiser(x, sigma)

    sigmas = schedule.polyexponential_sigmas(30, 0.01, 80.0)
    x = jnp.zeros((2, 8, 4))
    jaxpr = jax.make_jaxpr(lambda x, k: samplers.sample_dpmpp_3m_sde(counting_denoiser, x, sigmas, rng=k))(
        x, jax.random.key(0)
    )
    assert len(calls) == 1  # traced once, not once per step
    assert [e.primitive.name for e in jaxpr.jaxpr.eqns].count("scan") == 1


# Denoiser traces per sampler program: once per call site (a step's first call, then each
# cond/switch branch's own), whatever the number of steps.
TRACES = {
    "heun": 2,
    "lms": 1,
    "dpm_2": 2,
    "dpm_fast": 4,
    "euler_ancestral": 1,
    "dpm_2_ancestral": 2,
    "dpmpp_2s_ancestral": 2,
}


@pytest.mark.parametrize("name", K_DIFFUSION_NAMES)
def test_k_diffusion_ports_are_one_scan_of_fixed_size(name):
    for steps in (9, 30):
        calls = []

        def counting_denoiser(x, sigma):
            calls.append(1)
            return exact_denoiser(x, sigma)

        sigmas = schedule.polyexponential_sigmas(steps, 0.01, 80.0)
        jaxpr = jax.make_jaxpr(lambda x, k: samplers.sample(counting_denoiser, x, sigmas, sampler=name, rng=k))(
            jnp.zeros((2, 8, 4)), jax.random.key(0)
        )
        assert len(calls) == TRACES[name], (name, steps, len(calls))
        assert [e.primitive.name for e in jaxpr.jaxpr.eqns].count("scan") == 1, name


def test_callback_sees_every_step():
    seen = []
    sigmas = schedule.polyexponential_sigmas(6, 0.1, 10.0)
    run = jax.jit(
        lambda x: samplers.sample(exact_denoiser, x, sigmas, sampler="ddim", callback=lambda i: seen.append(int(i)))
    )
    run(jnp.ones((2, 4, 3))).block_until_ready()
    jax.effects_barrier()
    assert sorted(seen) == list(range(6))
    # dpm_fast reports each of its 6 denoiser calls (2 steps, orders 3 and 2), as the
    # reference's progress bar counts them; heun one per step, like the reference's.
    for name in ("dpm_fast", "heun"):
        seen.clear()
        jax.jit(
            lambda x: samplers.sample(exact_denoiser, x, sigmas, sampler=name, callback=lambda i: seen.append(int(i)))
        )(jnp.ones((2, 4, 3)))
        jax.effects_barrier()
        assert sorted(seen) == list(range(6)), name


def test_sampler_names_and_errors():
    from stable_audio_jax.errors import UserError

    assert set(samplers.SAMPLERS) == set(ALL_NAMES)
    assert samplers.STOCHASTIC_SAMPLERS == STOCHASTIC
    assert samplers.canonical_sampler_name("dpmpp-3m-sde") == "dpmpp_3m_sde"
    assert samplers.canonical_sampler_name("v-ddim") == "ddim"
    assert samplers.canonical_sampler_name("K-LMS") == "lms"
    sigmas = schedule.polyexponential_sigmas(3, 0.1, 10.0)
    x = jnp.ones((1, 4, 2))
    with pytest.raises(UserError) as info:
        samplers.sample(exact_denoiser, x, sigmas, sampler="k-dpm-adaptive")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    for name in ALL_NAMES:  # every sampler, in both spellings
        assert f"{name} ({samplers.REFERENCE_NAMES[name]})" in str(info.value)
    for name in STOCHASTIC:
        with pytest.raises(ValueError, match="rng"):
            samplers.sample(exact_denoiser, x, sigmas, sampler=name)


# ------------------------------------------------------------------------------- guidance


def toy_model_fn(x, t, conditioning):
    """A nonlinear stand-in for the DiT: `[batch, frames, channels]` in and out."""
    tokens, global_cond = conditioning["tokens"], conditioning["global"]
    context = tokens.mean(axis=1, keepdims=True)  # [batch, 1, channels]
    return jnp.tanh(x * (1.0 + t[:, None, None]) + context + global_cond[:, None, :]) - 0.3 * x


def make_guidance_inputs(batch=3, frames=10, channels=6):
    ks = jax.random.split(jax.random.key(7), 5)
    x = jax.random.normal(ks[0], (batch, frames, channels))
    t = jax.random.uniform(ks[1], (batch,))
    cond = {
        "tokens": jax.random.normal(ks[2], (batch, 5, channels)),
        "global": jax.random.normal(ks[3], (batch, channels)),
    }
    # Unconditional: zeroed tokens, same global (timing) vector, as in the SAO DiT.
    uncond = {"tokens": jnp.zeros_like(cond["tokens"]), "global": cond["global"]}
    return x, t, cond, uncond


def test_cfg_scale_one_is_the_conditional_model_with_one_half_batch():
    x, t, cond, uncond = make_guidance_inputs()
    batches = []

    def recording_model(x, t, c):
        batches.append(x.shape[0])
        return toy_model_fn(x, t, c)

    v = guidance.guided_v_model(recording_model, cond, uncond, 1.0)(x, t)
    np.testing.assert_array_equal(v, toy_model_fn(x, t, cond))
    assert batches == [x.shape[0]]
    v_c, v_u = toy_model_fn(x, t, cond), toy_model_fn(x, t, uncond)
    np.testing.assert_allclose(guidance.cfg_combine(v_c, v_u, 1.0), v_c, atol=1e-6)


@pytest.mark.parametrize("phi", [0.0, 0.7])
def test_batched_guidance_equals_two_separate_calls(phi):
    x, t, cond, uncond = make_guidance_inputs()
    batches = []

    def recording_model(x, t, c):
        batches.append(x.shape[0])
        return toy_model_fn(x, t, c)

    got = guidance.guided_v_model(recording_model, cond, uncond, 7.0, phi)(x, t)
    assert batches == [2 * x.shape[0]]  # one doubled batch
    want = guidance.cfg_combine(toy_model_fn(x, t, cond), toy_model_fn(x, t, uncond), 7.0, phi)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Traced scale and phi (e.g. from a jitted generate with cfg as an argument). XLA fuses
    # and reorders the float32 arithmetic, and the scale of 7 amplifies that: 1e-5 here.
    traced = jax.jit(lambda s, p: guidance.guided_v_model(toy_model_fn, cond, uncond, s, p)(x, t))
    np.testing.assert_allclose(traced(jnp.float32(7.0), jnp.float32(phi)), want, atol=1e-5)


def test_cfg_rescale():
    x, t, cond, uncond = make_guidance_inputs()
    v_c, v_u = toy_model_fn(x, t, cond), toy_model_fn(x, t, uncond)
    plain = v_u + (v_c - v_u) * 6.0
    np.testing.assert_allclose(guidance.cfg_combine(v_c, v_u, 6.0), plain, atol=1e-6)
    # phi = 1: every frame's std over channels equals the conditional prediction's.
    full = guidance.cfg_combine(v_c, v_u, 6.0, rescale_phi=1.0)
    np.testing.assert_allclose(full.std(axis=-1), v_c.std(axis=-1), rtol=1e-5)
    np.testing.assert_allclose(
        full / jnp.linalg.norm(full, axis=-1, keepdims=True),
        plain / jnp.linalg.norm(plain, axis=-1, keepdims=True),
        atol=1e-5,
    )
    # phi blends linearly; a traced 0 is the plain guided prediction.
    half = guidance.cfg_combine(v_c, v_u, 6.0, rescale_phi=0.4)
    np.testing.assert_allclose(half, 0.4 * full + 0.6 * plain, atol=1e-5)
    np.testing.assert_allclose(guidance.cfg_combine(v_c, v_u, 6.0, jnp.float32(0.0)), plain, atol=1e-6)


def test_guided_sampling_end_to_end():
    """CFG-wrapped model -> v_denoiser -> dpmpp_3m_sde, jitted as one program; finite output."""
    x, t, cond, uncond = make_guidance_inputs()
    sigmas = schedule.polyexponential_sigmas(8, 0.03, 50.0)

    @jax.jit
    def generate(rng, scale):
        k_init, k_sample = jax.random.split(rng)
        v_model = guidance.guided_v_model(toy_model_fn, cond, uncond, scale, 0.5)
        x_init = jax.random.normal(k_init, x.shape) * sigmas[0]
        return samplers.sample(samplers.v_denoiser(v_model), x_init, sigmas, sampler="dpmpp-3m-sde", rng=k_sample)

    out = generate(jax.random.key(0), jnp.float32(7.0))
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
