"""Fault injection: `launch/train.py` as a user runs it, broken in the ways runs break.

Every case trains the micro diffusion model (`tests/micro_diffusion.py`, a checkpoint every
2 steps, 8 steps in all) and is compared with one uninterrupted 8-step run:
- kill -9 in the middle of a checkpoint save, and at a random step (with a Grain worker
  process, which must not outlive the trainer);
- SIGTERM: a checkpoint at that step, exit code 143;
- the newest checkpoints damaged: a truncated, a deleted and an overwritten array file, a
  state copied from another step (same sizes: only the checksums tell), garbage in
  `_METADATA` and in the iterator state; and all of them damaged (exit code 4);
- a learning rate that explodes (exit code 3, nothing non-finite on disk);
- a second trainer on the same run directory (exit code 75, the first one unharmed);
- a disk too small for the next checkpoint (a 4-5 MiB tmpfs; exit code 2 before writing).

For each resumed case the test checks, and prints: the step it resumed from, the steps lost
(at most one checkpoint interval), that every step is logged once in `metrics.jsonl`, and
that the losses after the resume equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.micro_diffusion import write_latent_shards

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "micro_diffusion.py")
NUM_STEPS = 8
EVERY = 2  # checkpoint interval: the most steps a kill may lose
TIMEOUT = 240  # seconds for one launch (a compile is ~10-20 s on 2 busy cores)
ASYNC = "--config.trainer.async_checkpointing=True"  # the micro config saves synchronously
ENV = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONUNBUFFERED": "1",
    # LLVM -O0 halves compile time; these steps run for milliseconds anyway.
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
}


def command(workdir: str, shards: str, num_steps: int = NUM_STEPS, *overrides: str) -> list[str]:
    return [
        sys.executable,
        os.path.join(ROOT, "launch", "train.py"),
        f"--config={CONFIG}:{shards}",
        f"--workdir={workdir}",
        f"--config.trainer.num_steps={num_steps}",
        f"--config.trainer.checkpoint_every={EVERY}",
        "--config.trainer.log_every=1",
        *overrides,
    ]


def start(workdir: str, shards: str, num_steps: int = NUM_STEPS, *overrides: str) -> subprocess.Popen:
    log = open(f"{workdir}.{time.monotonic_ns()}.log", "w+")
    process = subprocess.Popen(
        command(workdir, shards, num_steps, *overrides),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    process.log = log
    return process


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for `process`; its exit code and stderr."""
    code = process.wait(timeout=TIMEOUT)
    process.log.seek(0)
    return code, process.log.read()


def run(workdir: str, shards: str, num_steps: int = NUM_STEPS, *overrides: str) -> tuple[int, str]:
    return finish(start(workdir, shards, num_steps, *overrides))


def logged_losses(workdir: str) -> dict[int, float]:
    """Train losses by step from `metrics.jsonl`; fails if a step is logged twice."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(steps)}"
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def checkpoint_steps(workdir: str) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def wait_for(predicate, process: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"the trainer exited ({process.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def last_logged_step(workdir: str) -> int:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return max([json.loads(line)["step"] for line in f if line.endswith("\n")], default=0)
    except (FileNotFoundError, ValueError):
        return 0


def resumed_from(stderr: str) -> int | None:
    for line in stderr.splitlines():
        if "resuming from step" in line:
            return int(line.rsplit("resuming from step", 1)[1].split()[0])
    return None


def line_starting(stderr: str, prefix: str) -> str:
    """The stderr line that starts with `prefix` (library threads may print around it)."""
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def assert_no_traceback_of_ours(stderr: str) -> None:
    """No traceback through the project's code (library threads' own reports are not ours)."""
    for block in stderr.split("Traceback (most recent call last):")[1:]:
        assert "stable_audio_jax" not in block and "launch/" not in block, block[:2000]


def report(case: str, **figures) -> None:
    sys.__stdout__.write(f"\n[faults] {case}: " + ", ".join(f"{k}={v}" for k, v in figures.items()) + "\n")


def assert_resumed_like_reference(
    workdir: str, stderr: str, reference: dict[int, float], *, killed_at: int, case: str
) -> None:
    """The resumed run finished, resumed within one interval of the kill, logged every step once,
    and its losses equal the uninterrupted run's."""
    start_step = resumed_from(stderr)
    assert start_step is not None, stderr[-2000:]
    assert killed_at - start_step <= EVERY, (killed_at, start_step)
    losses = logged_losses(workdir)
    assert sorted(losses) == list(range(1, NUM_STEPS + 1))
    after = [s for s in losses if s > start_step]
    np.testing.assert_allclose([losses[s] for s in after], [reference[s] for s in after], rtol=1e-6)
    report(
        case,
        resumed_from=start_step,
        steps_lost=killed_at - start_step,
        max_loss_difference=max(abs(losses[s] - reference[s]) for s in after),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Shards, the uninterrupted reference run's losses, and a run stopped at step 6
    (checkpoints 2, 4, 6) that the damage cases copy."""
    root = tmp_path_factory.mktemp("faults")
    shards = write_latent_shards(root / "shards")
    code, stderr = run(str(root / "reference"), shards)
    assert code == 0, stderr[-3000:]
    reference = logged_losses(str(root / "reference"))
    assert sorted(reference) == list(range(1, NUM_STEPS + 1))
    code, stderr = run(str(root / "at6"), shards, 6)
    assert code == 0, stderr[-3000:]
    assert checkpoint_steps(str(root / "at6")) == [2, 4, 6]
    return {"root": root, "shards": shards, "reference": reference}


def copy_run(setup, name: str) -> str:
    workdir = str(setup["root"] / name)
    shutil.copytree(str(setup["root"] / "at6"), workdir)
    return workdir


def test_kill_9_during_a_save(setup):
    """Asynchronous saves (the default of the real configs): killed while step 4 is being
    written in the background, the run loses that checkpoint and resumes from step 2."""
    workdir = str(setup["root"] / "kill_save")
    process = start(workdir, setup["shards"], NUM_STEPS, ASYNC)
    wait_for(lambda: "checkpoint: saving step 4" in open(process.log.name).read(), process, "the save of step 4")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = 4  # the save in flight is what is lost
    code, stderr = run(workdir, setup["shards"], NUM_STEPS, ASYNC)
    assert code == 0, stderr[-3000:]
    assert_resumed_like_reference(workdir, stderr, setup["reference"], killed_at=killed_at, case="kill -9 in a save")


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return children


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_at_a_random_step_and_grain_workers_exit(setup):
    """kill -9 (the trainer alone, as the OOM killer does) at a random step; its Grain worker
    exits by itself and the resumed run (also with a worker) matches the reference. Saves are
    synchronous here, so at most one interval is lost (with asynchronous saves, add the steps
    taken while the newest save was still being written)."""
    workdir = str(setup["root"] / "kill_random")
    target = random.Random(0).randint(3, 6)
    worker = "--config.data.worker_count=1"
    process = start(workdir, setup["shards"], NUM_STEPS, worker)
    wait_for(lambda: last_logged_step(workdir) >= target, process, f"step {target}")
    workers = _children(process.pid)
    assert workers, "the run should have a Grain worker process"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = last_logged_step(workdir)  # steps completed when it died
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "Grain workers outlived the killed trainer"
    code, stderr = run(workdir, setup["shards"], NUM_STEPS, worker)
    assert code == 0, stderr[-3000:]
    assert_resumed_like_reference(
        workdir, stderr, setup["reference"], killed_at=killed_at, case=f"kill -9 at step {target}"
    )


def test_sigterm_saves_and_exits_143(setup):
    workdir = str(setup["root"] / "sigterm")
    process = start(workdir, setup["shards"])
    wait_for(lambda: last_logged_step(workdir) >= 3, process, "step 3")
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process)
    assert code == 143, stderr[-3000:]
    assert "after saving a checkpoint; run the same command to resume" in line_starting(stderr, "interrupted at step")
    stopped = checkpoint_steps(workdir)[-1]
    assert stopped == last_logged_step(workdir), "SIGTERM must checkpoint the step it stopped at"
    code, stderr = run(workdir, setup["shards"])
    assert code == 0, stderr[-3000:]
    assert_resumed_like_reference(workdir, stderr, setup["reference"], killed_at=stopped, case="SIGTERM")


def _largest_file(folder: str) -> str:
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    return max(files, key=os.path.getsize)


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _overwrite_random(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(size))


def _copy_state(source_step: int):
    def damage(step_dir: str) -> None:
        shutil.rmtree(os.path.join(step_dir, "state"))
        shutil.copytree(
            os.path.join(os.path.dirname(step_dir), str(source_step), "state"), os.path.join(step_dir, "state")
        )

    return damage


DAMAGE = {
    "truncated array file": lambda d: _truncate(_largest_file(os.path.join(d, "state", "d"))),
    "deleted array file": lambda d: os.remove(_largest_file(os.path.join(d, "state", "d"))),
    "array file overwritten with random bytes": lambda d: _overwrite_random(
        _largest_file(os.path.join(d, "state", "d"))
    ),
    "state of step 2 copied in (same sizes)": _copy_state(2),
    "garbage _METADATA": lambda d: open(os.path.join(d, "state", "_METADATA"), "w").write("{not json"),
    "garbage iterator state": lambda d: open(os.path.join(d, "data", "process_0-of-1.json"), "w").write("]["),
}


@pytest.mark.parametrize(
    "newest, older",
    [
        ("truncated array file", None),
        ("state of step 2 copied in (same sizes)", "deleted array file"),
        ("garbage _METADATA", "array file overwritten with random bytes"),
        ("garbage iterator state", None),
    ],
)
def test_damaged_checkpoints_fall_back_to_the_newest_intact_one(setup, newest, older):
    workdir = copy_run(setup, "damaged_" + "".join(c for c in newest if c.isalnum())[:20])
    DAMAGE[newest](os.path.join(workdir, "checkpoints", "6"))
    if older:
        DAMAGE[older](os.path.join(workdir, "checkpoints", "4"))
    code, stderr = run(workdir, setup["shards"])
    assert code == 0, stderr[-3000:]
    intact = 2 if older else 4
    assert resumed_from(stderr) == intact
    damaged_lines = [line for line in stderr.splitlines() if "is damaged" in line]
    assert len(damaged_lines) == (2 if older else 1), damaged_lines
    assert "step 6" in damaged_lines[0] and "trying an older one" in damaged_lines[0]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints_damaged"))) == (["4", "6"] if older else ["6"])
    # The damaged steps are written again, this time intact, as the run continues.
    assert checkpoint_steps(workdir)[-1] == NUM_STEPS
    losses = logged_losses(workdir)
    after = [s for s in losses if s > intact]
    np.testing.assert_allclose([losses[s] for s in after], [setup["reference"][s] for s in after], rtol=1e-6)
    report(
        f"damaged: {newest}" + (f" + {older}" if older else ""),
        resumed_from=intact,
        steps_lost=6 - intact,
        damage_line=damaged_lines[0].split("] ", 1)[-1][:120],
    )


def test_every_checkpoint_damaged_is_one_line_and_exit_4(setup):
    workdir = copy_run(setup, "all_damaged")
    for step, kind in zip((2, 4, 6), ("truncated array file", "garbage _METADATA", "deleted array file")):
        DAMAGE[kind](os.path.join(workdir, "checkpoints", str(step)))
    code, stderr = run(workdir, setup["shards"])
    assert code == 4, stderr[-3000:]
    last = line_starting(stderr, "error: no intact checkpoint in")
    assert "[2, 4, 6]" in last, last
    assert stderr.rstrip("\n").endswith(last), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    report("every checkpoint damaged", exit_code=code, line=last[:100])


def _restore_host(step_dir: str) -> dict:
    path = os.path.join(step_dir, "state")
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path).item_metadata.tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
        return checkpointer.restore(path, restore_args=args)


def test_exploding_learning_rate_stops_without_saving_nonfinite_state(setup):
    workdir = str(setup["root"] / "nan")
    code, stderr = run(
        workdir, setup["shards"], NUM_STEPS, "--config.optimizer.lr=1e30", "--config.trainer.checkpoint_every=1"
    )
    assert code == 3, stderr[-3000:]
    last = line_starting(stderr, "error: training stopped at step ")
    assert "non-finite" in last, last
    assert_no_traceback_of_ours(stderr)
    stopped = int(last.split("training stopped at step ")[1].split(":")[0])
    steps = checkpoint_steps(workdir)
    assert steps and max(steps) < stopped, (steps, stopped)
    for step in steps:
        leaves = jax.tree.leaves(_restore_host(os.path.join(workdir, "checkpoints", str(step))))
        assert all(np.all(np.isfinite(x)) for x in leaves if np.asarray(x).dtype.kind == "f"), step
    report("exploding learning rate", stopped_at=stopped, checkpoints_on_disk=steps, all_finite=True)


def test_second_trainer_on_the_same_workdir_is_turned_away(setup):
    workdir = str(setup["root"] / "two")
    first = start(workdir, setup["shards"])
    lock = os.path.join(workdir, ".lock")
    wait_for(lambda: os.path.exists(lock) and os.path.getsize(lock) > 0, first, "the lock")
    code, stderr = run(workdir, setup["shards"])
    assert code == 75, stderr[-3000:]
    line_starting(stderr, f"error: run directory {workdir} is in use by pid {first.pid}")
    assert_no_traceback_of_ours(stderr)
    code, first_stderr = finish(first)
    assert code == 0, first_stderr[-3000:]
    losses = logged_losses(workdir)
    np.testing.assert_allclose(
        [losses[s] for s in sorted(losses)], [setup["reference"][s] for s in sorted(losses)], rtol=1e-6
    )
    report("two trainers", second_exit_code=75, first_finished=True)


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    yield mount


def test_disk_too_small_for_the_next_checkpoint(setup, small_disk):
    """A tmpfs with room for two checkpoints: the third save is refused before it writes."""
    size = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, fs in os.walk(os.path.join(setup["root"], "at6", "checkpoints", "6"))
        for f in fs
    )
    mib = max(1, int(np.ceil(2.6 * size / 2**20)))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(small_disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        workdir = str(small_disk / "run")
        code, stderr = run(workdir, setup["shards"], NUM_STEPS, "--config.trainer.max_checkpoints=5")
        assert code == 2, stderr[-3000:]
        last = line_starting(stderr, "error: not enough disk space for the checkpoint of step")
        assert_no_traceback_of_ours(stderr)
        steps = checkpoint_steps(workdir)
        assert steps and steps[-1] < NUM_STEPS
        # Moved to a bigger disk, the run resumes from its last checkpoint.
        moved = str(setup["root"] / "moved_from_small_disk")
        shutil.copytree(workdir, moved)
    finally:
        subprocess.run(["umount", str(small_disk)], check=False)
    refused = int(last.split("checkpoint of step ")[1].split()[0])
    code, stderr = run(moved, setup["shards"])
    assert code == 0, stderr[-3000:]
    assert_resumed_like_reference(moved, stderr, setup["reference"], killed_at=refused, case=f"{mib} MiB disk")


def test_orphaned_checkpoint_read_tasks_are_not_reported_but_other_task_errors_are():
    """The damaged-checkpoint cases above assert no traceback; whether Orbax's unawaited read
    tasks are collected before exit is down to timing, so the filter is checked directly on
    asyncio's own report of an unretrieved task exception."""
    import asyncio
    import gc
    import logging

    from stable_audio_jax import cli

    cli._ignore_orphaned_checkpoint_read_reports()
    reported: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reported.append(str(record.exc_info[1]) if record.exc_info else record.getMessage())

    async def fails(message: str) -> None:
        raise ValueError(message)

    async def leave_unretrieved() -> None:
        for message in ("NOT_FOUND: Error reading ... [tensorstore_spec='{}']", "a real bug"):
            asyncio.ensure_future(fails(message))
        await asyncio.sleep(0.01)

    handler = Collect()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        asyncio.run(leave_unretrieved())
        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert reported == ["a real bug"]
