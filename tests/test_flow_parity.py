"""Parity of the rectified-flow pieces with stable-audio-tools 0.0.19.

tests/fixtures/flow_reference.npz was written by tests/reference/make_flow_reference.py with
the reference's `inference/sampling.py` (`sample_rf` for each sampler, `DistributionShift`,
the timestep draws) on torch 2.13 CPU, for the analytic velocity model
`v(x, t) = tanh(x @ W + t b)`, 8 steps, from noise (sigma_max 1) and from init data
(sigma_max 0.6). Pingpong was handed a pre-drawn noise sequence, which ours takes as `noise=`.

Tolerance (float32 on both sides): max |jax - torch| <= 1e-4 * max(1, max |torch|).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.diffusion import flow, flow_samplers
from tests.parity import assert_parity

pytestmark = pytest.mark.parity

REF = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "flow_reference.npz"))
STEPS = int(REF["steps"])


def tanh_velocity(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """The reference script's model: `x` `[batch, frames, channels]`, `t` `[batch]`."""
    return jnp.tanh(x @ REF["W"] + t[:, None, None] * REF["b"])


@pytest.mark.parametrize("sigma_max,key", [(1.0, "grid_logsnr_1"), (0.6, "grid_logsnr_06")])
def test_sampling_grid(sigma_max, key):
    ts = flow.sampling_times(STEPS, sigma_max)
    assert float(ts[0]) == pytest.approx(sigma_max) and float(ts[-1]) == 0.0
    assert_parity(ts, REF[key], key)


@pytest.mark.parametrize("sampler", sorted(flow_samplers.FLOW_SAMPLERS))
@pytest.mark.parametrize("start", ["from_noise", "from_init"])
def test_sampler_matches_sample_rf(sampler, start):
    sigma_max = 1.0 if start == "from_noise" else 0.6
    x = jnp.asarray(REF["x_noise"])
    if start == "from_init":  # sample_rf's audio-to-audio start
        x = jnp.asarray(REF["init"]) * (1 - sigma_max) + x * sigma_max
    ts = flow_samplers.sampler_times(sampler, STEPS, sigma_max)
    noise = jnp.asarray(REF["step_noise"]) if sampler in flow_samplers.STOCHASTIC_FLOW_SAMPLERS else None
    got = flow_samplers.sample(tanh_velocity, x, ts, sampler=sampler, noise=noise)
    assert_parity(got, REF[f"{sampler}_{start}"], f"{sampler} {start}")


def test_pingpong_noise_matters():
    """The per-step noise is used: other noise, other result (so the parity above is not vacuous)."""
    ts = flow.sampling_times(STEPS)
    x = jnp.asarray(REF["x_noise"])
    a = flow_samplers.sample(tanh_velocity, x, ts, sampler="pingpong", noise=jnp.asarray(REF["step_noise"]))
    b = flow_samplers.sample(tanh_velocity, x, ts, sampler="pingpong", noise=-jnp.asarray(REF["step_noise"]))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2


@pytest.mark.parametrize("length", [256, 1024, 4096])
@pytest.mark.parametrize("use_sine", [False, True])
def test_distribution_shift(length, use_sine):
    got = flow.DistributionShift(use_sine=use_sine)(REF["shift_t"], length)
    key = f"shift_{'sine_' if use_sine else ''}{length}"
    assert np.all(np.isfinite(np.asarray(got)))
    assert_parity(got, REF[key], key)


@pytest.mark.parametrize("sampler", ["logit_normal", "trunc_logit_normal", "log_snr"])
def test_timestep_samplers_map_the_same_draws(sampler):
    got = flow.times_from_draws(REF[f"draws_{sampler}"], sampler)
    assert_parity(got, REF[f"times_{sampler}"], sampler)
    assert float(jnp.min(got)) >= 0.0 and float(jnp.max(got)) <= 1.0


def test_training_input_target_and_loss():
    x0, noise, t = (jnp.asarray(REF[k]) for k in ("x0", "noise", "train_t"))
    x_t = flow.add_noise(x0, noise, t)
    target = flow.velocity_target(x0, noise)
    assert_parity(x_t, REF["x_t"], "x_t")
    assert_parity(target, REF["target"], "target")
    loss = jnp.mean(jnp.square(jnp.tanh(x_t @ REF["W"] + t[:, None, None] * REF["b"]) - target))
    assert_parity(loss, REF["loss"], "loss")
    # The target with x_t gives back the data: x_t - t v = x0.
    assert_parity(flow.denoised(x_t, t, target), x0, "x0 from x_t and the target")
