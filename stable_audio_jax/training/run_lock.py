"""One trainer per run directory: an exclusive lock on `<workdir>/.lock`.

The lock is an advisory `flock` on the file, so the kernel drops it when the holder dies in
any way (kill -9 included): a lock left by a dead trainer is never in the way, and there is
no staleness guess to get wrong. The file also records who holds it (host, pid, start time)
for the error message of the trainer that is turned away. A lock file whose holder is gone
is simply taken over; its old contents are logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time

from stable_audio_jax.errors import EXIT_LOCKED, UserError

LOCK_NAME = ".lock"


class RunLock:
    """Holds `<workdir>/.lock` from `acquire()` to `release()` (or process exit)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `UserError` (exit code `EXIT_LOCKED`) naming the holder."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                if holder
                else "another process"
            )
            raise UserError(
                f"run directory {os.path.dirname(self.path)} is in use by {who}; stop that trainer "
                f"or use another --workdir",
                exit_code=EXIT_LOCKED,
            ) from None
        previous = _read_holder(fd)
        if previous:
            logging.info(
                "run lock: taking over %s (its holder, pid %s on %s, is gone)",
                self.path,
                previous.get("pid"),
                previous.get("host"),
            )
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file means nobody holds it
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
