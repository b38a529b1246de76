"""The bad-input contract of the launch and data scripts, as a checker the tests share (and
`run_script`, which runs one as a user would): a `Case`
is one command line a user might type wrongly; `check_cases` runs cases as subprocesses and
asserts exit status 2, one `error: ...` line on stderr naming the flag, key or path, no
traceback, and nothing written."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import subprocess
import sys

from stable_audio_jax.errors import EXIT_USAGE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Case:
    script: str  # relative to the repository root, e.g. "launch/train.py"
    args: list[str]
    names: list[str]  # what the error line must mention
    not_written: list[str] = dataclasses.field(default_factory=list)  # paths that must not exist after


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`script` (relative to the repository root) as a user runs it, on CPU; output captured."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _run(case: Case) -> subprocess.CompletedProcess:
    return run_script(case.script, *case.args, timeout=120)


def check_cases(cases: list[Case]) -> None:
    """Run `cases` two at a time and assert the one-line contract on each; report all failures."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_run, cases))
    failures = []
    for case, proc in zip(cases, results):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        problems = []
        if proc.returncode != EXIT_USAGE:
            problems.append(f"exit {proc.returncode}")
        if "Traceback" in proc.stderr + proc.stdout:
            problems.append("a traceback")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"{len(lines)} stderr lines")
        elif missing := [name for name in case.names if name not in lines[0]]:
            problems.append(f"the line does not name {missing}")
        problems += [f"{path} was written" for path in case.not_written if os.path.exists(path)]
        if problems:
            failures.append(
                f"{case.script} {' '.join(case.args)}: {', '.join(problems)}\n  stderr: {proc.stderr[-1500:]!r}"
            )
    assert not failures, "\n".join(failures)
