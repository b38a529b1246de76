"""Fine-tuning from public weights: convert -> pre-encode with the pretrained directory ->
train from `init_from` -> resume, on the tiny SAO-layout fixture (`fixtures/sao_small/` +
the tiny T5 of `fixtures/t5_relu/`, see test_sao_checkpoint.py). The fixtures `converted` and
`latents` are conftest's; configs and the converter's params come from `sao_finetune`.
"""

from __future__ import annotations

import json
import logging
import os
import re

import jax
import ml_collections
import numpy as np
import pytest

from stable_audio_jax import parallel, pretrained
from stable_audio_jax.errors import UserError
from stable_audio_jax.training.diffusion_task import DiffusionTask
from stable_audio_jax.training.runs import load_run
from stable_audio_jax.training.trainer import Trainer
from stable_audio_jax.training.vae_task import VAETask
from tests.bad_input import Case, check_cases
from tests.fixture_paths import T5_DIR
from tests.micro_configs import micro_vae_config
from tests.sao_finetune import BATCH, WINDOW, converted_params, finetune_config

pytestmark = pytest.mark.slow


def _initial_state(config, workdir: str, task):
    trainer = Trainer(config, workdir, task)
    try:
        return jax.device_get(trainer.initial_state(None)[0])
    finally:
        trainer.close()


def _assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_pre_encode_with_the_pretrained_directory(converted, latents):
    """The shards hold the pretrained VAE's latents and T5 features equal (to float16) to a T5
    loaded on its own from the Hugging Face folder; timing comes from the audio as usual."""
    from stable_audio_jax.inference.t5 import T5TextEncoder
    from stable_audio_jax.input_pipeline.grain_pipeline import make_latent_dataset

    shards, report = latents
    assert report["pretrained"] == os.path.abspath(converted) and "vae_dir" not in report
    assert (report["latent_frames"], report["latent_dim"], report["text_length"]) == (WINDOW // 64, 8, 128)
    with open(os.path.join(shards, "train_pre_encode.json")) as f:
        assert json.load(f)["pretrained"] == os.path.abspath(converted)
    batch = next(
        iter(make_latent_dataset(shards, batch_size=report["records"], shuffle=False, shard_index=0, shard_count=1))
    )
    features, mask = T5TextEncoder.from_pretrained(T5_DIR, max_length=128).text_conditioning(
        [str(c) for c in batch["caption"]]
    )
    np.testing.assert_array_equal(batch["text_features"], np.asarray(features).astype(np.float16))
    np.testing.assert_array_equal(batch["text_mask"], np.asarray(mask))
    assert not np.any(batch["text_features"][~batch["text_mask"]])  # padding zeroed exactly
    assert batch["latent_mean"].shape == (report["records"], WINDOW // 64, 8) and np.all(batch["latent_std"] > 0)
    assert np.all(batch["seconds_total"] >= 1) and np.all(batch["seconds_start"] >= 0)


@pytest.mark.e2e
def test_finetune_starts_from_the_weights_learns_and_resumes(converted, latents, tmp_path, caplog):
    from stable_audio_jax.input_pipeline.grain_pipeline import make_latent_dataset

    shards, _ = latents
    config = finetune_config(converted, shards)
    task = DiffusionTask(config)
    weights = converted_params("diffusion")
    state = _initial_state(config, str(tmp_path / "run"), task)
    _assert_trees_equal(state.params["diffusion"], weights)
    _assert_trees_equal(state.ema_params["diffusion"], weights)
    assert int(state.step) == 0 and not any(np.any(x) for x in jax.tree.leaves(state.opt_state))  # fresh Adam

    summary = Trainer(config, str(tmp_path / "run"), task).train()
    assert summary["start_step"] == 0 and summary["end_step"] == 8
    # The loss on one fixed batch with fixed noise falls from the converted weights.
    batch = parallel.host_to_global(
        task.model_inputs(
            next(iter(make_latent_dataset(shards, batch_size=BATCH, shuffle=False, shard_index=0, shard_count=1)))
        ),
        parallel.create_mesh((-1, 1, 1)),
    )
    fixed_loss = jax.jit(lambda p, b: task.loss(p, b, jax.random.PRNGKey(7), 0.0)[0])
    before = float(fixed_loss(weights, batch))
    after = float(fixed_loss(jax.device_get(load_run(str(tmp_path / "run")).state.params["diffusion"]), batch))
    print(f"fixed-batch v-loss {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before

    # A second run on the same workdir resumes at step 8 and ignores init_from.
    with caplog.at_level(logging.INFO):
        again = Trainer(finetune_config(converted, shards, num_steps=10), str(tmp_path / "run"), task).train()
    assert again["start_step"] == 8 and again["end_step"] == 10
    assert any("init_from" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)

    # A run directory works as init_from too: its newest EMA weights.
    ema = jax.device_get(load_run(str(tmp_path / "run")).state.ema_params["diffusion"])
    from_run = finetune_config(converted, shards, init_from=str(tmp_path / "run"))
    state = _initial_state(from_run, str(tmp_path / "from_run"), DiffusionTask(from_run))
    _assert_trees_equal(state.params["diffusion"], ema)
    assert int(state.step) == 0

    # Sampling the fine-tuned run with the pretrained directory's VAE and T5.
    from stable_audio_jax.inference.generate import AudioGenerator

    generator = AudioGenerator.from_pretrained(converted, diffusion_dir=str(tmp_path / "run"))
    _assert_trees_equal(jax.device_get(generator.params), ema)
    assert generator.window_samples == WINDOW and generator.sampling["cfg_scale"] == 7.0
    audio = generator.generate(["warm pads"], seconds_total=0.05, steps=2)
    assert audio.shape == (1, round(0.05 * 44100), 2) and np.all(np.isfinite(audio))

    # Exported as a pretrained directory of its own: the run's EMA weights, the rest the original's.
    from stable_audio_jax.inference.fine_tuned import export_pretrained

    exported = str(tmp_path / "exported")
    summary = export_pretrained(converted, exported, diffusion_dir=str(tmp_path / "run"))
    assert summary["diffusion_dir"] == os.path.abspath(tmp_path / "run") and summary["lora"] == []
    shared = AudioGenerator.from_pretrained(exported)
    _assert_trees_equal(jax.device_get(shared.params), ema)
    _assert_trees_equal(jax.device_get(shared.vae_params), jax.device_get(generator.vae_params))


def test_vae_starts_from_the_pretrained_autoencoder(converted, tmp_path):
    """The VAE task takes the pretrained directory's autoencoder; its discriminator is fresh."""
    config = micro_vae_config()
    autoencoder = pretrained.read_pretrained_config(converted)["autoencoder"]
    config.model = ml_collections.ConfigDict({**config.model.to_dict(), **autoencoder})
    config.init_from = converted
    state = _initial_state(config, str(tmp_path / "vae"), VAETask(config))
    weights = converted_params("autoencoder")
    _assert_trees_equal(state.params["autoencoder"], weights)
    _assert_trees_equal(state.ema_params["autoencoder"], weights)
    fresh = _initial_state(micro_vae_config(), str(tmp_path / "fresh"), VAETask(micro_vae_config()))
    _assert_trees_equal(state.params["discriminator"], fresh.params["discriminator"])
    assert int(state.step) == 0 and not any(np.any(x) for x in jax.tree.leaves(state.opt_state))


def _fake_run(directory: str, task: str) -> str:
    """A run directory with one checkpoint whose saved config names `task` (all `run_task` reads)."""
    from stable_audio_jax.training.checkpointing import Checkpointer

    checkpointer = Checkpointer(os.path.join(directory, "checkpoints"), async_save=False)
    checkpointer.save(1, {"x": jax.numpy.zeros(2)}, None, {"task": task})
    checkpointer.close()
    return directory


def test_bad_init_from_is_one_line(converted, latents, tmp_path):
    shards, _ = latents
    narrow = finetune_config(converted, shards)
    narrow.model.dit.ff_mult = 2  # the weights' feed-forward layers are 4x wide
    with pytest.raises(UserError) as error:
        _initial_state(narrow, str(tmp_path / "narrow"), DiffusionTask(narrow))
    match = re.search(
        r"does not fit this config: (diffusion\.\S+) is float32(\[[0-9, ]+\]) in the checkpoint "
        r"but float32(\[[0-9, ]+\]) in this config",
        str(error.value),
    )
    assert match and ".ff" in match.group(1) and match.group(2) != match.group(3), str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    vae_run = _fake_run(str(tmp_path / "vae_run"), "vae")
    for source, message in (
        (str(empty), "neither a pretrained model directory"),
        (str(tmp_path / "nowhere"), "no such directory"),
        (vae_run, "is a vae run, but this config trains a diffusion"),
    ):
        config = finetune_config(converted, shards, init_from=source)
        with pytest.raises(UserError, match=message):
            _initial_state(config, str(tmp_path / "bad"), DiffusionTask(config))
    assert not os.path.exists(tmp_path / "bad" / "checkpoints" / "0")


def test_bad_finetune_input_from_the_command_line(converted, latents, synthetic_shards, tmp_path):
    shards, _ = latents
    vae_run = _fake_run(str(tmp_path / "vae_run"), "vae")
    out = str(tmp_path / "latents")
    pre_encode = [f"--input={synthetic_shards}", f"--output_dir={out}", f"--sample_size={WINDOW}"]
    workdir, other = str(tmp_path / "run"), str(tmp_path / "other")
    check_cases(
        [
            Case(
                "data/pre_encode.py",
                pre_encode + [f"--pretrained={converted}", f"--vae_dir={vae_run}"],
                ["--pretrained", "--vae_dir"],
                [out],
            ),
            Case(
                "data/pre_encode.py",
                pre_encode + [f"--pretrained={vae_run}"],
                [f"--pretrained={vae_run}", "training run directory"],
                [out],
            ),
            Case(
                "launch/train.py",
                [
                    "--config=configs/dit_sao_finetune.py",
                    f"--workdir={workdir}",
                    f"--config.data.train_shards={shards}",
                ],
                ["config.init_from"],
                [workdir],
            ),
            # Raised once JAX runs: --verbosity=-1 keeps the trainer's INFO logs off stderr.
            Case(
                "launch/train.py",
                [
                    "--config=configs/dit_tiny.py",
                    f"--workdir={other}",
                    "--verbosity=-1",
                    "--config.trainer.eval_every=0",
                    f"--config.data.train_shards={shards}",
                    f"--config.init_from={vae_run}",
                ],
                [f"config.init_from={vae_run}", "vae run"],
                [os.path.join(other, "checkpoints", "0")],
            ),
        ]
    )
