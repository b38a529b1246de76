"""Gradient cache: the exact gradient of a contrastive loss over a batch too large to
back-propagate at once (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size
under Memory Limited Setup").

A contrastive loss such as InfoNCE couples every example with every other one, so it is
not a mean of per-micro-batch losses and plain gradient accumulation
(`accumulate.accumulated_value_and_grad`) would change it: each micro-batch would only
see its own negatives. The gradient cache splits the computation where the coupling
starts, at the embeddings:

1. a `lax.scan` over the `k` micro-batches computes their embeddings, with no
   differentiation, so no activations are kept, and reassembles the batch's embeddings;
2. the loss and its gradient with respect to every embedding (and to the parameters the
   loss uses directly, e.g. CLIP's temperature) are computed on the whole batch, which
   is cheap: only `[batch, dim]` arrays;
3. a second `lax.scan` recomputes each micro-batch's embeddings under `jax.vjp` and pulls
   its slice of the embedding gradients back to the parameters, summing over the
   micro-batches.

The result is the gradient of the whole batch (up to float summation order), with the
activations of one micro-batch alive at a time, for the price of a second forward pass.
Both passes give micro-batch `j` the same rng, `fold_in(rng, j)`, so dropout masks agree
and the recomputed embeddings are the ones the loss saw.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from stable_audio_jax.training.accumulate import split_micro_batches

PyTree = Any


def merge_micro_batches(stacked: PyTree, steps: int) -> PyTree:
    """Inverse of `accumulate.split_micro_batches`: `[steps, batch / steps, ...]` leaves ->
    `[batch, ...]` in the original example order (micro-batch j, row i -> example i * steps + j)."""

    def merge(x: jax.Array) -> jax.Array:
        if x.shape[0] != steps:
            raise ValueError(f"expected {steps} stacked micro-batches, got a leading axis of {x.shape[0]}")
        return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])

    return jax.tree.map(merge, stacked)


def grad_cache_value_and_grad(
    embed_fn: Callable[[PyTree, PyTree, jax.Array], PyTree],
    loss_fn: Callable[[PyTree, PyTree], tuple[jax.Array, Any]],
    params: PyTree,
    inputs: PyTree,
    rng: jax.Array,
    steps: int,
) -> tuple[tuple[jax.Array, Any], PyTree]:
    """`jax.value_and_grad(lambda p: loss_fn(p, embed_fn(p, inputs, rng)), has_aux=True)(params)`,
    back-propagated one micro-batch at a time.

    Args:
      embed_fn: `(params, inputs, rng) -> embeddings`, a pytree of `[batch, ...]` arrays
        whose row i depends on row i of `inputs` only (no batch statistics). `rng` draws
        its dropout.
      loss_fn: `(params, embeddings) -> (loss, aux)` on the whole batch's embeddings; it may
        use parameters directly (a temperature), whose gradient is added.
      params: the differentiated pytree (float32 in mixed precision, so the sums are too).
      inputs: pytree of `[batch, ...]` arrays, `batch` divisible by `steps`.
      rng: the step's rng; with `steps > 1` micro-batch j uses `fold_in(rng, j)` in both
        passes.
      steps: micro-batches; 1 is the plain `value_and_grad` of the composition, with `rng`
        itself (no scan, no recomputation).

    Returns `((loss, aux), grads)`. The micro-batches are strided
    (`accumulate.split_micro_batches`); the embeddings are put back in the order of
    `inputs` before `loss_fn` sees them, so a loss or metric that depends on the pairing
    or order of rows (row i of one embedding with row i of another, top-1 accuracy) is
    that of the unsplit batch.
    """
    if steps < 1:
        raise ValueError(f"optimizer.grad_accum_steps must be >= 1, got {steps}")
    if steps == 1:
        return jax.value_and_grad(lambda p: loss_fn(p, embed_fn(p, inputs, rng)), has_aux=True)(params)

    micro_inputs = split_micro_batches(inputs, steps)
    indices = jnp.arange(steps)

    def embed(micro: PyTree, index: jax.Array, p: PyTree) -> PyTree:
        return embed_fn(p, micro, jax.random.fold_in(rng, index))

    # (i) Embeddings of every micro-batch; nothing is differentiated, nothing kept but them.
    def forward(carry: None, xs: tuple[PyTree, jax.Array]) -> tuple[None, PyTree]:
        micro, index = xs
        return carry, embed(micro, index, params)

    _, stacked = jax.lax.scan(forward, None, (micro_inputs, indices))
    # Back in the order of `inputs` (the strided split interleaves the examples): InfoNCE
    # would be the same in any order applied to both sides alike, but top-1 accuracies and
    # any loss_fn that reads row order would not, so loss_fn sees exactly the unsplit batch.
    embeddings = merge_micro_batches(stacked, steps)

    # (ii) The loss of the whole batch, differentiated with respect to the embeddings and to
    # the parameters it uses directly.
    (loss, aux), (direct_grads, embedding_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, embeddings
    )

    # (iii) Each micro-batch's embeddings again, under vjp, pulling back its cotangents.
    def backward(grad_sum: PyTree, xs: tuple[PyTree, jax.Array, PyTree]) -> tuple[PyTree, None]:
        micro, index, cotangent = xs
        _, pull_back = jax.vjp(lambda p: embed(micro, index, p), params)
        (grads,) = pull_back(cotangent)
        return jax.tree.map(jnp.add, grad_sum, grads), None

    grads, _ = jax.lax.scan(
        backward, direct_grads, (micro_inputs, indices, split_micro_batches(embedding_grads, steps))
    )
    return (loss, aux), grads
