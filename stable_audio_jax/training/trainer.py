"""The generic, sharded, resumable training loop.

    mesh -> data iterators (this process's slice) -> state (restored if the run directory
    has a checkpoint, else created sharded) -> jit(step, in/out shardings, donation)
    -> loop: host batch -> global arrays -> step -> metrics (one step late, so the host
       never waits on the device) -> periodic eval / checkpoint
    -> SIGTERM or Ctrl-C: checkpoint, then stop cleanly.

Only process 0 writes logs, TensorBoard events and audio; every process checkpoints.

Guarantees (the README's "Faults and recovery"):
- One trainer per run directory (`run_lock.RunLock`); a second one stops at once.
- A NaN/inf metric or parameter is caught the step it happens (`trainer.on_nonfinite`:
  "stop" ends the run, "skip" drops that update, up to `trainer.max_nonfinite_skips` times);
  the state is checked before every save, so no non-finite state is ever written.
- Resume takes the newest checkpoint that reads back intact (checksums, see
  `checkpointing.py`), and `metrics.jsonl` is cut back to that step, so each step is logged once.
- Each checkpoint is read back and verified when the next one is written
  (`trainer.verify_checkpoints`), and rotation keeps the newest verified one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from stable_audio_jax import config_lib, lora, parallel
from stable_audio_jax.errors import EXIT_NONFINITE, UserError
from stable_audio_jax.models import attention
from stable_audio_jax.training.checkpointing import CheckpointDamaged, Checkpointer
from stable_audio_jax.training.init_from import init_state_from, load_weights
from stable_audio_jax.training.run_lock import RunLock
from stable_audio_jax.training.task import Task
from stable_audio_jax.training.train_state import TrainState

NONFINITE_MODES = ("stop", "skip")
FINITE_KEY = "_finite"  # the guard's flag among a step's metrics; stripped before logging


def jit_train_step(
    step_fn: Callable, *, mesh, rules: parallel.Rules, state_shardings: Any, example_batch: dict[str, Any]
) -> Callable:
    """`jax.jit` of a pure `(state, batch) -> (state, metrics)` with the state's shardings,
    the batch split over the data axes, and the old state donated."""
    batch_shardings = {k: parallel.batch_sharding(mesh, np.ndim(v), rules) for k, v in example_batch.items()}
    return jax.jit(
        parallel.with_rules(step_fn, rules),
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )


def guard_nonfinite(step_fn: Callable, *, skip: bool) -> Callable:
    """`step_fn` that also reports, as `metrics[FINITE_KEY]`, whether every metric and every
    updated parameter is finite. With `skip`, a non-finite step keeps the old params,
    optimizer state and EMA (the step counter still advances, so the data and the per-step
    rng move on to the next batch)."""

    def guarded(state, batch):
        new_state, metrics = step_fn(state, batch)
        checks = [jnp.all(jnp.isfinite(v)) for v in metrics.values()]
        checks += [
            jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(new_state.params) if jnp.issubdtype(p.dtype, jnp.inexact)
        ]
        finite = jnp.all(jnp.stack(checks))
        if skip:  # the frozen weights never change: no select over them
            kept = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old), new_state.checkpointed(), state.checkpointed()
            )
            new_state = TrainState.from_checkpoint(kept.replace(step=new_state.step), frozen=new_state.frozen)
        return new_state, dict(metrics, **{FINITE_KEY: finite})

    return guarded


class ProfileWindow:
    """A `jax.profiler` trace of train steps `first..last` (1-based, inclusive) written to
    `directory` (open it with TensorBoard's profile plugin or Perfetto); `(0, 0)`: none."""

    def __init__(self, directory: str, steps: tuple[int, int]):
        if tuple(steps) != (0, 0) and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
            raise UserError(
                f"config.trainer.profile_steps={steps}: give (first, last) with 1 <= first <= last, "
                "or (0, 0) for no trace"
            )
        self.directory, (self.first, self.last) = directory, steps
        self.active = False

    def before(self, step: int) -> None:
        """Called before step `step` runs."""
        if self.first and step == self.first:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, step: int, metrics: Any) -> None:
        """Called once step `step` is dispatched: the trace ends when `last` has run."""
        if self.active and step >= self.last:
            jax.block_until_ready(metrics)
            self._stop()

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self.active = False
        logging.info("profile of steps %d-%d written to %s", self.first, self.last, self.directory)

    def __enter__(self) -> "ProfileWindow":
        return self

    def __exit__(self, *exc) -> None:
        if self.active:  # the run stopped inside the window
            self._stop()


class MetricLogger:
    """Averages step metrics over a window and writes them out.

    Steps of different phases report different metrics; each key is averaged over the
    steps that reported it.

    Writes `<workdir>/metrics.jsonl` and TensorBoard events under `<workdir>/tensorboard`
    (process 0 only).
    """

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self._window: list[dict[str, float]] = []
        self._jsonl = None
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:  # TensorBoard is optional; the JSONL log always exists
                logging.warning("tensorboardX is not installed: no TensorBoard events")

    def truncate_after(self, step: int) -> None:
        """Drop the rows logged after `step` (a resumed run logs those steps again)."""
        if not self.enabled:
            return
        self._jsonl.close()
        path = self._jsonl.name
        with open(path) as f:
            rows = f.readlines()
        kept = [row for row in rows if _row_step(row) is not None and _row_step(row) <= step]
        if len(kept) != len(rows):
            with open(path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(path + ".tmp", path)
            logging.info("metrics.jsonl: dropped %d rows logged after step %d", len(rows) - len(kept), step)
        self._jsonl = open(path, "a")

    def add(self, metrics: dict[str, Any]) -> None:
        self._window.append({k: float(v) for k, v in metrics.items()})

    def flush(self, step: int) -> dict[str, float]:
        """Write the window's averages as a `train` row and start a new window."""
        keys = sorted({k for m in self._window for k in m})
        # A NaN from a diverged step stays NaN in the log: nothing is averaged away.
        summary = {k: float(np.mean([m[k] for m in self._window if k in m])) for k in keys}
        self._window = []
        self.write(step, summary, "train")
        return summary

    def write(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        if not self.enabled or not scalars:
            return
        self._jsonl.write(json.dumps({"step": step, "split": prefix, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"{prefix}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _row_step(row: str) -> int | None:
    try:
        return int(json.loads(row)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


class _StopFlag:
    """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a request to save and stop."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        logging.warning("received signal %d: saving a checkpoint and stopping", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains `task` under `config` in `workdir`, resuming from its newest checkpoint.

    The mesh is `config.mesh.shape` over every device unless `mesh` is given (e.g. a subset of
    the devices). A checkpoint restores onto whatever mesh this run has.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, task: Task, mesh: Mesh | None = None):
        config_lib.validate(config)  # out-of-range loop fields fail here, not after compiling
        attention.set_attention_implementation(config.get("attention_impl", "auto"))  # read when steps trace
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.task = task
        tc = config.trainer
        if mesh is None:
            self.mesh, self.rules = parallel.mesh_from_config(config.mesh)
        else:
            self.mesh, self.rules = mesh, parallel.rules_from_config(config.mesh)
        self.is_main = jax.process_index() == 0
        self.on_nonfinite = tc.get("on_nonfinite", "stop")
        if self.on_nonfinite not in NONFINITE_MODES:
            raise UserError(f"config.trainer.on_nonfinite is {self.on_nonfinite!r}; use one of {NONFINITE_MODES}")
        self.max_nonfinite_skips = int(tc.get("max_nonfinite_skips", 10))
        self.verify_checkpoints = bool(tc.get("verify_checkpoints", True))
        self.profile = ProfileWindow(os.path.join(self.workdir, "profile"), tuple(tc.get("profile_steps", (0, 0))))
        # The lock comes first: nothing in the run directory is touched before it is held.
        self.lock = RunLock(self.workdir) if self.is_main else None
        if self.lock is not None:
            self.lock.acquire()
        try:
            # This process loads `size` rows of every global batch, share `index` of `count`.
            self.process_batch = parallel.process_batch(config.data.batch_size, self.mesh, self.rules)
            self.checkpointer = Checkpointer(
                os.path.join(self.workdir, "checkpoints"),
                max_to_keep=tc.max_checkpoints,
                async_save=tc.get("async_checkpointing", True),
            )
            self.logger = MetricLogger(self.workdir, enabled=self.is_main)
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        self._jit_train_steps: dict[str, Callable] = {}  # phase name -> compiled step
        self._jit_eval_step: Callable | None = None
        self._shown: dict[str, str] = {}  # progress-bar values, kept across phases

    # ----------------------------------------------------------------- state
    def initial_state(self, data_iterator: Any | None):
        """Restore the newest intact checkpoint of the run directory, or create a fresh state
        (from the weights of `config.init_from` when set: `init_from.py`)."""
        rng = jax.random.PRNGKey(self.config.seed)
        abstract, shardings = parallel.abstract_with_shardings(
            self.task.init_state, rng, mesh=self.mesh, rules=self.rules
        )
        self._abstract = abstract.checkpointed()
        restored = self.checkpointer.restore_latest(self._abstract, data_iterator)
        init_from = self.config.get("init_from", "")
        if restored is not None:
            step, state = restored[0], TrainState.from_checkpoint(restored[1])
            logging.info("resuming from step %d", step)
            if abstract.frozen:  # the frozen base is not in the checkpoint: read it again
                state = self._with_frozen_base(state, abstract, init_from)
            elif init_from:
                logging.info("the run directory has checkpoints: config.init_from=%s is ignored", init_from)
            self.logger.truncate_after(step)
        else:
            if init_from:
                state, weights = init_state_from(init_from, self.task, abstract, rng, mesh=self.mesh, rules=self.rules)
                logging.info("initialised %s from %s", ", ".join(self.task.pretrained_parts), init_from)
                if abstract.frozen and self.is_main:
                    lora.write_base_record(self.workdir, init_from, weights)
            else:
                state, _ = parallel.init_sharded(self.task.init_state, rng, mesh=self.mesh, rules=self.rules)
            self.logger.truncate_after(0)  # rows of a run whose checkpoints were all removed
        return state, shardings

    def _with_frozen_base(self, state, abstract, init_from: str):
        """A restored state with its frozen base read again from `init_from`, which must be
        the base the run started from (`lora.check_base_record`)."""
        weights = load_weights(
            init_from, self.task, self.task.pretrained_abstract(abstract), mesh=self.mesh, rules=self.rules
        )
        lora.check_base_record(self.workdir, weights, f"config.init_from={init_from}")
        logging.info("frozen %s read again from %s", ", ".join(weights), init_from)
        return self.task.with_pretrained(state, weights, abstract)

    def _global(self, host_batch) -> dict[str, jax.Array]:
        return parallel.host_to_global(self.task.model_inputs(host_batch), self.mesh, self.rules)

    # ------------------------------------------------------------------ eval
    def evaluate(self, state, eval_batch, step: int) -> dict[str, float]:
        if eval_batch is None:
            return {}
        if self._jit_eval_step is None:
            self._jit_eval_step = jax.jit(parallel.with_rules(self.task.eval_step, self.rules))
        with jax.set_mesh(self.mesh):
            outputs = self._jit_eval_step(state, self._global(eval_batch))
        outputs = multihost_utils.process_allgather(outputs, tiled=True)
        if not self.is_main:
            return {}
        scalars = self.task.write_eval(
            jax.tree.map(np.asarray, outputs), eval_batch, step, os.path.join(self.workdir, "eval")
        )
        self.logger.write(step, scalars, prefix="eval")
        return scalars

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run until `trainer.num_steps`; returns a summary (first/last metrics, timings).

        `summary["interrupted_at"]` is set when SIGTERM/SIGINT stopped the run (after a save).
        Raises `UserError` (exit code `EXIT_NONFINITE`) when a non-finite step ends it.
        """
        iterators: list[Any] = []  # closed however the run ends
        progress_bars: list[Any] = []
        try:
            return self._train(iterators, progress_bars)
        finally:
            for bar in progress_bars:
                bar.close()
            for it in iterators:
                if hasattr(it, "close"):  # stops Grain worker processes
                    it.close()
            self.close()

    def _train(self, iterators: list[Any], progress_bars: list[Any]) -> dict[str, Any]:
        tc = self.config.trainer
        config_json = json.loads(self.config.to_json_best_effort())
        if self.is_main:
            os.makedirs(os.path.join(self.workdir, "assets"), exist_ok=True)
            self.task.write_assets(os.path.join(self.workdir, "assets"))
        share = dict(
            batch_size=self.process_batch.size,
            shard_index=self.process_batch.index,
            shard_count=self.process_batch.count,
        )
        train_it = self.task.make_dataset("train", **share)
        iterators.append(train_it)
        eval_batch = None
        if tc.eval_every:
            eval_it = self.task.make_dataset("eval", **share)
            iterators.append(eval_it)
            eval_batch = next(eval_it)
        state, state_shardings = self.initial_state(train_it)
        start_step = int(jax.device_get(state.step))
        summary: dict[str, Any] = {"start_step": start_step, "history": [], "nonfinite_skipped": 0}
        self.state = state
        if start_step >= tc.num_steps:
            logging.info("run already at step %d >= num_steps %d: nothing to do", start_step, tc.num_steps)
            return summary

        progress = None
        if self.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(total=tc.num_steps, initial=start_step, desc=f"train {self.task.name}", dynamic_ncols=True)
            progress_bars.append(progress)
        pending = None  # (step, device metrics) logged one step late
        unverified = None  # the newest saved step not yet read back
        step = start_step
        t_start = time.time()
        with _StopFlag() as stop, jax.set_mesh(self.mesh), self.profile:
            while step < tc.num_steps:
                host_batch = next(train_it)
                batch = self._global(host_batch)
                phase = self.task.train_phase(step)
                first_use = phase not in self._jit_train_steps
                if first_use:
                    self._jit_train_steps[phase] = jit_train_step(
                        guard_nonfinite(self.task.train_phases()[phase], skip=self.on_nonfinite == "skip"),
                        mesh=self.mesh,
                        rules=self.rules,
                        state_shardings=state_shardings,
                        example_batch=batch,
                    )
                t0 = time.time()
                self.profile.before(step + 1)
                state, metrics = self._jit_train_steps[phase](state, batch)
                step += 1
                self.profile.after(step, metrics)
                if first_use:  # wait once per phase to report its compile (+ first run) time
                    jax.block_until_ready(metrics)
                    summary.setdefault("first_step_seconds", {})[phase] = time.time() - t0
                if pending is not None:
                    self._record(pending, summary, progress)
                pending = (step, metrics)
                stopping = stop.requested or self.checkpointer.reached_preemption(step)
                saving = step % tc.checkpoint_every == 0 or step == tc.num_steps or stopping
                logging_step = step % tc.log_every == 0 or step == tc.num_steps
                if logging_step or saving:
                    # Before a save the step's metrics are checked: a non-finite state is never written.
                    self._record(pending, summary, progress)
                    pending = None
                if logging_step:
                    summary["history"].append({"step": step, **self.logger.flush(step)})
                    self.checkpointer.check_for_errors()  # a failed background save stops the run now
                if tc.eval_every and step % tc.eval_every == 0:
                    summary["eval"] = self.evaluate(state, eval_batch, step)
                if saving:
                    self._verify(unverified)
                    self.checkpointer.save(step, state.checkpointed(), train_it, config_json)
                    unverified = step
                if stopping:
                    summary["interrupted_at"] = step
                    break
        if pending is not None:
            self._record(pending, summary, progress)
        if tc.eval_every and step == tc.num_steps and step % tc.eval_every:
            summary["eval"] = self.evaluate(state, eval_batch, step)
        if "interrupted_at" not in summary:
            self._verify(unverified)
        summary.update(
            end_step=step, wall_seconds=time.time() - t_start, verified_checkpoint=self.checkpointer.verified_step
        )
        self.state = state
        return summary

    def _verify(self, step: int | None) -> None:
        """Read checkpoint `step` back and check it (`trainer.verify_checkpoints`)."""
        if step is None or not self.verify_checkpoints:
            return
        try:
            self.checkpointer.verify(step, self._abstract)
        except CheckpointDamaged as error:
            logging.error("checkpoint step %d does not read back intact: %s", step, error)

    def _record(self, pending, summary, progress) -> None:
        step, metrics = pending
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not metrics.pop(FINITE_KEY, True):
            self._nonfinite(step, metrics, summary)
            return
        summary.setdefault("first_metrics", metrics)
        summary["last_metrics"] = metrics
        self.logger.add(metrics)
        if progress is not None:
            progress.update(step - progress.n)
            self._shown.update(
                {k: f"{v:.4g}" for k, v in metrics.items() if math.isfinite(v) and k in self.task.progress_keys}
            )
            progress.set_postfix(self._shown, refresh=False)

    def _nonfinite(self, step: int, metrics: dict[str, float], summary: dict[str, Any]) -> None:
        """Stop (or, in skip mode, count) a step whose metrics or parameters are not finite."""
        bad = [f"{k}={v}" for k, v in metrics.items() if not math.isfinite(v)]
        what = f"non-finite {', '.join(bad)}" if bad else "non-finite parameters after the update"
        if self.on_nonfinite == "skip":
            summary["nonfinite_skipped"] += 1
            logging.warning(
                "step %d: %s; update skipped (%d of at most %d)",
                step,
                what,
                summary["nonfinite_skipped"],
                self.max_nonfinite_skips,
            )
            if summary["nonfinite_skipped"] <= self.max_nonfinite_skips:
                self.logger.add({"nonfinite_skipped": 1.0})  # the window's fraction of skipped steps
                return
            what += f" ({summary['nonfinite_skipped']} updates skipped, more than trainer.max_nonfinite_skips)"
        self.checkpointer.wait()
        latest = self.checkpointer.latest_step()
        saved = f"the newest checkpoint is step {latest}" if latest is not None else "no checkpoint was written"
        raise UserError(
            f"training stopped at step {step}: {what}; nothing non-finite was saved and {saved}; "
            f"lower the learning rate or set --config.trainer.on_nonfinite=skip",
            exit_code=EXIT_NONFINITE,
        )

    def close(self) -> None:
        self.checkpointer.close()
        self.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
