"""Gradient accumulation: one optimizer step's gradient from `k` micro-batches in a `lax.scan`.

The activations of only one micro-batch are alive at a time, so a global batch that does
not fit in memory at once can still be trained with the same update. The caller draws all
randomness for the global batch first and slices it with the inputs, so the accumulated
gradient equals the one of the whole batch (up to float summation order).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


def config_steps(config: Any) -> int:
    """`config.optimizer.grad_accum_steps`: micro-batches per optimizer step, 1 where the
    optimizer section predates the field.

    Raises ValueError naming the key unless it is >= 1 and divides `config.data.batch_size`.
    """
    steps = int(config.optimizer.get("grad_accum_steps", 1))
    if steps < 1 or config.data.batch_size % steps:
        raise ValueError(
            f"optimizer.grad_accum_steps={steps} must be >= 1 and divide data.batch_size={config.data.batch_size}"
        )
    return steps


def split_micro_batches(inputs: PyTree, steps: int) -> PyTree:
    """`[batch, ...]` leaves -> `[steps, batch / steps, ...]`; micro-batch j holds examples
    j, j + steps, j + 2 steps, ...

    The strided split (reshape to `[batch / steps, steps]`, then swap the axes) keeps each
    micro-batch spread over every data-parallel device with no data movement: a device's
    contiguous block of the batch holds an equal share of every micro-batch, provided
    `batch / steps` is a multiple of the data-parallel size. (Contiguous micro-batches sit on
    a subset of the devices; on a (2, 4) mesh XLA then adds collective permutes to spread
    them.) The order of the examples inside a micro-batch does not matter to a mean loss.

    Raises ValueError when `batch` is not divisible by `steps`.
    """

    def split(x: jax.Array) -> jax.Array:
        batch = x.shape[0]
        if batch % steps:
            raise ValueError(
                f"the global batch of {batch} examples is not divisible by optimizer.grad_accum_steps={steps}"
            )
        return jnp.swapaxes(x.reshape((batch // steps, steps) + x.shape[1:]), 0, 1)

    return jax.tree.map(split, inputs)


def accumulated_value_and_grad(
    loss_fn: Callable[[PyTree, PyTree], Any], params: PyTree, inputs: PyTree, steps: int, *, has_aux: bool = False
) -> tuple[Any, PyTree]:
    """`jax.value_and_grad(loss_fn, has_aux=has_aux)(params, inputs)`, computed over `steps`
    micro-batches.

    Args:
      loss_fn: `(params, inputs) -> scalar` (with `has_aux`: `-> (scalar, aux)`, e.g.
        `aux` a dict of scalar metrics), a mean over the examples of `inputs`.
      params: the differentiated pytree (float32 in mixed precision, so the sums are too).
      inputs: pytree of `[batch, ...]` arrays; `batch` divisible by `steps`.
      steps: number of micro-batches; 1 is a plain `value_and_grad` (no scan).
      has_aux: as in `jax.value_and_grad`.

    Returns the mean over the micro-batches of the value (the loss, or `(loss, aux)` with
    every leaf of `aux` averaged) and of the gradients: with equal micro-batches and a loss
    that is a mean of per-example terms, the loss and gradient of the whole batch.
    """
    if steps < 1:
        raise ValueError(f"optimizer.grad_accum_steps must be >= 1, got {steps}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
    if steps == 1:
        return grad_fn(params, inputs)

    def add_micro_batch(grad_sum: PyTree, micro: PyTree) -> tuple[PyTree, Any]:
        value, grads = grad_fn(params, micro)
        return jax.tree.map(jnp.add, grad_sum, grads), value

    grad_sum, values = jax.lax.scan(
        add_micro_batch, jax.tree.map(jnp.zeros_like, params), split_micro_batches(inputs, steps)
    )
    return jax.tree.map(lambda v: jnp.mean(v, axis=0), values), jax.tree.map(lambda g: g / steps, grad_sum)
