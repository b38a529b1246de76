"""Orbax checkpoints of a run: train state + Grain iterator state + config + checksums.

Layout: `<workdir>/checkpoints/<step>/{state,data,config,integrity}`. Every process calls
`save` and `restore` (Orbax writes each process's shards and its own iterator state); saves
are asynchronous, so `wait` before reading or exiting. Restoring takes an abstract state
whose leaves carry the *current* mesh's shardings, so a checkpoint written on one mesh
restores onto another.

Integrity: `integrity` holds a checksum of every state array (`integrity.py`),
taken on the devices at save time. `restore_latest` restores the newest checkpoint whose
files read back and whose arrays match their checksums; a damaged one (a truncated,
deleted or overwritten file, bad metadata, a garbled iterator state) is named in one log
line, moved to `<workdir>/checkpoints_damaged/<step>` and the next older one is tried.
Orbax writes a step into a temporary directory and renames it when complete, so a save cut
short by a kill never looks like a checkpoint.

Rotation keeps the newest `max_to_keep` steps plus the newest *verified* one: a step this
process has read back and checked (at resume, or by `verify` after a save), so a run never
deletes its last known-good checkpoint however many newer ones turn out damaged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any, Sequence

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import type_handlers

from stable_audio_jax import integrity
from stable_audio_jax.errors import EXIT_NO_CHECKPOINT, UserError

try:  # the per-array metadata the default jax.Array handler records; Orbax does not export it
    from orbax.checkpoint._src.metadata.array_metadata_store import Store as _ArrayMetadataStore
except ImportError:  # pragma: no cover - a moved module only loses that metadata
    _ArrayMetadataStore = None

# Orbax writes a shard held by R replicas as R slices, one per replica ("replica-parallel"),
# each cut by an eager device slice. For small arrays the slicing costs far more than the
# parallel write saves: the first save of the micro diffusion state (812 arrays, 2 replicas)
# takes 9 s on CPU with it and 0.8 s without. Only shards of at least this many bytes per
# replica are split.
MIN_REPLICA_SLICE_BYTES = 1 << 20
# Free space a save needs beyond the state's own bytes (metadata, the iterator state, and the
# slack of a file system that is nearly full).
DISK_HEADROOM = 1.1
DAMAGED_DIR = "checkpoints_damaged"


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's standard pytree handler, with replica-parallel writes for large shards only."""
    array_handler = type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        array_metadata_store=_ArrayMetadataStore() if _ArrayMetadataStore else None,
    )
    registry = type_handlers.create_type_handler_registry(
        *[(ty, type_handlers.get_type_handler(ty)) for ty in type_handlers.supported_types() if ty is not jax.Array],
        (jax.Array, array_handler),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


@dataclasses.dataclass
class _KeepLatestAndVerified:
    """Orbax preservation policy: the newest `n` steps, and the newest verified step."""

    n: int
    verified: int | None = None

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        newest = {c.step for c in checkpoints[-self.n :]}
        return [c.step in newest or c.step == self.verified for c in checkpoints]


class CheckpointDamaged(Exception):
    """A checkpoint step that cannot be restored as written; the message says why."""


def shape_mismatch(metadata_tree: Any, abstract: Any, *, check_dtypes: bool = True) -> str | None:
    """The first difference between a checkpoint's array metadata and the abstract state:
    a missing/extra path, or a shape/dtype (shape only without `check_dtypes`), described in
    one phrase; None when they agree."""
    saved = dict(zip(integrity.leaf_paths(metadata_tree), jax.tree.leaves(metadata_tree)))
    wanted = dict(zip(integrity.leaf_paths(abstract), jax.tree.leaves(abstract)))
    for path, leaf in wanted.items():
        if path not in saved:
            return f"{path} (shape {tuple(leaf.shape)}) is not in the checkpoint"
        meta = saved[path]
        if tuple(meta.shape) != tuple(leaf.shape) or (check_dtypes and np.dtype(meta.dtype) != np.dtype(leaf.dtype)):
            return (
                f"{path} is {np.dtype(meta.dtype).name}{list(meta.shape)} in the checkpoint but "
                f"{np.dtype(leaf.dtype).name}{list(leaf.shape)} in this config"
            )
    for path in saved:
        if path not in wanted:
            return f"the checkpoint has {path}, which this config does not"
    return None


def _short(error: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters (Orbax's messages span many)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _all_processes(ok: bool) -> bool:
    """True when `ok` holds on every process (one vote each), so all fall back together."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


class Checkpointer:
    """A run's checkpoint manager (keeps the newest `max_to_keep` steps + the newest verified)."""

    def __init__(
        self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True, writer: bool = True
    ):
        """`writer=False` for readers (sampling, export): they never delete or move anything,
        so a run that is still training is left alone."""
        self.directory = os.path.abspath(os.fspath(directory))
        self._writer = writer
        self._policy = _KeepLatestAndVerified(max_to_keep)
        self._async = async_save
        self._checksum_fn = jax.jit(integrity.state_checksum)
        self._manager = self._make_manager()

    def _make_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            create=self._writer,
            enable_async_checkpointing=self._async,
            preservation_policy=self._policy,
            cleanup_tmp_directories=self._writer,  # a save cut short by a kill leaves only a tmp dir
        )
        return ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data", "config", "integrity"),
            item_handlers={
                "state": _state_handler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
                "integrity": ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    @property
    def verified_step(self) -> int | None:
        return self._policy.verified

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, data_iterator: Any | None, config: dict) -> None:
        """Start saving `state` at `step` (asynchronously). Raises `UserError` at once when the
        disk lacks room for it, before anything is written."""
        # The previous save may still be writing in the background: the free space is only
        # known once it is done (Orbax would wait for it at the start of this save anyway).
        self.check_for_errors(wait=True)
        self._check_disk_space(step, state)
        checksum = np.asarray(self._checksum_fn(state).addressable_data(0))
        record = {"step": int(step), "num_arrays": int(checksum.shape[0]), "checksum": checksum.tolist()}
        items = dict(
            state=ocp.args.PyTreeSave(state), config=ocp.args.JsonSave(config), integrity=ocp.args.JsonSave(record)
        )
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as error:  # noqa: BLE001 - a write that fails part-way (e.g. the disk filled)
            raise UserError(
                f"writing the checkpoint of step {step} to {self.directory} failed "
                f"({_short(error)}); the previous checkpoint ({self.latest_step()}) is intact"
            ) from error
        logging.info("checkpoint: saving step %d to %s", step, self.directory)

    def _check_disk_space(self, step: int, state: Any) -> None:
        """The state's bytes, or the newest checkpoint's size on disk when that is larger (the
        OCDBT files and metadata take more than the raw arrays), plus headroom."""
        needed = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
        latest = self.latest_step()
        if latest is not None:
            folder = os.path.join(self.directory, str(latest))
            needed = max(
                needed, sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
            )
        needed *= DISK_HEADROOM
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise UserError(
                f"not enough disk space for the checkpoint of step {step} in {self.directory}: "
                f"it needs about {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free; "
                f"the previous checkpoint ({self.latest_step()}) is intact"
            )

    def check_for_errors(self, wait: bool = False) -> None:
        """Raise the error of a finished background save, if it failed (e.g. the disk filled);
        with `wait`, first wait for the one in flight to finish."""
        try:
            if wait:
                self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:  # noqa: BLE001 - Orbax re-raises the writer's exception
            raise UserError(
                f"writing a checkpoint to {self.directory} failed ({_short(error)}); "
                f"the newest complete checkpoint is {self.latest_step()}"
            ) from error

    # --------------------------------------------------------------- restore
    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Any:
        """Restore `state` (sharded like `abstract_state`) and, in place, the data iterator;
        check it against the checksums recorded at save time. Raises `CheckpointDamaged`, or
        `UserError` when the checkpoint's arrays do not fit `abstract_state` (another model)."""
        restored = self._restore_state(step, abstract_state, data_iterator=data_iterator)
        self._check_checksum(step, restored, np.asarray(self._checksum_fn(restored).addressable_data(0)))
        self._policy.verified = max(step, self._policy.verified or step)
        logging.info("checkpoint: restored and verified step %d from %s", step, self.directory)
        return restored

    def restore_fields(self, step: int, abstract_state: Any, fields: Sequence[str]) -> dict[str, Any]:
        """`{field: value}` for only `fields` of the saved state (e.g. "ema_params" for
        sampling: no optimizer state is read), each sharded like `getattr(abstract_state, field)`
        and checked against the checksums of its leaves. Raises `CheckpointDamaged` or
        `UserError` like `restore`."""
        restored = self._restore_state(step, {f: getattr(abstract_state, f) for f in fields}, fields=fields)
        # The recorded checksums follow the whole state's leaf order; pick the read leaves' rows.
        row = {path: i for i, path in enumerate(integrity.leaf_paths(abstract_state))}
        positions = [row[path] for path in integrity.leaf_paths(restored)]
        actual = np.asarray(self._checksum_fn(restored).addressable_data(0))
        self._check_checksum(step, restored, actual, positions=positions)
        return restored

    def _restore_state(
        self, step: int, target: Any, *, data_iterator: Any | None = None, fields: Sequence[str] | None = None
    ) -> Any:
        """Read the saved state onto `target`'s shardings after checking that its arrays fit;
        with `fields`, `target` is `{field: tree}` and only those fields are read."""
        saved = self._read(step, "state metadata", self._manager.item_metadata, step)["state"].tree
        if fields is not None:
            saved = {f: saved[f] for f in fields}
        mismatch = shape_mismatch(saved, target)
        if mismatch is not None:
            raise UserError(
                f"the checkpoint at step {step} in {self.directory} does not fit this config: "
                f"{mismatch}; use a new --workdir or the config the run was started with"
            )
        items = dict(
            state=ocp.args.PyTreeRestore(
                target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=fields is not None,
            )
        )
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self._read(step, "files", self._manager.restore, step, args=ocp.args.Composite(**items)).state

    def verify(self, step: int, abstract_state: Any) -> None:
        """Read a finished checkpoint back into host memory and check its checksums; on
        success it becomes the verified step that rotation keeps. Raises `CheckpointDamaged`."""
        self.wait()
        item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_state)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        restored = self._read(
            step,
            "files",
            self._manager.restore,
            step,
            args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)),
        )
        self._check_checksum(step, restored.state, integrity.host_checksum(restored.state))
        self._policy.verified = step

    def _read(self, step: int, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - Orbax/TensorStore/Grain raise many kinds
            raise CheckpointDamaged(f"its {what} cannot be read ({_short(error)})") from error

    def _check_checksum(self, step: int, state: Any, actual: np.ndarray, positions: list[int] | None = None) -> None:
        """Compare `actual` with the recorded checksums (those at `positions` of the saved
        state's leaves when only part of it was read)."""
        if not os.path.exists(os.path.join(self.directory, str(step), "integrity")):
            logging.warning(
                "checkpoint step %d has no checksum record (written by an older version): "
                "restored without verification",
                step,
            )
            return
        try:
            record = self._manager.restore(step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())).integrity
            expected = np.asarray(record["checksum"], np.uint32)
            if positions is not None:
                expected = expected[positions]
        except Exception as error:  # noqa: BLE001
            raise CheckpointDamaged(f"its checksum record cannot be read ({type(error).__name__})") from error
        bad = integrity.first_mismatch(expected, actual, integrity.leaf_paths(state))
        if bad is not None:
            raise CheckpointDamaged(f"{bad} does not match the checksum recorded when it was saved")

    def restore_latest(self, abstract_state: Any, data_iterator: Any | None = None) -> tuple[int, Any] | None:
        """Restore the newest intact checkpoint: `(step, state)`, or None when there is none at
        all. Damaged steps are logged, moved aside, and skipped; if every step is damaged,
        raises `UserError` (exit code `EXIT_NO_CHECKPOINT`)."""
        steps = self.all_steps()
        if not steps:
            return None
        damaged = []
        for step in reversed(steps):
            try:
                state = self.restore(step, abstract_state, data_iterator)
                ok, reason = True, ""
            except CheckpointDamaged as error:
                state, ok, reason = None, False, str(error)
            if _all_processes(ok):
                if damaged:
                    self._move_aside(damaged)
                return step, state
            logging.error(
                "checkpoint step %d in %s is damaged: %s; trying an older one",
                step,
                self.directory,
                reason or "another process could not restore it",
            )
            damaged.append(step)
        self._move_aside(damaged)
        raise UserError(
            f"no intact checkpoint in {self.directory}: steps {sorted(damaged)} are all damaged "
            f"(moved to {os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)}); "
            f"start a new --workdir",
            exit_code=EXIT_NO_CHECKPOINT,
        )

    def _move_aside(self, steps: list[int]) -> None:
        """Move damaged steps out of the checkpoint directory (kept for inspection), so later
        saves at the same step numbers do not collide with them."""
        self.wait()
        if jax.process_index() == 0:
            target = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
            os.makedirs(target, exist_ok=True)
            for step in steps:
                destination = os.path.join(target, str(step))
                if os.path.exists(destination):
                    shutil.rmtree(destination)
                shutil.move(os.path.join(self.directory, str(step)), destination)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoint: damaged steps moved")
        self._manager.close()
        self._manager = self._make_manager()

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
