"""Stable Audio Open Small, as the reference writes it, converts exactly and samples like it.

The fixture `fixtures/sao_open_small/` is SAO Small's layout at a tiny size, built,
randomised and sampled by stable-audio-tools itself
(`tests/reference/make_sao_model_reference.py --variant=open_small`): one `seconds_total`
conditioner, an `rf_denoiser` DiT with projected prompt tokens and q/k LayerNorms, and the
reference's `generate_diffusion_cond` with SAO Small's defaults (8 pingpong steps, no CFG)
on two padded prompts, with its initial and per-step noise saved.
"""

from __future__ import annotations

import functools
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.convert import sao_checkpoint
from stable_audio_jax.convert.state_dict import ConversionError
from stable_audio_jax.diffusion import flow_samplers, guidance
from stable_audio_jax.inference.generate import AudioGenerator, apply_model, guidance_conditioning
from tests.bad_input import run_script
from tests.parity import assert_parity
from tests.sao_fixture import SaoFixture, channels_last

FIXTURE = SaoFixture("sao_open_small")


@pytest.fixture(scope="module")
def reference() -> dict:
    return FIXTURE.reference()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[str, dict]:
    return FIXTURE.convert(str(tmp_path_factory.mktemp("sao_open_small") / "pretrained"))


def test_architecture_of_the_small_model_config():
    arch = sao_checkpoint.architecture_from_model_config(FIXTURE.model_config())
    dit = arch.diffusion.dit
    assert (dit.qk_norm, dit.project_cond_tokens, dit.cond_embed_dim, dit.kv_heads) == ("ln", True, 64, 2)
    assert arch.diffusion.timing_ids == ("seconds_total",) and arch.diffusion.max_seconds == 256
    assert dit.global_cond_dim == 32 and arch.diffusion.objective == "rf_denoiser"
    assert arch.text_max_length == 16
    assert (arch.sampling["sampler"], arch.sampling["steps"], arch.sampling["cfg_scale"]) == ("pingpong", 8, 1.0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"qk_norm": "l2"}), "qk_norm is 'l2'"),
        (lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"feat_scale": True}), "attn_kwargs keys"),
        (lambda c: c["model"]["diffusion"].update(global_cond_ids=[]), "global_cond_ids"),
        (lambda c: c["model"]["diffusion"]["config"].update(global_cond_dim=64), "global_cond_dim"),
        (lambda c: c["model"]["diffusion"]["config"].update(project_cond_tokens="yes"), "project_cond_tokens"),
    ],
)
def test_unsupported_small_configs_name_the_field(edit, message):
    config = FIXTURE.model_config()
    edit(config)
    with pytest.raises(ConversionError, match=message):
        sao_checkpoint.architecture_from_model_config(config)


def test_conversion_keeps_every_parameter(converted, reference):
    _, summary = converted
    params = summary["params"]
    # The reference model: DiT + the seconds_total conditioner + the VAE (T5 is kept outside it).
    assert params["diffusion"] + params["autoencoder"] == int(reference["parameters"]) == 251_482


@pytest.mark.parity
def test_prompt_features_match_the_t5_conditioner(converted, reference):
    generator = AudioGenerator.from_pretrained(converted[0])
    features, mask = generator.text_encoder.text_conditioning(list(reference["prompts"]))
    np.testing.assert_array_equal(np.asarray(mask), reference["text_mask"])
    masked = np.where(np.asarray(mask)[..., None], np.asarray(features), 0)
    assert_parity(masked, reference["text"], "T5 features")


def _conditions(generator: AudioGenerator, reference: dict):
    """The guidance rows of the reference's prompts (its T5 features, so only the model is compared)."""
    batch = len(reference["prompts"])
    text, mask = jnp.asarray(reference["text"]), jnp.asarray(reference["text_mask"])
    zeros = jnp.zeros((batch,), jnp.int32)
    totals = jnp.asarray(reference["seconds_total"]).astype(jnp.int32)
    return guidance_conditioning(text, mask, text, mask, jnp.zeros((batch,), bool), zeros, totals)


@pytest.mark.parity
def test_velocity_matches_the_reference(converted, reference):
    generator = AudioGenerator.from_pretrained(converted[0])
    cond, _ = _conditions(generator, reference)
    x, t = jnp.asarray(channels_last(reference["x"])), jnp.asarray(reference["t"])
    v = apply_model(generator.model, generator.params, x, t, cond)
    assert_parity(v, channels_last(reference["v"]), "velocity")


@pytest.mark.parity
def test_eight_pingpong_steps_match_the_reference_sample(converted, reference):
    generator = AudioGenerator.from_pretrained(converted[0])
    assert (generator.sampling["sampler"], generator.sampling["steps"], generator.sampling["cfg_scale"]) == (
        "pingpong",
        8,
        1.0,
    )
    cond, uncond = _conditions(generator, reference)
    velocity = guidance.guided_v_model(
        functools.partial(apply_model, generator.model, generator.params), cond, uncond, 1.0, 0.0
    )
    ts = flow_samplers.sampler_times("pingpong", 8, generator.sampling["sigma_max"])
    latents = flow_samplers.sample(
        velocity,
        jnp.asarray(channels_last(reference["noise"])),
        ts,
        sampler="pingpong",
        noise=jnp.asarray(channels_last(reference["step_noise"])),
    )
    assert_parity(latents, channels_last(reference["latents"]), "8-step latents")
    audio = generator.autoencoder.apply(
        {"params": generator.vae_params},
        latents / generator.latent_scale,
        method=type(generator.autoencoder).decode,
    )
    assert_parity(audio, channels_last(reference["audio"]), "decoded audio")


@pytest.mark.e2e
def test_sample_script_uses_the_small_defaults(converted, tmp_path):
    out = tmp_path / "samples"
    result = run_script(
        "launch/sample.py",
        f"--pretrained={converted[0]}",
        "--prompt=a short drum loop",
        "--seconds_total=0.15",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    wavs = sorted(p for p in os.listdir(out) if p.endswith(".wav"))
    assert wavs, os.listdir(out)
    with open(out / "settings.json") as f:
        settings = json.load(f)
    assert (settings["sampler"], settings["steps"], settings["cfg_scale"]) == ("pingpong", 8, 1.0), settings
