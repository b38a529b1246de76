"""Parity of the schedule, the v-denoiser and the samplers with k-diffusion.

tests/fixtures/sampler_reference.npz was written by tests/reference/make_sampler_reference.py
with k-diffusion 0.1.1 (what stable-audio-tools' `sample_k` calls) on torch 2.13 CPU, for the
analytic v-model `v(x, t) = tanh(x @ W + t b)` behind `K.external.VDenoiser`, 12 steps, on
SAO's model-card range sigma 0.3..500 and `sample_k`'s default 0.01..100. The stochastic
samplers were handed a pre-drawn noise sequence (one `x`-shaped slice per step) in place of
their Brownian tree or fresh normals; our samplers take the same sequence through `noise=`.

Tolerance (float32 on both sides): max |jax - torch| <= 1e-4 * max(1, max |torch|).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.diffusion import samplers, schedule
from tests.parity import assert_parity

pytestmark = pytest.mark.parity

REF = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "sampler_reference.npz"))
SCHEDULES = ("sao", "default")
# Our names, which are also k-diffusion's (`K.sampling.sample_<name>`); SAT's spellings are
# `samplers.REFERENCE_NAMES` ("dpmpp-3m-sde", "k-heun", ...).
SAMPLERS = (
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "heun",
    "lms",
    "dpm_2",
    "dpm_fast",
    "euler_ancestral",
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
)
# Reference runs with non-default options: fixture name -> (sampler function, options).
VARIANTS = {
    "dpmpp_2s_ancestral_eta05": (samplers.sample_dpmpp_2s_ancestral, {"eta": 0.5, "s_noise": 0.7}),
    "dpm_fast_eta1": (samplers.sample_dpm_fast, {"eta": 1.0}),
}


def tanh_v_model(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """The reference script's v-model: x `[batch, frames, channels]`, t `[batch]`."""
    return jnp.tanh(x @ REF["W"] + t[:, None, None] * REF["b"])


DENOISE = samplers.v_denoiser(tanh_v_model)


@pytest.mark.parametrize("name", SCHEDULES)
def test_polyexponential_sigmas(name):
    steps = int(REF["steps"])
    sigmas = schedule.polyexponential_sigmas(steps, float(REF[f"{name}_sigma_min"]), float(REF[f"{name}_sigma_max"]))
    want = REF[f"{name}_sigmas"]
    assert want[-1] == 0 and sigmas[-1] == 0
    assert_parity(sigmas, want, f"{name} sigmas")
    # Relative, since the small sigmas matter as much as the large ones.
    np.testing.assert_allclose(sigmas[:-1], want[:-1], rtol=1e-5)


def test_v_denoiser_scalings_and_time():
    assert_parity(schedule.sigma_to_t(REF["probe_sigmas"]), REF["probe_t"], "sigma -> t")
    for sigma, want in zip(REF["probe_sigmas"], REF["probe_denoised"]):
        assert_parity(DENOISE(jnp.asarray(REF["probe_x"]), sigma), want, f"VDenoiser at sigma {sigma:g}")


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_sampler_matches_k_diffusion(name, sampler):
    noise = REF["noise"] if sampler in samplers.STOCHASTIC_SAMPLERS else None
    got = samplers.sample(DENOISE, REF[f"{name}_x_init"], REF[f"{name}_sigmas"], sampler=sampler, noise=noise)
    assert_parity(got, REF[f"{name}_{sampler}"], f"{name} {sampler}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_sampler_options_match_k_diffusion(name, variant):
    fn, options = VARIANTS[variant]
    x_init, sigmas = REF[f"{name}_x_init"], REF[f"{name}_sigmas"]
    steps = len(samplers.dpm_fast_orders(len(sigmas) - 1)) if fn is samplers.sample_dpm_fast else len(sigmas) - 1
    got = fn(DENOISE, x_init, sigmas, noise=REF["noise"][:steps], **options)
    assert_parity(got, REF[f"{name}_{variant}"], f"{name} {variant}")


@pytest.mark.parametrize("name", SCHEDULES)
def test_lms_coefficients_match_k_diffusion_quadrature(name):
    got = samplers.lms_coefficients(REF[f"{name}_sigmas"], order=4)
    assert_parity(got, REF[f"{name}_lms_coeffs"], f"{name} lms coefficients")
    np.testing.assert_allclose(got, REF[f"{name}_lms_coeffs"], rtol=1e-5, atol=1e-6)


def test_reference_sampler_spellings_map_to_ours():
    for ours in SAMPLERS:
        assert samplers.canonical_sampler_name(ours.replace("_", "-")) == ours
    # stable-audio-tools' `sample_k` names.
    for spelling, ours in (
        ("k-heun", "heun"),
        ("k-lms", "lms"),
        ("k-dpm-2", "dpm_2"),
        ("k-dpm-fast", "dpm_fast"),
        ("k-dpmpp-2s-ancestral", "dpmpp_2s_ancestral"),
        ("k-euler-ancestral", "euler_ancestral"),
        ("k-dpm-2-ancestral", "dpm_2_ancestral"),
        ("dpmpp-3m-sde", "dpmpp_3m_sde"),
    ):
        assert samplers.canonical_sampler_name(spelling) == ours


def test_noise_argument_is_checked():
    x, sigmas = REF["sao_x_init"], REF["sao_sigmas"]
    with pytest.raises(ValueError, match="deterministic"):
        samplers.sample(DENOISE, x, sigmas, sampler="dpmpp_2m", noise=REF["noise"])
    with pytest.raises(ValueError, match=r"noise must have shape"):
        samplers.sample(DENOISE, x, sigmas, sampler="dpmpp_3m_sde", noise=REF["noise"][1:])
