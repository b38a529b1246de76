"""Logical sharding constraints on activations.

Parameters get their logical axis names where they are created; activations get them
with `constrain` at block boundaries, so XLA keeps e.g. the batch split across devices
instead of guessing a layout. The names map to mesh axes through the rules table of
`stable_audio_jax.parallel` (`DEFAULT_RULES`); `None` leaves a dim unsharded.
"""

from __future__ import annotations

import flax.linen as nn
import jax

# One logical axis name, or None (unsharded), per dim of an array.
LogicalAxes = tuple[str | None, ...]

# Sequences `[batch, length, features]`: 1-D signals, latents and residual streams.
BATCH_LENGTH_CHANNELS: LogicalAxes = ("batch", "length", "channels")
# Token sequences whose width is the `embed` axis (FSDP-sharded by the default rules).
BATCH_LENGTH_EMBED: LogicalAxes = ("batch", "length", "embed")
# Hidden states of the text encoders, the width left unsharded.
BATCH_LENGTH_HIDDEN: LogicalAxes = ("batch", "length", None)


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
    """`x` with its sharding constrained to the logical `axes` (one per dim of `x`).

    Outside a logical-rules context (`parallel.with_rules`, `nn.logical_axis_rules`) it
    returns `x` unchanged.
    """
    return nn.with_logical_constraint(x, axes)
