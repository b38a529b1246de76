"""`SamplingConfig`: the one source of sampling defaults, checked values."""

from __future__ import annotations

import os
import sys

import pytest

from stable_audio_jax.diffusion import sampling_config
from stable_audio_jax.diffusion.sampling_config import SamplingConfig
from stable_audio_jax.errors import UserError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))


def test_partial_settings_take_the_defaults_and_bad_ones_fail():
    assert SamplingConfig.from_dict({"cfg_scale": 7.0}) == SamplingConfig(cfg_scale=7.0)
    assert SamplingConfig.from_dict(None) == SamplingConfig()
    assert SamplingConfig(sampler="dpmpp-2m-sde").sampler == "dpmpp_2m_sde"  # reference spelling
    with pytest.raises(ValueError, match=r"unknown sampling settings \['cfg'\]"):
        SamplingConfig.from_dict({"cfg": 7.0})
    for bad, message in (
        ({"steps": 0}, "steps"),
        ({"rescale_phi": 1.5}, "rescale_phi"),
        ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min < sigma_max"),
        ({"cfg_scale": -1}, "cfg"),
    ):
        with pytest.raises(ValueError, match=message):
            SamplingConfig.from_dict(bad)
    with pytest.raises(UserError, match="unknown sampler"):
        SamplingConfig(sampler="nope")


def test_the_sao_config_samples_like_the_converted_release():
    """`configs/dit_sao.py` and a converted SAO directory (`convert/sao_checkpoint.py`) both
    take `sampling_config.SAO`: CFG 7 over sigma 0.3..500, no rescale."""
    import dit_sao

    assert SamplingConfig.from_dict(dict(dit_sao.get_config().sampling)) == sampling_config.SAO
    assert sampling_config.SAO == SamplingConfig(cfg_scale=7.0, sigma_min=0.3, rescale_phi=0.0)
    assert sampling_config.SA1.rescale_phi == 0.4 and sampling_config.SA1.sampler == "dpmpp_2m_sde"
