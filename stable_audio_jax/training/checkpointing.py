"""Orbax checkpoints of a run: train state + Grain iterator state + config.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. Every process calls `save`
and `restore` (Orbax writes each process's shards and its own iterator state); saves are
asynchronous, so `wait` before reading or exiting. Restoring takes an abstract state
whose leaves carry the *current* mesh's shardings, so a checkpoint written on one mesh
restores onto another.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """A run's checkpoint manager (keeps the newest `max_to_keep` steps)."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            create=True,
            enable_async_checkpointing=async_save,
            preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep),
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data", "config"),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any | None, config: dict) -> None:
        items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config))
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        logging.info("checkpoint: saving step %d to %s", step, self.directory)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Any:
        """Restore `state` (sharded like `abstract_state`) and, in place, the data iterator."""
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("checkpoint: restored step %d from %s", step, self.directory)
        return restored.state

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

    def reached_preemption(self, step: int) -> bool:
        """True on every process once any process got a preemption notice (multi-host)."""
        return jax.process_count() > 1 and self._manager.reached_preemption(step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
