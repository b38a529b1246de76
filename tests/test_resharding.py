"""Checkpoints move between meshes, and FSDP really splits the state.

A micro diffusion run trains 2 steps on a (data 2, fsdp 4) mesh and checkpoints. The checkpoint
restores bit-exactly onto (data 8, fsdp 1) and onto (data 2, fsdp 2) over the first 4 devices,
and training continues there: step 3 has the loss it has on the original mesh. A fresh state on
an (fsdp 8) mesh gives each device an eighth of the big kernels and of their Adam moments.
"""

from __future__ import annotations

import math
import os
import shutil

import jax
import numpy as np
import optax
import pytest

from stable_audio_jax import parallel
from stable_audio_jax.training.checkpointing import Checkpointer
from stable_audio_jax.training.diffusion_task import DiffusionTask
from stable_audio_jax.training.trainer import Trainer
from tests.micro_diffusion import micro_config, write_latent_shards

pytestmark = pytest.mark.slow

RULES = parallel.DEFAULT_RULES
RTOL = 1e-5  # one step on another mesh: only the reduction order changes


def continue_run(run, workdir: str, shape: tuple[int, ...], num_devices: int = 8) -> dict:
    """Copy the 2-step run to `workdir` and train it to step 3 on a `shape` mesh of the first
    `num_devices` devices; returns the trainer's summary."""
    shutil.copytree(run["workdir"], workdir)
    config = run["config"].copy_and_resolve_references()
    config.mesh.shape = shape
    config.trainer.num_steps = 3
    mesh = parallel.create_mesh(shape, devices=jax.devices()[:num_devices])
    return Trainer(config, workdir, DiffusionTask(config), mesh=mesh).train()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """2 steps on (data 2, fsdp 4), checkpointed; the state as saved, and step 3's loss there."""
    root = tmp_path_factory.mktemp("resharding")
    config = micro_config(write_latent_shards(root / "latents"), num_steps=2, eval_every=0)
    assert tuple(config.mesh.shape) == (2, 4, 1)
    trainer = Trainer(config, str(root / "run"), DiffusionTask(config))
    trainer.train()
    run = {"config": config, "workdir": str(root / "run"), "saved": jax.device_get(trainer.state)}
    run["step3_loss"] = continue_run(run, str(root / "reference"), (2, 4, 1))["last_metrics"]["loss"]
    return run


def restore(run, mesh) -> tuple:
    """The step-2 checkpoint restored onto `mesh`, and the shardings it should have there."""
    task = DiffusionTask(run["config"])
    abstract, shardings = parallel.abstract_with_shardings(
        task.init_state, jax.random.PRNGKey(0), mesh=mesh, rules=RULES
    )
    checkpointer = Checkpointer(os.path.join(run["workdir"], "checkpoints"), async_save=False)
    try:
        return checkpointer.restore(2, abstract.checkpointed()), shardings.checkpointed()
    finally:
        checkpointer.close()


@pytest.mark.parametrize("shape, num_devices", [((8, 1, 1), 8), ((2, 2, 1), 4)], ids=["data8", "4_devices"])
def test_checkpoint_restores_exactly_onto_another_mesh_and_trains_on(run, tmp_path, shape, num_devices):
    mesh = parallel.create_mesh(shape, devices=jax.devices()[:num_devices])
    restored, shardings = restore(run, mesh)
    paths = jax.tree_util.tree_leaves_with_path(restored)
    assert len(paths) == len(jax.tree.leaves(run["saved"])) > 400  # params, Adam mu and nu, EMA, step, rng
    for (path, leaf), saved, sharding in zip(paths, jax.tree.leaves(run["saved"]), jax.tree.leaves(shardings)):
        assert leaf.sharding == sharding, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(leaf), saved, err_msg=jax.tree_util.keystr(path))

    summary = continue_run(run, str(tmp_path / "run"), shape, num_devices)
    assert (summary["start_step"], summary["end_step"]) == (2, 3)
    loss = summary["last_metrics"]["loss"]
    assert math.isfinite(loss)
    np.testing.assert_allclose(loss, run["step3_loss"], rtol=RTOL)


def test_fsdp_splits_the_largest_parameters_and_their_adam_moments():
    """Fresh sharded state on (fsdp 8): each device holds 1/8 of the 6 largest kernels, of their
    Adam mu and nu and of their EMA copy; about 1/8 of all parameters overall."""
    config = micro_config("unused")  # the state needs no data
    task = DiffusionTask(config)
    mesh = parallel.create_mesh((1, 8, 1))
    state, _ = parallel.init_sharded(task.init_state, jax.random.PRNGKey(0), mesh=mesh, rules=RULES)
    adam = next(s for s in state.opt_state["diffusion"] if isinstance(s, optax.ScaleByAdamState))

    def per_device(leaf: jax.Array) -> int:
        sizes = {shard.data.size for shard in leaf.addressable_shards}
        assert len(leaf.addressable_shards) == 8 and len(sizes) == 1  # even split
        return sizes.pop()

    params = jax.tree_util.tree_leaves_with_path(state.params["diffusion"])
    largest = sorted(params, key=lambda p: -p[1].size)[:6]
    assert largest[-1][1].size >= 2048  # e.g. the bottleneck's 3x32x32 conv kernels
    for path, _ in largest:
        for tree in (state.params["diffusion"], adam.mu, adam.nu, state.ema_params["diffusion"]):
            leaf = _at(tree, path)
            assert per_device(leaf) * 8 == leaf.size, (jax.tree_util.keystr(path), leaf.sharding.spec)
    total = sum(leaf.size for _, leaf in params)
    held = sum(per_device(leaf) for _, leaf in params)
    print(f"fsdp 8: each device holds {held} of {total} parameters ({held / total:.3f})")
    assert held / total < 0.15  # only norms, biases and the 4-channel output conv stay replicated


def _at(tree, path):
    """The leaf of `tree` at key path `path`."""
    for key in path:
        tree = tree[key.key]
    return tree
