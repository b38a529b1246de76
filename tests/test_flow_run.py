"""A rectified-flow model end to end on the tiny SAO-layout fixture: a full fine-tuning run on the
flow objective, then 8 pingpong steps without CFG through `AudioGenerator` and `launch/sample.py`,
export, and the one-line errors of mismatched samplers and ranges."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stable_audio_jax import pretrained
from stable_audio_jax.convert import sao_checkpoint
from stable_audio_jax.convert.state_dict import ConversionError
from stable_audio_jax.diffusion.samplers import UnknownSamplerError
from stable_audio_jax.diffusion.sampling_config import FEW_STEP_FLOW
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference.fine_tuned import export_pretrained
from stable_audio_jax.inference.generate import AudioGenerator
from stable_audio_jax.training.diffusion_task import DiffusionTask
from stable_audio_jax.training.trainer import Trainer
from tests.bad_input import ROOT, Case, check_cases
from tests.fixture_paths import CHECKPOINT, MODEL_CONFIG, T5_DIR
from tests.sao_finetune import finetune_config

pytestmark = pytest.mark.e2e

SECONDS = 0.05  # within the fixture's 4096-sample window


@pytest.fixture(scope="module")
def flow_run(converted, latents, tmp_path_factory):
    """4 steps of the fixture's DiT fine-tuned on the rectified-flow objective (logit-normal
    times, with the length shift), sampling as a few-step model."""
    config = finetune_config(converted, latents[0], num_steps=4, checkpoint_every=4)
    config.model.objective = "rectified_flow"
    config.diffusion.timestep_sampler = "logit_normal"
    config.diffusion.distribution_shift.enabled = True
    config.sampling.update(FEW_STEP_FLOW.to_dict())
    workdir = str(tmp_path_factory.mktemp("flow_run"))
    summary = Trainer(config, workdir, DiffusionTask(config)).train()
    return {"workdir": workdir, "summary": summary}


def test_flow_run_trains_and_keeps_its_objective(flow_run):
    summary = flow_run["summary"]
    assert summary["end_step"] == 4 and np.isfinite(summary["last_metrics"]["loss"])
    from stable_audio_jax.training.runs import load_run

    run = load_run(flow_run["workdir"], ema_only=True)
    assert run.config.model.objective == "rectified_flow" and run.task.objective.timestep_sampler == "logit_normal"
    assert run.task.objective.shift is not None


def test_few_step_generation_from_the_run(converted, flow_run):
    generator = AudioGenerator.from_pretrained(converted, diffusion_dir=flow_run["workdir"])
    # The directory's settings are a v-model's: the run, which changed the objective, brings its own.
    assert generator.objective == "rectified_flow"
    assert {k: generator.sampling[k] for k in ("sampler", "steps", "cfg_scale")} == dict(
        sampler="pingpong", steps=8, cfg_scale=1.0
    )
    audio = generator.generate(["warm pads"], seconds_total=SECONDS, seed=3)
    assert audio.shape == (1, round(SECONDS * generator.sample_rate), 2) and np.all(np.isfinite(audio))
    np.testing.assert_array_equal(audio, generator.generate(["warm pads"], seconds_total=SECONDS, seed=3))
    assert not np.array_equal(audio, generator.generate(["warm pads"], seconds_total=SECONDS, seed=4))
    for sampler in ("euler", "rk4", "dpmpp"):
        other = generator.generate(["warm pads"], seconds_total=SECONDS, sampler=sampler, steps=4)
        assert np.all(np.isfinite(other)), sampler
    init = generator.generate(
        ["warm pads"], seconds_total=SECONDS, init_audio=audio[0], init_noise_level=0.5, cut=False
    )
    assert np.all(np.isfinite(init))
    with pytest.raises(UnknownSamplerError, match="'dpmpp_3m_sde' is not one for a rectified-flow model"):
        generator.generate(["x"], seconds_total=SECONDS, sampler="dpmpp_3m_sde")
    with pytest.raises(UserError, match=r"sigma_max must be in \(0, 1\]"):
        generator.generate(["x"], seconds_total=SECONDS, sigma_max=1.5)
    with pytest.raises(UserError, match=r"init_noise_level must be in \(0, 1\]"):
        generator.generate(["x"], seconds_total=SECONDS, init_audio=audio[0], init_noise_level=2.0)


def test_a_v_model_refuses_flow_samplers(converted):
    generator = AudioGenerator.from_pretrained(converted)
    assert generator.objective == "v"
    with pytest.raises(UnknownSamplerError, match="for rectified-flow models; this v-objective model"):
        generator.generate(["x"], seconds_total=SECONDS, sampler="pingpong", steps=8)


def test_export_keeps_the_flow_objective(converted, flow_run, tmp_path):
    out = str(tmp_path / "exported")
    export_pretrained(converted, out, diffusion_dir=flow_run["workdir"])
    config = pretrained.read_pretrained_config(out)
    assert config["model"]["objective"] == "rectified_flow" and config["sampling"]["sampler"] == "pingpong"
    generator = AudioGenerator.from_pretrained(out)
    assert generator.objective == "rectified_flow" and generator.sampling["steps"] == 8


def test_sample_script_defaults_and_bad_input(converted, flow_run, tmp_path):
    exported = str(tmp_path / "flow_model")
    shutil.rmtree(exported, ignore_errors=True)
    export_pretrained(converted, exported, diffusion_dir=flow_run["workdir"])
    out = str(tmp_path / "samples")
    proc = subprocess.run(
        [
            sys.executable,
            "launch/sample.py",
            f"--pretrained={exported}",
            "--prompt=warm pads",
            f"--seconds_total={SECONDS}",
            f"--output_dir={out}",
        ],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(out, "settings.json")) as f:
        settings = json.load(f)
    assert (settings["sampler"], settings["steps"], settings["cfg_scale"]) == ("pingpong", 8, 1.0)
    base = ["launch/sample.py", f"--pretrained={exported}", "--prompt=x", f"--seconds_total={SECONDS}"]
    check_cases(
        [
            Case(
                base[0],
                base[1:] + ["--sampler=dpmpp_3m_sde", f"--output_dir={tmp_path / 'a'}"],
                ["dpmpp_3m_sde", "pingpong"],
                not_written=[str(tmp_path / "a")],
            ),
            Case(
                base[0],
                base[1:] + ["--sigma_max=1.5", f"--output_dir={tmp_path / 'b'}"],
                ["sigma_max"],
                not_written=[str(tmp_path / "b")],
            ),
            Case(
                base[0],
                base[1:] + ["--sampler=nope", f"--output_dir={tmp_path / 'c'}"],
                ["nope", "pingpong", "dpmpp_3m_sde"],
                not_written=[str(tmp_path / "c")],
            ),
        ]
    )


def _model_config_with(tmp_path, **diffusion) -> str:
    with open(MODEL_CONFIG) as f:
        config = json.load(f)
    config["model"]["diffusion"].update(diffusion)
    path = str(tmp_path / f"model_config_{len(os.listdir(tmp_path))}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def test_a_flow_dit_converts_with_the_reference_defaults(tmp_path):
    """A stable-audio-tools DiT trained as "rf_denoiser" converts to a flow model that samples
    with the reference's defaults for it (8 pingpong steps, no CFG); "rectified_flow" gets 50
    Euler steps with CFG 7; what is not imported is refused naming the field."""
    for objective, want in (("rf_denoiser", ("pingpong", 8, 1.0)), ("rectified_flow", ("euler", 50, 7.0))):
        out = str(tmp_path / objective)
        sao_checkpoint.convert_checkpoint(
            CHECKPOINT,
            _model_config_with(tmp_path, diffusion_objective=objective),
            out,
            t5_dir=T5_DIR,
            log=lambda _: None,
        )
        config = pretrained.read_pretrained_config(out)
        sampling = config["sampling"]
        assert config["model"]["objective"] == objective
        assert (sampling["sampler"], sampling["steps"], sampling["cfg_scale"]) == want
    for diffusion, field in (
        ({"diffusion_objective": "eps"}, "diffusion.diffusion_objective"),
        (
            {"diffusion_objective": "rectified_flow", "distribution_shift_options": {}},
            "diffusion.distribution_shift_options",
        ),
    ):
        with pytest.raises(ConversionError, match=field):
            sao_checkpoint.convert_checkpoint(
                CHECKPOINT,
                _model_config_with(tmp_path, **diffusion),
                str(tmp_path / "refused"),
                t5_dir=T5_DIR,
                log=lambda _: None,
            )
