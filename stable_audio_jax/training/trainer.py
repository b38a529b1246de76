"""The generic, sharded, resumable training loop.

    mesh -> data iterators (this process's slice) -> state (restored if the run directory
    has a checkpoint, else created sharded) -> jit(step, in/out shardings, donation)
    -> loop: host batch -> global arrays -> step -> metrics (one step late, so the host
       never waits on the device) -> periodic eval / checkpoint
    -> SIGTERM or Ctrl-C: checkpoint, then stop cleanly.

Only process 0 writes logs, TensorBoard events and audio; every process checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from stable_audio_jax import config_lib, parallel
from stable_audio_jax.training.checkpointing import Checkpointer
from stable_audio_jax.training.task import Task


def with_rules(fn: Callable, rules: parallel.Rules) -> Callable:
    """`fn` traced under the logical axis rules (so activation constraints resolve)."""
    def wrapped(*args):
        with nn.logical_axis_rules(rules):
            return fn(*args)
    return wrapped


def jit_train_step(step_fn: Callable, *, mesh, rules: parallel.Rules, state_shardings: Any,
                   example_batch: dict[str, Any]) -> Callable:
    """`jax.jit` of a pure `(state, batch) -> (state, metrics)` with the state's shardings,
    the batch split over the data axes, and the old state donated."""
    batch_shardings = {k: parallel.batch_sharding(mesh, np.ndim(v), rules) for k, v in example_batch.items()}
    return jax.jit(with_rules(step_fn, rules),
                   in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, None),
                   donate_argnums=0)


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
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.task = task
        tc = config.trainer
        self.mesh = mesh if mesh is not None else parallel.create_mesh(tuple(config.mesh.shape),
                                                                       tuple(config.mesh.axis_names))
        self.rules = tuple(tuple(r) for r in config.mesh.get("rules", parallel.DEFAULT_RULES))
        self.is_main = jax.process_index() == 0
        # This process loads `size` rows of every global batch, share `index` of `count`.
        self.process_batch = parallel.process_batch(config.data.batch_size, self.mesh, self.rules)
        self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                         max_to_keep=tc.max_checkpoints,
                                         async_save=tc.get("async_checkpointing", True))
        self.logger = MetricLogger(self.workdir, enabled=self.is_main)
        self._jit_train_steps: dict[str, Callable] = {}  # phase name -> compiled step
        self._jit_eval_step: Callable | None = None
        self._shown: dict[str, str] = {}  # progress-bar values, kept across phases

    # ----------------------------------------------------------------- state
    def initial_state(self, data_iterator: Any | None):
        """Restore the newest checkpoint of the run directory, or create a fresh state."""
        rng = jax.random.PRNGKey(self.config.seed)
        abstract, shardings = parallel.abstract_with_shardings(
            self.task.init_state, rng, mesh=self.mesh, rules=self.rules)
        step = self.checkpointer.latest_step()
        if step is not None:
            state = self.checkpointer.restore(step, abstract, data_iterator)
            logging.info("resuming from step %d", step)
        else:
            state, _ = parallel.init_sharded(self.task.init_state, rng, mesh=self.mesh, rules=self.rules)
        return state, shardings

    def _global(self, host_batch) -> dict[str, jax.Array]:
        return parallel.host_to_global(self.task.model_inputs(host_batch), self.mesh, self.rules)

    # ------------------------------------------------------------------ eval
    def evaluate(self, state, eval_batch, step: int) -> dict[str, float]:
        if eval_batch is None:
            return {}
        if self._jit_eval_step is None:
            self._jit_eval_step = jax.jit(with_rules(self.task.eval_step, self.rules))
        with jax.set_mesh(self.mesh):
            outputs = self._jit_eval_step(state, self._global(eval_batch))
        outputs = multihost_utils.process_allgather(outputs, tiled=True)
        if not self.is_main:
            return {}
        scalars = self.task.write_eval(jax.tree.map(np.asarray, outputs), eval_batch, step,
                                       os.path.join(self.workdir, "eval"))
        self.logger.write(step, scalars, prefix="eval")
        return scalars

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run until `trainer.num_steps`; returns a summary (first/last metrics, timings)."""
        tc = self.config.trainer
        config_json = json.loads(self.config.to_json_best_effort())
        if self.is_main:
            os.makedirs(os.path.join(self.workdir, "assets"), exist_ok=True)
            self.task.write_assets(os.path.join(self.workdir, "assets"))
        share = dict(batch_size=self.process_batch.size, shard_index=self.process_batch.index,
                     shard_count=self.process_batch.count)
        train_it = self.task.make_dataset("train", **share)
        eval_batch = eval_it = None
        if tc.eval_every:
            eval_it = self.task.make_dataset("eval", **share)
            eval_batch = next(eval_it)
        state, state_shardings = self.initial_state(train_it)
        start_step = int(jax.device_get(state.step))
        summary: dict[str, Any] = {"start_step": start_step, "history": []}
        self.state = state
        if start_step >= tc.num_steps:
            logging.info("run already at step %d >= num_steps %d: nothing to do", start_step, tc.num_steps)
            self.close()
            return summary

        progress = None
        if self.is_main:
            from tqdm.auto import tqdm
            progress = tqdm(total=tc.num_steps, initial=start_step, desc=f"train {self.task.name}",
                            dynamic_ncols=True)
        pending = None  # (step, device metrics) logged one step late
        step = start_step
        t_start = time.time()
        with _StopFlag() as stop, jax.set_mesh(self.mesh):
            while step < tc.num_steps:
                host_batch = next(train_it)
                batch = self._global(host_batch)
                phase = self.task.train_phase(step)
                first_use = phase not in self._jit_train_steps
                if first_use:
                    self._jit_train_steps[phase] = jit_train_step(
                        self.task.train_phases()[phase], mesh=self.mesh, rules=self.rules,
                        state_shardings=state_shardings, example_batch=batch)
                t0 = time.time()
                state, metrics = self._jit_train_steps[phase](state, batch)
                step += 1
                if first_use:  # wait once per phase to report its compile (+ first run) time
                    jax.block_until_ready(metrics)
                    summary.setdefault("first_step_seconds", {})[phase] = time.time() - t0
                if pending is not None:
                    self._record(pending, summary, progress)
                pending = (step, metrics)
                if step % tc.log_every == 0 or step == tc.num_steps:
                    self._record(pending, summary, progress)
                    pending = None
                    summary["history"].append({"step": step, **self.logger.flush(step)})
                if tc.eval_every and step % tc.eval_every == 0:
                    summary["eval"] = self.evaluate(state, eval_batch, step)
                stopping = stop.requested or self.checkpointer.reached_preemption(step)
                if step % tc.checkpoint_every == 0 or step == tc.num_steps or stopping:
                    self.checkpointer.save(step, state, train_it, config_json)
                if stopping:
                    summary["interrupted_at"] = step
                    break
        if pending is not None:
            self._record(pending, summary, progress)
        if tc.eval_every and step == tc.num_steps and step % tc.eval_every:
            summary["eval"] = self.evaluate(state, eval_batch, step)
        if progress is not None:
            progress.close()
        for it in (train_it, eval_it):
            if hasattr(it, "close"):  # stops Grain worker processes
                it.close()
        summary.update(end_step=step, wall_seconds=time.time() - t_start)
        self.state = state
        self.close()
        return summary

    def _record(self, pending, summary, progress) -> None:
        step, metrics = pending
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        summary.setdefault("first_metrics", metrics)
        summary["last_metrics"] = metrics
        self.logger.add(metrics)
        if progress is not None:
            progress.update(step - progress.n)
            self._shown.update({k: f"{v:.4g}" for k, v in metrics.items()
                                if math.isfinite(v) and k in self.task.progress_keys})
            progress.set_postfix(self._shown, refresh=False)

    def close(self) -> None:
        self.checkpointer.close()
        self.logger.close()
