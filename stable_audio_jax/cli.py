"""The launch scripts' entry point: absl flags, then `main`, with one-line user errors.

    from stable_audio_jax import cli
    if __name__ == "__main__":
        cli.run(main)

A `UserError` raised anywhere under `main` prints `error: <message>` on stderr and exits with
its code (no traceback); other exceptions are bugs and keep Python's traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import app

from stable_audio_jax.errors import UserError


def fail(error: UserError) -> None:
    """Print `error` as one line on stderr and exit with its code."""
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    sys.exit(error.exit_code)


def run(main: Callable[[list[str]], object]) -> None:
    """`absl.app.run(main)`, turning a `UserError` into one stderr line and its exit code."""
    def guarded(argv):
        try:
            return main(argv)
        except UserError as error:
            fail(error)
    app.run(guarded)
