"""A whole Stable Audio Open checkpoint, as the reference writes it, converts and samples.

The fixture `fixtures/sao_small/` is SAO's layout at a tiny size, built and randomised by
stable-audio-tools itself (`tests/reference/make_sao_model_reference.py`): Oobleck VAE,
two number conditioners, a continuous-transformer DiT, and SAO's `model_config.json`
structure (T5 prompt conditioner included). With the tiny T5 folder of `fixtures/t5_relu`
it goes through `launch/convert_sao.py` and `launch/sample.py --pretrained` as a user
would run them. Module-level numerical parity is in test_dit / test_sao_vae_parity /
test_t5 / test_sampler_parity.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from stable_audio_jax.convert import sao_checkpoint
from stable_audio_jax.convert.state_dict import ConversionError, load_state_dict
from tests.fixture_paths import CHECKPOINT, MODEL_CONFIG, T5_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUFFERS = ("rotary_pos_emb.inv_freq", "_norm.beta", "pre_norm.beta")  # state-dict tensors that are not parameters


def _model_config() -> dict:
    with open(MODEL_CONFIG) as f:
        return json.load(f)


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("sao") / "pretrained")
    result = _run(
        "convert_sao.py",
        f"--checkpoint={CHECKPOINT}",
        f"--model_config={MODEL_CONFIG}",
        f"--t5_dir={T5_DIR}",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads(result.stdout[result.stdout.index("{") :])


def test_architecture_from_the_model_config():
    arch = sao_checkpoint.architecture_from_model_config(_model_config())
    dit = arch.diffusion.dit
    assert (dit.embed_dim, dit.depth, dit.num_heads, dit.cond_token_dim, dit.global_cond_dim) == (64, 1, 2, 32, 64)
    assert arch.diffusion.timing_kind == "number" and arch.diffusion.global_timing
    assert arch.diffusion.text_length == 128 and arch.text_max_length == 128
    assert arch.autoencoder.downsampling_ratio == 64 and arch.autoencoder.latent_dim == 8
    assert arch.autoencoder.encoder_multipliers == (1, 1, 2, 4) and not arch.autoencoder.final_tanh
    assert (arch.sample_rate, arch.sample_size, arch.latent_scale) == (44100, 8192, 1.0)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["model"]["diffusion"]["config"].update(transformer_type="x-transformers"), "transformer_type"),
        (
            lambda c: c["model"]["diffusion"]["config"].update(flash=True),
            r"unsupported diffusion.config keys \['flash'\]",
        ),
        (lambda c: c["model"]["conditioning"]["configs"][0].update(type="clap_text"), "prompt type"),
        (lambda c: c["model"]["diffusion"].update(global_cond_ids=[]), "global_cond_ids"),
        (lambda c: c.update(model_type="autoencoder"), "model_type"),
        (lambda c: c["model"].pop("pretransform"), "missing 'pretransform'"),
    ],
)
def test_unsupported_model_configs_name_the_field(edit, message):
    config = copy.deepcopy(_model_config())
    edit(config)
    with pytest.raises(ConversionError, match=message):
        sao_checkpoint.architecture_from_model_config(config)


@pytest.mark.e2e
def test_conversion_keeps_every_parameter(converted):
    """The converted tree holds exactly the reference's parameters: every state-dict tensor
    but the buffers, element for element."""
    _, summary = converted
    tensors = dict(load_state_dict(CHECKPOINT))
    reference = sum(v.size for k, v in tensors.items() if not k.endswith(BUFFERS))
    assert reference == 168_474  # what the reference script printed for its model
    assert summary["params"]["diffusion"] + summary["params"]["autoencoder"] == reference
    assert summary["params"]["autoencoder"] == sum(v.size for k, v in tensors.items() if k.startswith("pretransform."))


@pytest.mark.e2e
def test_bad_inputs_give_one_line(tmp_path, converted):
    out, _ = converted
    broken = tmp_path / "model.safetensors"
    from safetensors.numpy import save_file

    tensors = dict(load_state_dict(CHECKPOINT))
    tensors["model.model.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(broken))
    result = _run(
        "convert_sao.py",
        f"--checkpoint={broken}",
        f"--model_config={MODEL_CONFIG}",
        f"--t5_dir={T5_DIR}",
        f"--output_dir={tmp_path / 'x'}",
    )
    assert result.returncode == 2 and "error:" in result.stderr and "'model.model.extra.weight'" in result.stderr
    result = _run(
        "convert_sao.py",
        f"--checkpoint={CHECKPOINT}",
        f"--model_config={MODEL_CONFIG}",
        f"--t5_dir={T5_DIR}",
        f"--output_dir={out}",
    )
    assert result.returncode == 2 and "already exists" in result.stderr
    result = _run("sample.py", f"--pretrained={tmp_path / 'nowhere'}", "--prompt=x")
    assert result.returncode == 2 and "does not exist" in result.stderr.strip().splitlines()[-1]


@pytest.mark.e2e
def test_generator_samples_with_sao_defaults_sharded(converted):
    from stable_audio_jax.inference.generate import AudioGenerator

    out, _ = converted
    generator = AudioGenerator.from_pretrained(out)
    assert generator.sampling["cfg_scale"] == 7.0 and generator.sampling["sampler"] == "dpmpp_3m_sde"
    assert (generator.sampling["sigma_min"], generator.sampling["sigma_max"]) == (0.3, 500.0)
    assert generator.window_samples == 8192 and generator.latent_frames == 128
    prompts = ["a drum loop", "warm pads", "", "solo piano"]  # 4 rows on 8 devices: padded, split, cut back
    audio = generator.generate(prompts, seconds_total=[0.1, 0.15, 0.05, 0.18], steps=4, seed=3)
    assert audio.shape == (4, round(0.18 * 44100), 2) and np.all(np.isfinite(audio))
    assert np.all(audio[2, round(0.05 * 44100) :] == 0)  # cut to its seconds_total, zero-padded
    # The same prompt alone gives the same clip as in the batch (rows are independent).
    alone = generator.generate(["warm pads", "a drum loop"], seconds_total=0.15, steps=4, seed=3)
    batch_row = generator.generate(["warm pads", "x"], seconds_total=0.15, steps=4, seed=3)
    np.testing.assert_allclose(alone[0], batch_row[0], atol=1e-5)
    # Audio-to-audio: the sampler starts from the init audio's latents plus noise at 0.5.
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(6000) / 44100)[:, None].repeat(2, axis=1)
    varied = generator.generate(["warm pads"], seconds_total=0.1, steps=3, init_audio=tone, init_noise_level=0.5)
    assert varied.shape == (1, round(0.1 * 44100), 2) and np.all(np.isfinite(varied))
    # A shorter window than trained (the DiT has no absolute positions): 0.1 s -> 69 latent frames.
    short = generator.generate(["warm pads"], seconds_total=0.05, window_seconds=0.1, steps=2, cut=False)
    assert short.shape == (1, 69 * 64, 2)
    with pytest.raises(ValueError, match=r"seconds_total must be in \(0, 0.10\]"):
        generator.generate(["warm pads"], seconds_total=0.15, window_seconds=0.1, steps=2)
    # stable-audio-tools' names for the k-diffusion samplers are accepted (a two-call
    # ancestral one and dpm_fast, which walks its own grid).
    for name in ("k-dpmpp-2s-ancestral", "k-dpm-fast"):
        other = generator.generate(["warm pads"], seconds_total=0.05, window_seconds=0.1, steps=2, sampler=name)
        assert other.shape == (1, round(0.05 * 44100), 2) and np.all(np.isfinite(other)), name


@pytest.mark.e2e
def test_sample_script_with_pretrained(converted, tmp_path):
    out, _ = converted
    samples = tmp_path / "samples"
    result = _run(
        "sample.py",
        f"--pretrained={out}",
        "--prompt=a drum loop",
        "--prompt=warm pads",
        "--seconds_total=0.1",
        "--steps=3",
        f"--output_dir={samples}",
        "--batch_size=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads((samples / "settings.json").read_text())
    assert settings["cfg_scale"] == 7.0 and settings["sampler"] == "dpmpp_3m_sde" and settings["steps"] == 3
    assert len(settings["files"]) == 2
    for name in settings["files"]:
        info = sf.info(str(samples / name))
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, round(0.1 * 44100))
        assert (samples / name.replace(".wav", ".png")).exists()


@pytest.mark.e2e
def test_changed_generator_settings_are_not_served_a_stale_trace(converted):
    """The device program takes every setting as an argument: changing `latent_scale` or the
    rules of a generator that has already sampled gives what a fresh generator with those
    settings gives (a trace keyed on the generator object would return the old audio)."""
    from stable_audio_jax.inference.generate import AudioGenerator

    out, _ = converted
    generator = AudioGenerator.from_pretrained(out)
    kwargs = dict(seconds_total=0.05, window_seconds=0.1, steps=2, seed=5)
    first = generator.generate(["warm pads"], **kwargs)
    generator.latent_scale = 2.0 * generator.latent_scale
    rescaled = generator.generate(["warm pads"], **kwargs)
    fresh = AudioGenerator.from_pretrained(out)
    fresh.latent_scale = generator.latent_scale
    np.testing.assert_array_equal(rescaled, fresh.generate(["warm pads"], **kwargs))
    assert not np.allclose(rescaled, first)
    # Other rules (every logical axis replicated) trace again and give the same audio.
    generator.latent_scale = fresh.latent_scale = fresh.latent_scale / 2.0
    generator.rules = tuple((name, None) for name, _ in generator.rules)
    np.testing.assert_allclose(generator.generate(["warm pads"], **kwargs), first, atol=1e-5)
