"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax
from flax import struct

from stable_audio_jax.training import schedules


@struct.dataclass
class TrainState:
    """Everything a train step reads and writes, as arrays; all of it is checkpointed but `frozen`.

    `params` and `opt_state` are dicts keyed by model / optimizer name (the VAE has an
    autoencoder and a discriminator, each with its own optimizer). `ema_params` holds
    EMA copies of the models that are exported. `rng` is a raw uint32 key; each step
    derives its own key with `fold_in(rng, step)`, so a resumed run draws the same noise.
    `frozen` holds weights a step reads but never updates (the base model under LoRA
    adapters); a checkpoint leaves them out (`checkpointed`), they are loaded again from
    `config.init_from` whenever the run starts.
    """

    step: jax.Array  # int32 scalar: number of optimizer steps taken so far
    params: dict[str, Any]
    opt_state: dict[str, Any]
    ema_params: dict[str, Any]
    rng: jax.Array  # uint32 [2]
    frozen: dict[str, Any] = struct.field(default_factory=dict)

    def checkpointed(self) -> "CheckpointedState":
        """What a checkpoint holds: everything but the frozen weights."""
        return CheckpointedState(
            step=self.step, params=self.params, opt_state=self.opt_state, ema_params=self.ema_params, rng=self.rng
        )

    @classmethod
    def from_checkpoint(cls, saved: "CheckpointedState", frozen: dict[str, Any] | None = None) -> "TrainState":
        return cls(
            step=saved.step,
            params=saved.params,
            opt_state=saved.opt_state,
            ema_params=saved.ema_params,
            rng=saved.rng,
            frozen=frozen or {},
        )

    def apply_gradients(
        self,
        grads: Any,
        tx: optax.GradientTransformation,
        part: str,
        *,
        opt_key: str | None = None,
        ema: Mapping[str, float] | None = None,
    ) -> "TrainState":
        """One update of `params[part]` by `tx` (its state in `opt_state[opt_key or part]`),
        then, with `ema` (`beta`, `power` of `schedules.ema_decay`), of `ema_params[part]`;
        the step advances by one. The other parts are kept as they are."""
        opt_key = opt_key or part
        updates, opt_state = tx.update(grads, self.opt_state[opt_key], self.params[part])
        params = optax.apply_updates(self.params[part], updates)
        ema_params = self.ema_params
        if ema is not None:
            decay = schedules.ema_decay(self.step, beta=ema["beta"], power=ema["power"])
            ema_params = {
                **ema_params,
                part: jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params[part], params),
            }
        return self.replace(
            step=self.step + 1,
            params={**self.params, part: params},
            opt_state={**self.opt_state, opt_key: opt_state},
            ema_params=ema_params,
        )

    def step_rng(self) -> jax.Array:
        return jax.random.fold_in(self.rng, self.step)


@struct.dataclass
class CheckpointedState:
    """A `TrainState` without its frozen weights, as checkpoints store it: the same fields in
    the same order, so checkpoints written before `frozen` existed restore (and match their
    recorded checksums) as they are."""

    step: jax.Array
    params: dict[str, Any]
    opt_state: dict[str, Any]
    ema_params: dict[str, Any]
    rng: jax.Array
