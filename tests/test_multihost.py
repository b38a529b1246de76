"""Multi-host training on one machine: `launch/train.py` as 2 processes x 4 CPU devices, joined
by `jax.distributed` on localhost, trains the micro diffusion model like 1 process x 8 devices.

The 2-process run trains 2 steps, checkpoints, and a second 2-process launch resumes to step 4.
Its losses (train and eval) must equal an uninterrupted 4-step run of one process with 8
devices (`launch/train.py` without distributed flags), over the same global batches: that
needs each process to read its own rows of every global batch, the restored iterators to
continue where they stopped, and the collectives to sum the same gradients. Only process 0
may write metrics and TensorBoard events.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import pytest

from stable_audio_jax import parallel
from stable_audio_jax.input_pipeline.grain_pipeline import ProcessBlocks
from tests.micro_diffusion import write_latent_shards

pytestmark = pytest.mark.multihost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "micro_diffusion.py")
RTOL = 1e-5  # measured: the 2-process losses match 1 process to ~1e-7 (gloo vs in-process reductions)
TRAINER = dict(eval_every=2, log_every=1)  # eval at steps 2 and 4: both 2-process launches evaluate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """`launch/train.py` as `num_processes` processes with `local_devices` CPU devices each,
    joined by `jax.distributed` on localhost (one process: no distributed flags at all)."""

    def __init__(self, workdir: str, shards: str, num_steps: int, *, num_processes: int, local_devices: int):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            # LLVM -O0 halves compile time; these steps run for milliseconds anyway.
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={local_devices} --xla_backend_optimization_level=0",
            # CPU cache keys differ between processes, so only process 0 would hit the cache and
            # run ahead into a collective while process 1 compiles (gloo waits only 30 s).
            "JAX_ENABLE_COMPILATION_CACHE": "false",
        }
        command = [
            sys.executable,
            os.path.join(ROOT, "launch", "train.py"),
            f"--config={CONFIG}:{shards}",
            f"--workdir={workdir}",
            f"--config.trainer.num_steps={num_steps}",
            *(f"--config.trainer.{k}={v}" for k, v in TRAINER.items()),
        ]
        if num_processes > 1:
            command.append(f"--coordinator_address=127.0.0.1:{free_port()}")
            command.append(f"--num_processes={num_processes}")
        self.logs = [f"{workdir}_{num_steps}_{i}.log" for i in range(num_processes)]
        self.procs = []
        for i, log in enumerate(self.logs):
            process_id = [f"--process_id={i}"] if num_processes > 1 else []
            with open(log, "w") as f:
                self.procs.append(
                    subprocess.Popen(command + process_id, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                )

    def __enter__(self) -> "Launch":
        return self

    def __exit__(self, *exc) -> None:
        """Kill the processes still running (a failed check must not leave them behind)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def wait(self, timeout: float = 400) -> list[str]:
        """The processes' logs once all exited 0. A failed process stops the others (they would
        wait for it in collectives); the timeout only catches hangs."""
        deadline = time.time() + timeout
        with self:
            while any(p.poll() is None for p in self.procs) and time.time() < deadline:
                if any(p.returncode not in (None, 0) for p in self.procs):
                    break
                time.sleep(0.5)
        texts = []
        for i, (p, log) in enumerate(zip(self.procs, self.logs)):
            with open(log) as f:
                texts.append(f.read())
            assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{texts[-1][-4000:]}"
        return texts


def metric_rows(workdir: str, split: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [row for row in map(json.loads, f) if row["split"] == split]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    # 24 records, global batch 8: the 4 steps cross an epoch boundary (reshuffled repeat).
    return write_latent_shards(tmp_path_factory.mktemp("latents"), num_records=24, num_shards=2)


def test_two_processes_train_and_resume_like_one_process(shards, tmp_path):
    """2 processes x 4 devices: 2 steps, checkpoint, resume to 4 == 1 process x 8 devices, 4 steps."""
    workdir, reference = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
    with Launch(reference, shards, 4, num_processes=1, local_devices=8) as one:  # alongside the 2-process runs
        first = Launch(workdir, shards, 2, num_processes=2, local_devices=4).wait()
        assert all(f"process {i} of 2, 4 local / 8 global devices" in log for i, log in enumerate(first))
        # Each process checkpointed its own iterator: 2 steps x 4 records (its half of each global batch).
        for i in range(2):
            with open(os.path.join(workdir, "checkpoints", "2", "data", f"process_{i}-of-2.json")) as f:
                assert json.load(f) == {"next_index": 8}
        second = Launch(workdir, shards, 4, num_processes=2, local_devices=4).wait()
        assert all("resuming from step 2" in log for log in second)
        assert "jax.distributed: process" not in one.wait()[0]  # no flags, no cluster: a plain process

    # Steps 3 and 4 match only if both processes' restored iterators went on with batches 3 and 4.
    for split, steps in (("train", [1, 2, 3, 4]), ("eval", [2, 4])):
        expected, rows = metric_rows(reference, split), metric_rows(workdir, split)
        # One row per step: process 1 wrote none (its rows would repeat the steps).
        assert [r["step"] for r in rows] == [r["step"] for r in expected] == steps
        np.testing.assert_allclose(
            [r["loss"] for r in rows],
            [r["loss"] for r in expected],
            rtol=RTOL,
            err_msg=f"{split} losses of 2 processes differ from 1 process",
        )
    events = [f for f in os.listdir(os.path.join(workdir, "tensorboard")) if "tfevents" in f]
    assert len(events) == 2, events  # one writer per launch, on process 0


def test_single_process_default_and_cluster_detection(monkeypatch):
    """No flags and no cluster: nothing is initialised. A SLURM job initialises only with more
    than one task; explicit flags always do (with `--num_processes=1` meaning one process)."""
    calls = []
    monkeypatch.setattr("jax.distributed.initialize", lambda **kw: calls.append(kw))
    for var in (
        "SLURM_JOB_ID",
        "SLURM_STEP_NODELIST",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "OMPI_MCA_orte_hnp_uri",
        "TPU_WORKER_HOSTNAMES",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(var, raising=False)
    assert parallel.detect_cluster() is None
    assert parallel.maybe_initialize_distributed() is False
    assert parallel.maybe_initialize_distributed(num_processes=1) is False

    slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node1", SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0")
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    assert parallel.detect_cluster() == ("SlurmCluster", 1)
    assert parallel.maybe_initialize_distributed() is False and not calls
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert parallel.maybe_initialize_distributed() is True
    assert calls == [dict(coordinator_address=None, num_processes=None, process_id=None)]  # JAX fills them in
    parallel.maybe_initialize_distributed("10.0.0.1:1234", 2, 1)
    assert calls[-1] == dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)


def test_each_process_loads_its_rows_of_every_global_batch():
    """`ProcessBlocks`: process p of n reads rows [p*B, (p+1)*B) of every global batch of the
    one-process stream (shuffled, repeated), so the global batches do not depend on n."""
    stream = grain.MapDataset.range(10).shuffle(seed=3).repeat(None)
    batch, n = 3, 2
    shares = [ProcessBlocks(stream, block_size=batch, index=p, count=n) for p in range(n)]
    global_batches = [[stream[i] for i in range(b * n * batch, (b + 1) * n * batch)] for b in range(4)]
    assert [sum(([s[b * batch + k] for k in range(batch)] for s in shares), []) for b in range(4)] == global_batches
    # A finite stream is split exactly: a short last run goes to the first processes.
    finite = [list(ProcessBlocks(grain.MapDataset.range(22), block_size=3, index=p, count=2)) for p in range(2)]
    assert finite == [[0, 1, 2, 6, 7, 8, 12, 13, 14, 18, 19, 20], [3, 4, 5, 9, 10, 11, 15, 16, 17, 21]]

    mesh = parallel.create_mesh((2, 4, 1))
    assert parallel.process_batch(8, mesh) == parallel.ProcessBatch(size=8, index=0, count=1)
    assert parallel.process_batch(4, parallel.create_mesh((1, 1, 4), devices=jax.devices()[:4])).size == 4
    with pytest.raises(ValueError, match="not divisible by the 8 data-parallel devices"):
        parallel.process_batch(12, mesh)
