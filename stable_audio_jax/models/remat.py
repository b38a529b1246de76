"""Rematerialisation (activation checkpointing) of a model's repeated blocks, by config name.

Every trained model takes a `remat_policy` string: the U-Net (`UNetConfig`: ResNet and
transformer blocks), the DiT (`DiTConfig`: transformer blocks), the VAE
(`AutoencoderConfig`: encoder and decoder blocks) and CLAP (`CLAPConfig`, passed on to the
`TextEncoder` layers and the `HTSATEncoder` Swin blocks). `maybe_remat` turns a block class
into its `nn.remat` lift under the matching `jax.checkpoint` policy, with the same
parameter names, so a checkpoint loads whatever the policy.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax

# A `remat_policy` config value -> the `jax.checkpoint` policy: which intermediates of a remat'ed
# block are saved for the backward pass (everything else is recomputed). "full" saves only
# the block's inputs; "dots_with_no_batch_dims_saveable" keeps the projection / MLP matmul
# outputs but recomputes convolutions, norms and the [batch, heads, L, L] attention logits.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_CHOICES: tuple[str, ...] = ("none",) + tuple(REMAT_POLICIES)


def check_remat_policy(policy: str, owner: str = "") -> None:
    """Raises ValueError (naming `owner`'s config, if given, and the choices) unless
    `policy` is one of `REMAT_CHOICES`; configs call it so a typo fails at construction."""
    if policy not in REMAT_CHOICES:
        prefix = f"{owner} " if owner else ""
        raise ValueError(f"unknown {prefix}remat_policy {policy!r}; choose one of {list(REMAT_CHOICES)}")


@functools.cache
def maybe_remat(module: type[nn.Module], policy: str) -> type[nn.Module]:
    """`module`, or its `nn.remat` lift under `REMAT_POLICIES[policy]`.

    The lifted class creates the same parameters under the same names, so checkpoints load
    either way. Cached so every block of one kind shares one class (one trace per shape).
    """
    check_remat_policy(policy)
    if policy == "none":
        return module
    return nn.remat(module, policy=REMAT_POLICIES[policy])
