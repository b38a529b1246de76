"""Rectified flow beside the v-objective: training objective, sampler choice by objective, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.diffusion import flow, flow_samplers, schedule
from stable_audio_jax.diffusion.objective import TrainingObjective
from stable_audio_jax.diffusion.samplers import UnknownSamplerError
from stable_audio_jax.diffusion.sampling_config import FEW_STEP_FLOW, SamplingConfig, check_known_sampler
from stable_audio_jax.errors import UserError


def test_v_objective_is_unchanged():
    """The default objective gives exactly the arrays the v-objective code always gave."""
    rng = jax.random.key(3)
    x0, noise = jax.random.normal(rng, (2, 8, 3, 4))
    objective = TrainingObjective()
    t = objective.times(jax.random.key(1), 8, 3)
    np.testing.assert_array_equal(t, schedule.sample_training_times(jax.random.key(1), 8))
    x_t, target = objective.noised_and_target(x0, noise, t)
    np.testing.assert_array_equal(x_t, schedule.add_noise(x0, noise, t))
    np.testing.assert_array_equal(target, schedule.v_target(x0, noise, t))


@pytest.mark.parametrize("objective", ["rectified_flow", "rf_denoiser"])
def test_flow_objectives_interpolate_on_the_straight_path(objective):
    x0, noise = jax.random.normal(jax.random.key(0), (2, 4, 16, 2))
    t = jnp.array([0.0, 0.25, 0.5, 1.0])
    x_t, target = TrainingObjective(objective=objective).noised_and_target(x0, noise, t)
    np.testing.assert_allclose(x_t[0], x0[0])
    np.testing.assert_allclose(x_t[3], noise[3])
    np.testing.assert_allclose(x_t[1], 0.75 * x0[1] + 0.25 * noise[1], rtol=1e-6)
    np.testing.assert_allclose(target, noise - x0)


@pytest.mark.parametrize("sampler", flow.TIMESTEP_SAMPLERS)
def test_timestep_samplers_stay_in_range_and_differ(sampler):
    t = TrainingObjective(objective="rectified_flow", timestep_sampler=sampler).times(jax.random.key(0), 4096, 64)
    assert t.shape == (4096,) and float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert 0.2 < float(t.mean()) < 0.8 and float(t.std()) > 0.1


def test_distribution_shift_moves_times_towards_noise_for_longer_sequences():
    settings = {"distribution_shift": {"enabled": True}}
    objective = TrainingObjective.from_config("rectified_flow", settings)
    short, long = (float(objective.times(jax.random.key(0), 2048, n).mean()) for n in (256, 4096))
    assert (
        long
        > short
        > float(TrainingObjective(objective="rectified_flow").times(jax.random.key(0), 2048, 256).mean()) - 0.05
    )


def test_sampler_lists_follow_the_objective():
    assert SamplingConfig().sampler == "dpmpp_3m_sde" and SamplingConfig().sigma_max == 500.0
    rf = SamplingConfig(objective="rectified_flow")
    assert rf.sampler == "euler" and rf.sigma_max == 1.0
    assert FEW_STEP_FLOW.to_dict() == dict(
        steps=8, cfg_scale=1.0, sampler="pingpong", sigma_min=0.03, sigma_max=1.0, rescale_phi=0.0
    )
    with pytest.raises(UnknownSamplerError, match="for rectified-flow models; this v-objective model"):
        SamplingConfig(sampler="pingpong")
    with pytest.raises(UnknownSamplerError, match="not one for a rectified-flow model.*euler, rk4, dpmpp, pingpong"):
        SamplingConfig(objective="rectified_flow", sampler="dpmpp_3m_sde")
    check_known_sampler("pingpong")
    check_known_sampler("k-heun")
    with pytest.raises(UnknownSamplerError, match="v-objective models: .*rectified-flow models: "):
        check_known_sampler("nope")


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(sigma_max=1.5), r"sigma_max must be in \(0, 1\]"),
        (dict(sigma_max=0.0), r"sigma_max must be in \(0, 1\]"),
        (dict(steps=0), "steps must be"),
    ],
)
def test_flow_sampling_bad_input_is_one_line(bad, message):
    with pytest.raises((UserError, ValueError), match=message) as error:
        SamplingConfig(objective="rectified_flow", **bad)
    assert "\n" not in str(error.value)


def test_unknown_objective_and_timestep_sampler():
    with pytest.raises(UserError, match="unknown diffusion objective 'eps'"):
        TrainingObjective(objective="eps")
    with pytest.raises(UserError, match="unknown timestep sampler 'sobol'"):
        TrainingObjective(timestep_sampler="sobol")
    with pytest.raises(UserError, match="distribution_shift fields"):
        TrainingObjective.from_config("v", {"distribution_shift": {"enabled": True, "shift": 2}})


def test_flow_samplers_recover_data_from_an_exact_velocity():
    """Given the true velocity towards one data point, every sampler lands on it: the field
    `(x - data)/t` (exact off the path too) for the one-call samplers, and the path's constant
    velocity for the ODE samplers, which stay on the path."""
    data = jax.random.normal(jax.random.key(0), (2, 8, 3))
    noise = jax.random.normal(jax.random.key(1), (2, 8, 3))

    def towards_data(x, t):
        return (x - data) / t[:, None, None]

    def constant(x, t):
        return noise - data

    cases = [(name, towards_data) for name in ("euler", "dpmpp", "pingpong")] + [("euler", constant), ("rk4", constant)]
    for name, velocity in cases:
        ts = flow_samplers.sampler_times(name, 8)
        got = flow_samplers.sample(velocity, noise, ts, sampler=name, rng=jax.random.key(2))
        np.testing.assert_allclose(got, data, atol=1e-4, err_msg=name)
