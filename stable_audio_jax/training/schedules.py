"""Learning-rate and EMA schedules of the reference trainer."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def inverse_lr(
    base_lr: float, *, inv_gamma: float, power: float, warmup: float = 0.0, final_lr: float = 0.0
) -> optax.Schedule:
    """The reference `InverseLR`: `warmup_factor * max(final_lr, base_lr * (1 + t/inv_gamma)^-power)`,

    with `warmup_factor = 1 - warmup^(t + 1)` (an exponential warm-up; `warmup=0` disables it).
    """

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        warm = 1.0 - jnp.power(warmup, t + 1.0)
        return warm * jnp.maximum(final_lr, base_lr * jnp.power(1.0 + t / inv_gamma, -power))

    return schedule


def ema_decay(step, *, beta: float, power: float):
    """EMA decay at `step`: `min(beta, 1 - (1 + step)^-power)`; 0 at step 0 (a plain copy).

    This is the warm-up form of `ema_pytorch.EMA` that the reference uses (inv_gamma 1).
    """
    t = jnp.asarray(step, jnp.float32)
    return jnp.clip(1.0 - jnp.power(1.0 + t, -power), 0.0, beta)


def adamw(config) -> optax.GradientTransformation:
    """AdamW with the inverse-LR schedule from a config with lr, b1, b2, weight_decay,

    inv_gamma, power, warmup (and optional grad_clip)."""
    schedule = inverse_lr(config.lr, inv_gamma=config.inv_gamma, power=config.power, warmup=config.warmup)
    tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
    clip = config.get("grad_clip", 0.0)
    return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
