"""`launch/train.py` as a user runs it: a short run, resume, and clear errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The micro VAE of tests/micro_configs.py, as command-line overrides of vae_tiny.
MICRO = [
    "--config.model.latent_dim=4",
    "--config.model.strides=(2,4)",
    "--config.model.encoder_channels=4",
    "--config.model.encoder_multipliers=(1,2,4)",
    "--config.model.decoder_channels=4",
    "--config.model.decoder_multipliers=(1,2,4)",
    "--config.discriminator.filters=4",
    "--config.discriminator.n_ffts=(256,128)",
    "--config.discriminator.hop_lengths=(64,32)",
    "--config.discriminator.win_lengths=(256,128)",
    "--config.loss.stft.fft_sizes=(256,128,64)",
    "--config.loss.stft.hop_sizes=(64,32,16)",
    "--config.data.sample_size=2048",
    "--config.data.batch_size=8",
    "--config.data.worker_count=1",
    "--config.mesh.shape=(2,4,1)",
    "--config.trainer.log_every=1",
    "--config.trainer.eval_every=2",
    "--config.trainer.checkpoint_every=2",
]


def run_train(*args, timeout=400):
    return subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "launch", "train.py"),
            "--config=" + os.path.join(ROOT, "configs", "vae_tiny.py"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.e2e
def test_train_script_runs_evaluates_and_resumes(synthetic_shards, tmp_path):
    workdir = str(tmp_path / "run")
    first = run_train(
        f"--workdir={workdir}", f"--config.data.train_shards={synthetic_shards}", "--config.trainer.num_steps=2", *MICRO
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert os.path.exists(os.path.join(workdir, "eval", "step_0000002", "clip0_reconstruction.wav"))
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    second = run_train(
        f"--workdir={workdir}", f"--config.data.train_shards={synthetic_shards}", "--config.trainer.num_steps=3", *MICRO
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step 2" in second.stderr
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"split": "train"' in line]
    assert steps == [1, 2, 3]


def test_unknown_config_key_is_a_clear_error(tmp_path):
    result = run_train(f"--workdir={tmp_path}", "--config.data.sample_sise=4096", timeout=120)
    assert result.returncode != 0
    assert "sample_sise" in result.stderr


@pytest.mark.slow
def test_missing_training_data_is_a_clear_error(tmp_path):
    result = run_train(f"--workdir={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "train_shards" in result.stderr
    missing = str(tmp_path / "no_such_shards")
    result = run_train(
        f"--workdir={tmp_path}", f"--config.data.train_shards={missing}", "--config.data.batch_size=8", timeout=120
    )
    assert result.returncode != 0
    assert "no_such_shards" in result.stderr.splitlines()[-1]
