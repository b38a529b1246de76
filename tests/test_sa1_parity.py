"""Stable Audio 1.0 checkpoints: the U-Net's reference mask semantics, CFG, and the import.

The fixture `fixtures/sa1_small/` is built by stable-audio-tools itself
(`tests/reference/make_sa1_reference.py`): a tiny `adp_cfg_1d` U-Net with `int` timing
conditioners and an Oobleck VAE, its outputs on padded prompts (plain, null context, CFG 6
with and without rescale, a padded negative prompt), and a tiny random `transformers`
RoBERTa saved as a LAION-CLAP text branch with its hidden states. Every comparison uses
the tolerance 1e-4 x max(1, |reference|) of `tests/parity.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.convert import sao_checkpoint
from stable_audio_jax.convert.clap_text_checkpoint import load_clap_text_branch
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, load_state_dict
from stable_audio_jax.diffusion import guidance
from stable_audio_jax.inference.generate import apply_model, guidance_conditioning
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel
from stable_audio_jax.models.text_encoder import TextEncoder
from tests.parity import assert_parity

pytestmark = pytest.mark.parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "sa1_small")
CHECKPOINT = os.path.join(FIXTURE, "model.safetensors")
MODEL_CONFIG = os.path.join(FIXTURE, "model_config.json")
CLAP_CHECKPOINT = os.path.join(FIXTURE, "clap.ckpt")
ROBERTA_DIR = os.path.join(FIXTURE, "roberta")
REFERENCE_PARAMS = 155_058  # what make_sa1_reference.py printed for its model (U-Net, conditioner, VAE)


def _model_config() -> dict:
    with open(MODEL_CONFIG) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


@pytest.fixture(scope="module")
def imported():
    """(architecture, diffusion params) read from the reference's checkpoint."""
    arch = sao_checkpoint.architecture_from_model_config(_model_config())
    reader = StateDictReader(load_state_dict(CHECKPOINT), source=CHECKPOINT)
    return arch, sao_checkpoint.diffusion_params_from_state_dict(reader, arch)


def _guided(
    config: LatentDiffusionConfig,
    params,
    ref: dict,
    scale: float,
    rescale_phi: float = 0.0,
    negative: bool = False,
    null: bool = False,
) -> np.ndarray:
    """Our v for the reference's inputs, through the generator's own guidance wiring."""
    batch = ref["x"].shape[0]
    negative_features, negative_mask = (
        (ref["negative"], ref["negative_mask"]) if negative else (ref["text"], ref["text_mask"])
    )
    cond, uncond = guidance_conditioning(
        jnp.asarray(ref["text"]),
        jnp.asarray(ref["text_mask"]),
        jnp.asarray(negative_features),
        jnp.asarray(negative_mask),
        jnp.full((batch,), negative),
        jnp.asarray(ref["seconds_start"]),
        jnp.asarray(ref["seconds_total"]),
    )
    if null:
        cond = uncond
    model = LatentDiffusionModel(config)
    v_model = guidance.guided_v_model(
        lambda x, t, c: apply_model(model, params, x, t, c), cond, uncond, scale, rescale_phi
    )
    v = v_model(jnp.asarray(ref["x"].transpose(0, 2, 1)), jnp.asarray(ref["t"]))
    return np.asarray(v).transpose(0, 2, 1)


def test_architecture_of_the_sa1_model_config(imported):
    arch, _ = imported
    unet = arch.diffusion.unet
    assert unet.mask_semantics == "reference" and arch.diffusion.dit is None
    assert (unet.channels, unet.multipliers, unet.factors, unet.attentions, unet.mapping_multiplier) == (
        16,
        (1, 2, 2),
        (1, 2),
        (0, 1, 1),
        2,
    )
    assert (unet.context_features, unet.context_length, arch.diffusion.text_length) == (16, 79, 77)
    assert arch.diffusion.timing_kind == "table" and not arch.diffusion.global_timing
    assert (arch.text_encoder, arch.text_max_length, arch.feature_layer) == ("clap_text", 77, -2)
    assert arch.sampling["cfg_scale"] == 6.0 and arch.sampling["rescale_phi"] == 0.4
    assert arch.autoencoder.downsampling_ratio == 8 and arch.autoencoder.final_tanh


def test_timing_defaults_follow_the_conditioner_type():
    """An `int` conditioner without `max_val` has SAT's default 512 rows (a `number` one: 1)."""
    config = copy.deepcopy(_model_config())
    for c in config["model"]["conditioning"]["configs"][1:]:
        c["config"] = {}
    assert sao_checkpoint.architecture_from_model_config(config).diffusion.max_seconds == 512


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda c: c["model"]["pretransform"]["config"]["encoder"].update(type="dac"),
            "pretransform.config.encoder.type",
        ),
        (lambda c: c["model"]["diffusion"]["config"].update(use_xattn_time=True), "diffusion.config.use_xattn_time"),
        (lambda c: c["model"]["diffusion"]["config"].update(use_nearest_upsample=True), "use_nearest_upsample"),
        (lambda c: c["model"]["diffusion"]["config"].update(stft_num_fft=64), r"unsupported diffusion.config keys"),
        (
            lambda c: c["model"]["diffusion"]["config"].update(context_embedding_max_length=80),
            "context_embedding_max_length",
        ),
        (lambda c: c["model"]["diffusion"]["config"].update(attentions=[0, 1]), "attentions"),
        (lambda c: c["model"]["diffusion"].update(global_cond_ids=["seconds_start"]), "global_cond_ids"),
        (lambda c: c["model"]["diffusion"].update(type="adp_1d"), "diffusion.type"),
        (
            lambda c: c["model"]["conditioning"]["configs"][0]["config"].update(use_text_features=False),
            "use_text_features",
        ),
        (lambda c: c["model"]["conditioning"]["configs"][0]["config"].update(project_out=True), "project_out"),
        (lambda c: c["model"]["conditioning"]["configs"][1].update(type="number"), "seconds_start type"),
    ],
)
def test_unsupported_sa1_options_name_the_field(edit, message):
    config = copy.deepcopy(_model_config())
    edit(config)
    with pytest.raises(ConversionError, match=message):
        sao_checkpoint.architecture_from_model_config(config)


@pytest.mark.parametrize(
    "case,scale,rescale_phi,negative,null",
    [
        ("v_plain", 1.0, 0.0, False, False),  # padded prompts alone
        ("v_null", 1.0, 0.0, False, True),  # the learned null context, with the prompt's mask
        ("v_cfg", 6.0, 0.0, False, False),  # CFG against the null context
        ("v_cfg_rescale", 6.0, 0.4, False, False),  # ... with CFG rescale (UNetCFG1d's default phi)
        ("v_neg_rescale", 6.0, 0.4, True, False),  # a padded negative prompt as the unconditional half
    ],
)
def test_unet_matches_the_reference(imported, reference, case, scale, rescale_phi, negative, null):
    arch, params = imported
    got = _guided(arch.diffusion, params, reference, scale, rescale_phi, negative=negative, null=null)
    assert_parity(got, reference[case], f"SA 1.0 U-Net {case}")


def test_strict_semantics_differ_only_where_there_is_padding(imported, reference):
    """Same parameters: the masking rule changes padded prompts' outputs (the issue users
    saw) and nothing when no token is padded."""
    arch, params = imported
    strict = dataclasses.replace(arch.diffusion, unet=dataclasses.replace(arch.diffusion.unet, mask_semantics="strict"))
    padded = _guided(strict, params, reference, 1.0)
    assert np.max(np.abs(padded - reference["v_plain"])) > 1e-2
    full = dict(reference, text_mask=np.ones_like(reference["text_mask"]))
    np.testing.assert_allclose(
        _guided(strict, params, full, 1.0), _guided(arch.diffusion, params, full, 1.0), atol=1e-5
    )


def test_clap_text_branch_matches_transformers(reference):
    config, params, tokenizer = load_clap_text_branch(CLAP_CHECKPOINT, ROBERTA_DIR)
    ids, mask = tokenizer([str(p) for p in reference["prompts"]])
    np.testing.assert_array_equal(ids, reference["input_ids"])
    np.testing.assert_array_equal(mask, reference["attention_mask"])
    hidden = TextEncoder(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)).hidden_states[-2]
    assert_parity(hidden, reference["text_features"], "CLAP text branch hidden_states[-2]")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "convert_sao.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("sa1") / "pretrained")
    result = _run(
        f"--checkpoint={CHECKPOINT}",
        f"--model_config={MODEL_CONFIG}",
        f"--clap_checkpoint={CLAP_CHECKPOINT}",
        f"--roberta_dir={ROBERTA_DIR}",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads(result.stdout[result.stdout.index("{") :])


def test_conversion_keeps_every_parameter(converted):
    out, summary = converted
    tensors = load_state_dict(CHECKPOINT)
    assert sum(tensors[k].size for k in tensors) == REFERENCE_PARAMS  # no buffers in this layout
    assert summary["params"]["diffusion"] + summary["params"]["autoencoder"] == REFERENCE_PARAMS
    clap = load_state_dict(CLAP_CHECKPOINT)
    text = sum(v.size for k, v in clap.items() if k.startswith("module.text_branch.") and not k.endswith("_ids"))
    assert summary["params"]["text_encoder"] == text
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["model"]["unet"]["mask_semantics"] == "reference"
    assert config["text_encoder"]["kind"] == "clap_text" and config["text_encoder"]["feature_layer"] == -2


def test_converted_sa1_samples(converted):
    from stable_audio_jax.inference.generate import AudioGenerator

    out, _ = converted
    generator = AudioGenerator.from_pretrained(out)
    assert generator.sampling["rescale_phi"] == 0.4 and generator.sampling["cfg_scale"] == 6.0
    assert generator.window_samples == 512 and generator.latent_frames == 64
    audio = generator.generate(
        ["a drum loop", ""], seconds_total=[0.01, 0.005], steps=2, seed=1, negative_prompt="noise"
    )
    assert audio.shape == (2, round(0.01 * 44100), 2) and np.all(np.isfinite(audio))
    assert np.all(audio[1, round(0.005 * 44100) :] == 0)


def test_missing_prompt_encoder_files_give_one_line(tmp_path):
    result = _run(f"--checkpoint={CHECKPOINT}", f"--model_config={MODEL_CONFIG}", f"--output_dir={tmp_path / 'x'}")
    assert result.returncode == 2 and "--clap_checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
