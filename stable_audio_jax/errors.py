"""Errors a user can fix, and the exit codes of the launch scripts.

A `UserError` is bad input: a missing file, a value out of range, a misspelt config key, a
checkpoint that does not fit the config. Its message is complete on one line and names the
flag, key or path involved. The launch scripts (`cli.run`) print it as `error: <message>` on
stderr, without a traceback, and exit with `EXIT_USAGE`. Anything else is a bug and keeps its
traceback.

Exit codes (documented in the README, "Faults and recovery"):

    0    EXIT_OK          finished
    1                     an unexpected error (a bug): Python's traceback
    2    EXIT_USAGE       bad input (`UserError`): one line on stderr, nothing written half
    3    EXIT_NONFINITE   training stopped on a NaN/inf loss or gradient norm; the newest
                          checkpoint on disk is the last finite one
    4    EXIT_NO_CHECKPOINT  every checkpoint in the run directory is damaged
    75   EXIT_LOCKED      another live process holds the run directory's lock (EX_TEMPFAIL)
    143  EXIT_PREEMPTED   stopped by SIGTERM/SIGINT after saving a checkpoint (128 + SIGTERM,
                          the shell's convention): run the same command again to resume
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_NO_CHECKPOINT = 4
EXIT_LOCKED = 75
EXIT_PREEMPTED = 143


class UserError(Exception):
    """Bad input that the user can fix; `str(error)` is the whole, one-line message.

    `exit_code` is what a launch script exits with (default `EXIT_USAGE`).
    """

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the caller built
        if exit_code is not None:
            self.exit_code = exit_code
