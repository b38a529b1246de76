"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class TrainState:
    """Everything that is checkpointed, as arrays.

    `params` and `opt_state` are dicts keyed by model / optimizer name (the VAE has an
    autoencoder and a discriminator, each with its own optimizer). `ema_params` holds
    EMA copies of the models that are exported. `rng` is a raw uint32 key; each step
    derives its own key with `fold_in(rng, step)`, so a resumed run draws the same noise.
    """

    step: jax.Array  # int32 scalar: number of optimizer steps taken so far
    params: dict[str, Any]
    opt_state: dict[str, Any]
    ema_params: dict[str, Any]
    rng: jax.Array  # uint32 [2]

    def step_rng(self) -> jax.Array:
        return jax.random.fold_in(self.rng, self.step)
