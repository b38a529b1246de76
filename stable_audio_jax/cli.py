"""The launch and data scripts' entry point: arguments, then `main`, with one-line user errors.

    from stable_audio_jax import cli
    if __name__ == "__main__":
        cli.run(main)                    # absl flags (launch/*.py)
        cli.run(main, absl_flags=False)  # argparse via `cli.ArgumentParser` (data/*.py)

A `UserError` raised anywhere under `main` prints `error: <message>` on stderr and exits with
its code (no traceback); other exceptions are bugs and keep Python's traceback. Bad
command-line arguments are user errors too, caught before `main` runs: an unknown flag, a
bad value, a missing required flag, a missing `--config` file or a misspelt
`--config.<key>` override (named with the closest valid key).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from typing import Any, Callable, NoReturn

from absl import app, flags

from stable_audio_jax.errors import UserError


def fail(error: UserError) -> NoReturn:
    """Print `error` as one line on stderr and exit with its code."""
    exit_with_line(f"error: {error}", error.exit_code)


def exit_with_line(line: str, code: int) -> NoReturn:
    """Print `line` on stderr as the process's last word and exit with `code`.

    Background threads (Orbax's and TensorStore's event loops) can print tracebacks such as
    "Event loop is closed" while the interpreter shuts down after an error; stderr is
    pointed at /dev/null once the line is out, so the line stays the last thing a user reads.
    """
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    sys.stderr = open(os.devnull, "w")
    sys.exit(code)


def _guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except UserError as error:
            fail(error)

    return guarded


def run(main: Callable[[list[str]], Any], *, absl_flags: bool = True) -> None:
    """Run `main` as a script, turning a `UserError` into one stderr line and its exit code.

    absl_flags: `absl.app.run(main)`, with flag errors as user errors (see `parse_flags`).
      False: `main` parses its own arguments (with `ArgumentParser`) and gets `sys.argv[1:]`;
      its return value is not an exit status (the data scripts return their report).
    """
    _ignore_closed_event_loop_reports()
    _ignore_orphaned_checkpoint_read_reports()
    if absl_flags:
        app.run(_guarded(main), flags_parser=parse_flags)
    else:
        _guarded(main)(sys.argv[1:])
        sys.exit(0)


def _is_closed_event_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _ignore_closed_event_loop_reports() -> None:
    """Drop one known, harmless report: after a failed checkpoint read (a damaged file),
    TensorStore still completes the read's other futures, and their callbacks post to the
    asyncio loop that Orbax has already closed. TensorStore hands each failure to
    `sys.unraisablehook`, which would print a bare "RuntimeError: Event loop is closed"
    traceback from one of its threads, dozens of them interleaved with the error line.
    Every other unraisable exception is reported as before."""
    previous_hook = sys.unraisablehook

    def unraisable_hook(report) -> None:
        if not _is_closed_event_loop(report.exc_value):
            previous_hook(report)

    sys.unraisablehook = unraisable_hook


def is_orphaned_checkpoint_read_report(record: logging.LogRecord) -> bool:
    """Whether `record` is asyncio's "Task exception was never retrieved" for a TensorStore
    read (its message carries the `tensorstore_spec`)."""
    error = record.exc_info[1] if record.exc_info else None
    return (
        record.getMessage().startswith("Task exception was never retrieved")
        and isinstance(error, ValueError)
        and "tensorstore_spec" in str(error)
    )


class _OrphanedCheckpointReadFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_orphaned_checkpoint_read_report(record)


def _ignore_orphaned_checkpoint_read_reports() -> None:
    """Drop a second known, harmless report of the same damaged-checkpoint read: Orbax
    gathers one read task per array, the first failure is raised (and reported as "step N is
    damaged"), and the other failed tasks are never awaited, so when they are collected the
    asyncio logger prints each one's traceback. Other asyncio reports are kept."""
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrphanedCheckpointReadFilter) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_OrphanedCheckpointReadFilter())


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are `UserError`s (one line, exit 2)
    instead of a usage block; `--help` still prints the usage."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


# ------------------------------------------------------------------------------- absl flags
def _one_line(message: str) -> str:
    """absl flag errors are one line, except a config file's own exception, which carries its
    traceback text: keep the first line (the flag) and the last (the exception)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"


def parse_flags(argv: list[str]) -> list[str]:
    """`absl.flags.FLAGS(argv)`, failing with one line on any bad command-line argument."""
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        fail(UserError(_one_line(str(error))))
    except Exception:  # config_flags raises plain errors for an override of a key it lacks
        problem = config_flag_problem(argv)
        if problem is None:
            raise
        fail(problem)
    # config_flags defers a config file's load error until the config is first read.
    for flag in _config_flags():
        if flag.value is None:  # not given
            continue
        path = flag.config_filename.split(":", 1)[0]
        if not os.path.isfile(path):
            fail(_no_config_file(flag.name, path))
    return remaining


def _config_flags() -> list[flags.Flag]:
    """The `config_flags.DEFINE_config_file` flags (their parser loads the file)."""
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    found = {name: flags.FLAGS[name] for name in flags.FLAGS}  # aliases too: keep each flag once
    return [flag for name, flag in found.items() if name == flag.name and isinstance(flag.parser, ConfigFileFlagParser)]


def _no_config_file(name: str, path: str) -> UserError:
    return UserError(f"--{name}={path}: no such config file")


def _flag_argument(argv: list[str], name: str) -> str | None:
    """The value given to `--name` in `argv` (`--name=v` or `--name v`; the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        match = re.fullmatch(rf"--?{re.escape(name)}(?:=(.*))?", arg, flags=re.DOTALL)
        if match and match.group(1) is not None:
            value = match.group(1)
        elif match:
            value = argv[i + 1] if i + 1 < len(argv) else None
    return value


def config_flag_problem(argv: list[str]) -> UserError | None:
    """Why `argv` cannot configure a config-file flag: its file is missing, or an override
    `--<flag>.<key>` names a key the config lacks. None when neither is the case."""
    from stable_audio_jax import config_lib

    for flag in _config_flags():
        filename = _flag_argument(argv, flag.name)
        if filename is None:
            continue
        path = filename.split(":", 1)[0]
        if not os.path.isfile(path):
            return _no_config_file(flag.name, path)
        overrides = [m.group(1) for arg in argv if (m := re.match(rf"--?(?:no)?{re.escape(flag.name)}\.([^=]+)", arg))]
        if not overrides:
            continue
        config = flag.parser.parse(filename)
        for key in overrides:
            if not config_lib.has_key(config, key):
                closest = config_lib.closest_key(config, key)
                hint = f"; did you mean --{flag.name}.{closest}?" if closest else ""
                return UserError(f"--{flag.name}.{key}: {path} has no key {key}{hint}")
    return None


# ------------------------------------------------------------------------------- run directories
def check_run_tasks(runs: Mapping[str, tuple[str | None, str]]) -> None:
    """Fail unless each run-directory flag names a run of its task, before any model loads.

    runs: flag name -> (the directory given, or None when the flag is unset; the task it must
      hold, e.g. "vae"). Two flags given each other's kind of run are reported as swapped.
    """
    from stable_audio_jax.training.runs import run_task  # JAX and Orbax: after the cheap checks

    found = {}
    for flag, (path, _) in runs.items():
        if path is not None:
            try:
                found[flag] = run_task(path)
            except FileNotFoundError as e:
                raise UserError(f"--{flag}={path}: {e}") from None
    wrong = [flag for flag, task in found.items() if task != runs[flag][1]]
    for a, b in itertools.combinations(wrong, 2):
        if found[a] == runs[b][1] and found[b] == runs[a][1]:
            raise UserError(
                f"--{a}={runs[a][0]} is a {found[a]} run and --{b}={runs[b][0]} a {found[b]} run: "
                "the two flags are swapped"
            )
    for flag in wrong:
        raise UserError(f"--{flag}={runs[flag][0]} is a {found[flag] or 'task-less'} run, not a {runs[flag][1]} run")


def split_scale(value: str) -> tuple[str, float]:
    """A `path[:scale]` flag value (e.g. `--lora=runs/sao_lora:0.5`) -> `(path, scale)`;
    the scale is 1 when left out."""
    path, sep, scale = value.rpartition(":")
    if not sep:
        return value, 1.0
    try:
        return path, float(scale)
    except ValueError:
        return value, 1.0  # a ':' inside the path and no scale


# ------------------------------------------------------------------------------- output paths
def check_output_dir(path: str, flag: str) -> None:
    """Fail unless `path` is, or can be created as, a writable directory; creates nothing.

    Checked before any model loads, so a bad `--output_dir` costs no loading time; the probe
    writes (and removes) a temporary file in the nearest existing ancestor.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is a file" if existing == os.path.abspath(path) else f"is under the file {existing}"
        raise UserError(f"{flag}={path} {what}, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserError(f"{flag}={path} is not writable: {e.strerror or e}") from None
