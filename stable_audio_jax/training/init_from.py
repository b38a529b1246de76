"""Start a run from existing weights (`config.init_from`): fine-tuning.

`init_from` names a pretrained directory (`pretrained.py`, e.g. converted Stable
Audio Open) or a run directory (the EMA weights of its newest step). The parts the task
exports (`Task.pretrained_parts`: the diffusion model, the VAE's autoencoder) start from
those weights, in `params` and in `ema_params`; the rest is fresh, as in a new run: step
0, the optimizer state, the per-step rng and parts the weights do not hold (a VAE's
discriminator). The config's architecture must match the weights exactly.

The trainer calls this only for a run directory without checkpoints; a run that has
checkpoints resumes from them.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from stable_audio_jax import parallel, pretrained
from stable_audio_jax.errors import UserError
from stable_audio_jax.training.checkpointing import shape_mismatch
from stable_audio_jax.training.task import Task
from stable_audio_jax.training.train_state import TrainState


def init_state_from(
    source: str, task: Task, abstract: TrainState, rng: jax.Array, *, mesh: jax.sharding.Mesh, rules: parallel.Rules
) -> tuple[TrainState, dict[str, Any]]:
    """A fresh state of `task` (as `task.init_state(rng)`, sharded like `abstract`) whose
    exported parts hold the weights of `source` (`Task.with_pretrained`), and those weights.

    Raises:
      UserError: `source` is neither kind of directory, holds another task's run, or its
        weights do not fit the config (naming the first differing parameter and both shapes).
    """
    weights = load_weights(source, task, task.pretrained_abstract(abstract), mesh=mesh, rules=rules)
    state, _ = parallel.init_sharded(task.init_state, rng, mesh=mesh, rules=rules)
    return task.with_pretrained(state, weights, abstract), weights


def load_weights(
    source: str, task: Task, wanted: dict[str, Any], *, mesh: jax.sharding.Mesh, rules: parallel.Rules
) -> dict[str, Any]:
    """`{part: params}` of `source` for each of `task.pretrained_parts`, checked against and
    read into `wanted` (`Task.pretrained_abstract`: `{part: abstract tree}`)."""
    flag = f"config.init_from={source}"
    if not task.pretrained_parts:
        raise UserError(f"{flag}: a {task.name} run cannot start from weights (only the diffusion and VAE tasks can)")
    if not os.path.isdir(source):
        raise UserError(f"{flag}: no such directory")
    if os.path.isfile(os.path.join(source, pretrained.CONFIG_FILE)):
        stored = _pretrained_metadata(source, flag)
    elif os.path.isdir(os.path.join(source, "checkpoints")):
        stored = _run_ema_params(source, task, mesh, rules, flag)
    else:
        raise UserError(
            f"{flag} is neither a pretrained model directory (no {pretrained.CONFIG_FILE}) nor a run "
            "directory (no checkpoints/)"
        )
    missing = [part for part in wanted if part not in stored]
    if missing:
        raise UserError(f"{flag} holds no {' or '.join(missing)} weights (it has {sorted(stored)})")
    mismatch = shape_mismatch({p: stored[p] for p in wanted}, wanted, check_dtypes=False)
    if mismatch is not None:
        raise UserError(
            f"{flag} does not fit this config: {mismatch}; the config's model must be the architecture of the weights"
        )
    if os.path.isfile(os.path.join(source, pretrained.CONFIG_FILE)):
        return pretrained.restore_pretrained_params(source, wanted)
    return {part: stored[part] for part in wanted}


def _pretrained_metadata(source: str, flag: str) -> dict[str, Any]:
    """The stored shapes of a pretrained directory's parts (no weights read)."""
    try:
        pretrained.read_pretrained_config(source)
        return pretrained.pretrained_params_metadata(source)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{flag}: {e}") from None


def _run_ema_params(
    source: str, task: Task, mesh: jax.sharding.Mesh, rules: parallel.Rules, flag: str
) -> dict[str, Any]:
    """The EMA params of the newest step of a run of the same task (or one of
    `task.init_from_tasks`), on `mesh`."""
    from stable_audio_jax.training.runs import load_run, run_task  # builds tasks: imported late

    try:
        kind = run_task(source)
    except FileNotFoundError as e:
        raise UserError(f"{flag}: {e}") from None
    if kind not in (task.init_from_tasks or (task.name,)):
        raise UserError(
            f"{flag} is a {kind or 'task-less'} run, but this config trains a {task.name} model "
            f"(config.task={task.name!r})"
        )
    return load_run(source, mesh=mesh, rules=rules, ema_only=True).state.ema_params
