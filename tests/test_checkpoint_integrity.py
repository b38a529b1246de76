"""Checksums, the run lock, log truncation, the non-finite skip mode and the architecture
check on resume, in-process (the subprocess fault cases are in `test_faults.py`)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stable_audio_jax import integrity
from stable_audio_jax.errors import EXIT_LOCKED, EXIT_NONFINITE, UserError
from stable_audio_jax.training.diffusion_task import DiffusionTask
from stable_audio_jax.training.run_lock import RunLock
from stable_audio_jax.training.trainer import MetricLogger, Trainer
from tests.micro_diffusion import micro_config, write_latent_shards


def _tree():
    return {
        "w": jnp.arange(64 * 8, dtype=jnp.float32).reshape(64, 8) / 7.0,
        "half": jnp.linspace(-2, 2, 15, dtype=jnp.bfloat16).reshape(3, 5),
        "count": jnp.arange(5, dtype=jnp.int32),
        "flag": jnp.array([True, False]),
        "key": jax.random.PRNGKey(3),
        "scalar": jnp.float32(0.5),
    }


def test_checksum_is_the_same_on_devices_under_any_sharding_and_on_the_host():
    tree = _tree()
    host = integrity.host_checksum(jax.device_get(tree))
    assert host.shape == (len(jax.tree.leaves(tree)), 2) and host.dtype == np.uint32
    for shape, spec in (((8, 1), P("a", None)), ((2, 4), P("a", "b")), ((1, 8), P(None, "b"))):
        mesh = jax.make_mesh(shape, ("a", "b"))
        sharded = dict(tree, w=jax.device_put(tree["w"], NamedSharding(mesh, spec)))
        np.testing.assert_array_equal(np.asarray(jax.jit(integrity.state_checksum)(sharded)), host)


@pytest.mark.parametrize("change", ["swap two elements", "flip one bit", "roll"])
def test_checksum_names_the_changed_leaf(change):
    tree = jax.device_get(_tree())
    w = np.array(tree["w"])
    if change == "swap two elements":
        w[0, 1], w[1, 0] = w[1, 0], w[0, 1]
    elif change == "flip one bit":
        w.view(np.uint32)[5, 5] ^= 1
    else:
        w = np.roll(w, 1, axis=0)
    changed = integrity.host_checksum(dict(tree, w=w))
    assert integrity.first_mismatch(integrity.host_checksum(tree), changed, integrity.leaf_paths(tree)) == "w"
    assert integrity.first_mismatch(changed, changed, integrity.leaf_paths(tree)) is None


def test_run_lock_turns_a_second_holder_away_and_takes_over_a_dead_ones(tmp_path):
    first = RunLock(str(tmp_path))
    first.acquire()
    holder = json.loads(open(tmp_path / ".lock").read())
    assert holder["pid"] == os.getpid()
    with pytest.raises(UserError) as error:
        RunLock(str(tmp_path)).acquire()  # another open file description: flock conflicts
    assert error.value.exit_code == EXIT_LOCKED and f"pid {os.getpid()}" in str(error.value)
    first.release()
    # A lock file left by a process that died: its flock is gone, so it is taken over.
    (tmp_path / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 999999, "since": "then"}))
    second = RunLock(str(tmp_path))
    second.acquire()
    assert json.loads(open(tmp_path / ".lock").read())["pid"] == os.getpid()
    second.release()


def test_metric_log_is_cut_back_to_the_restored_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "split": "train", "loss": s}) + "\n" for s in range(1, 7)) + '{"step": 7, "spl'
    )
    logger = MetricLogger(str(tmp_path), enabled=True)
    logger.truncate_after(4)
    logger.write(5, {"loss": 50.0}, "train")
    logger.close()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["loss"] == 50.0


class PoisonedTask(DiffusionTask):
    """The micro diffusion task with NaN latents in the batches of the given steps."""

    def __init__(self, config, poisoned_steps):
        super().__init__(config)
        self.poisoned_steps, self.calls = set(poisoned_steps), 0

    def model_inputs(self, batch):
        inputs = super().model_inputs(batch)
        self.calls += 1
        if self.calls in self.poisoned_steps:
            inputs = {k: np.full_like(v, np.nan) if k == "latent_mean" else v for k, v in inputs.items()}
        return inputs


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_latent_shards(tmp_path_factory.mktemp("integrity") / "shards")


@pytest.mark.slow
def test_skip_mode_drops_the_nonfinite_update_and_carries_on(shards, tmp_path):
    config = micro_config(shards, num_steps=4, checkpoint_every=2, on_nonfinite="skip", max_nonfinite_skips=1)
    trainer = Trainer(config, str(tmp_path / "run"), PoisonedTask(config, poisoned_steps={2}))
    summary = trainer.train()
    assert summary["nonfinite_skipped"] == 1 and summary["end_step"] == 4
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(trainer.state.params)))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[1] == {"step": 2, "split": "train", "nonfinite_skipped": 1.0}  # no NaN loss in the log
    # More skips than allowed: exit code 3, and the newest checkpoint is still finite.
    config = micro_config(shards, num_steps=4, checkpoint_every=1, on_nonfinite="skip", max_nonfinite_skips=1)
    with pytest.raises(UserError) as error:
        Trainer(config, str(tmp_path / "run2"), PoisonedTask(config, poisoned_steps={2, 3})).train()
    assert error.value.exit_code == EXIT_NONFINITE and "training stopped at step 3" in str(error.value)


@pytest.mark.slow
def test_resume_with_another_architecture_names_the_first_different_array(shards, tmp_path):
    config = micro_config(shards, num_steps=2, checkpoint_every=2)
    Trainer(config, str(tmp_path / "run"), DiffusionTask(config)).train()
    wider = micro_config(shards, num_steps=4, checkpoint_every=2)
    wider.model.unet.channels = 2 * config.model.unet.channels
    with pytest.raises(UserError) as error:
        Trainer(wider, str(tmp_path / "run"), DiffusionTask(wider)).train()
    message = str(error.value)
    assert message.startswith("the checkpoint at step 2 in ") and "does not fit this config" in message
    assert "in the checkpoint but" in message and "\n" not in message


@pytest.mark.slow
def test_profile_steps_write_a_trace_of_that_window(shards, tmp_path):
    config = micro_config(shards, num_steps=3, checkpoint_every=3)
    config.trainer.profile_steps = (2, 3)
    Trainer(config, str(tmp_path / "run"), DiffusionTask(config)).train()
    traces = [f for _, _, files in os.walk(tmp_path / "run" / "profile") for f in files if f.endswith(".xplane.pb")]
    assert len(traces) == 1, traces
    config.trainer.profile_steps = (3, 2)
    with pytest.raises(UserError, match=r"profile_steps=\(3, 2\)"):
        Trainer(config, str(tmp_path / "bad"), DiffusionTask(config))
    assert not os.path.exists(tmp_path / "bad")
