"""Load a trained model from its run directory (the Orbax checkpoints the trainer wrote).

A run directory holds `checkpoints/<step>/{state,config,data}` and, for tasks with
assets, `assets/` (e.g. the tokenizer). The config saved with the checkpoint rebuilds
the task, so the caller needs nothing but the directory.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections

from stable_audio_jax import parallel
from stable_audio_jax.errors import UserError
from stable_audio_jax.training.checkpointing import CheckpointDamaged, Checkpointer
from stable_audio_jax.training.task import Task
from stable_audio_jax.training.train_state import TrainState


@dataclasses.dataclass
class LoadedRun:
    config: ml_collections.ConfigDict
    task: Task
    state: TrainState
    step: int
    mesh: jax.sharding.Mesh
    rules: parallel.Rules


def _tuples(x: Any) -> Any:
    """JSON lists back to tuples (configs hold tuples: strides, depths, mesh shapes)."""
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def _checkpointer(run_dir: str) -> Checkpointer:
    """The run's checkpoints, read-only use. Raises FileNotFoundError: not a run directory."""
    run_dir = os.path.abspath(run_dir)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory: {checkpoint_dir} does not exist")
    return Checkpointer(checkpoint_dir, async_save=False, writer=False)


def _newest_step(checkpointer: Checkpointer, run_dir: str) -> int:
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(os.path.abspath(run_dir), 'checkpoints')}")
    return step


def run_task(run_dir: str) -> str:
    """The `task` of a run ("vae", "clap", "diffusion"), from its newest checkpoint's saved
    config; reads no weights, so a wrong directory is caught before any model loads.

    Raises:
      FileNotFoundError: no run directory or no checkpoint in it.
    """
    checkpointer = _checkpointer(run_dir)
    try:
        return str(checkpointer.restore_config(_newest_step(checkpointer, run_dir)).get("task", ""))
    finally:
        checkpointer.close()


def load_run(
    run_dir: str,
    *,
    step: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: parallel.Rules | None = None,
    edit_config: Callable[[ml_collections.ConfigDict], None] | None = None,
    ema_only: bool = False,
) -> LoadedRun:
    """Restore the train state of `run_dir` (newest step by default) onto `mesh`.

    Args:
      run_dir: a directory written by `Trainer` (the one passed as `--workdir`).
      step: a checkpointed step; None takes the newest.
      mesh: where the state goes; default: all local devices on the data axis (parameters
        replicated, sharded only where the rules put them on `fsdp`/`tensor`).
      rules: the logical rules that place it; default: the run's own (its config's `mesh`).
      edit_config: called on the saved config before the task is built (e.g. to point at
        the run's own copy of a tokenizer).
      ema_only: read only the EMA weights, what sampling and encoding use (no optimizer
        state or live params are read into memory); `state.params` and `state.opt_state`
        are then empty.

    Raises:
      FileNotFoundError: no run directory or no checkpoint in it.
    """
    checkpointer = _checkpointer(run_dir)
    try:
        available = _newest_step(checkpointer, run_dir)
        step = available if step is None else step
        config = ml_collections.ConfigDict(_tuples(checkpointer.restore_config(step)))
        if edit_config is not None:
            edit_config(config)
        from stable_audio_jax.training.registry import build_task  # every model: seconds that run_task skips

        task = build_task(config)
        if mesh is None:
            mesh = parallel.mesh_from_config(config.mesh, shape=(-1, 1, 1))[0]
        rules = parallel.rules_from_config(config.mesh) if rules is None else rules
        abstract, _ = parallel.abstract_with_shardings(task.init_state, jax.random.PRNGKey(0), mesh=mesh, rules=rules)
        try:
            # Frozen weights (a LoRA run's base) are not in checkpoints: `state.frozen` is empty.
            if ema_only:
                state = TrainState(
                    params={},
                    opt_state={},
                    **checkpointer.restore_fields(step, abstract.checkpointed(), ("step", "ema_params", "rng")),
                )
            else:
                state = TrainState.from_checkpoint(checkpointer.restore(step, abstract.checkpointed()))
        except CheckpointDamaged as error:
            raise UserError(
                f"checkpoint step {step} of {run_dir} is damaged: {error}; steps there: "
                f"{checkpointer.all_steps()} (resuming the run's training moves damaged steps aside)"
            ) from error
    finally:
        checkpointer.close()
    return LoadedRun(config=config, task=task, state=state, step=step, mesh=mesh, rules=rules)
