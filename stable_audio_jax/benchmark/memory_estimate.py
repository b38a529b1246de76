"""Per-device memory of a training step, estimated without devices or compilation.

`jax.jit(...).lower().compile().memory_analysis()` is exact but needs the target backend:
on XLA:CPU it ignores rematerialisation (its temp-buffer figure did not move with the remat
policy), and compiling a paper-size model on a laptop takes long. This module estimates the
same budget from shapes alone, for any mesh shape, on any machine:

- **state**: parameters, optimizer state and EMA copy, each leaf's *shard* on the mesh (the
  logical rules decide how every leaf is split; `AbstractMesh` needs no devices);
- **gradients**: one more parameter-shaped tree in the parameter dtype (two with gradient
  accumulation: the running sum and the current micro-batch's);
- **activations**: the residuals JAX keeps between the forward and the backward pass,
  read from `jax.vjp` under `jax.eval_shape`, so they follow the remat policy and the compute
  dtype exactly. The residuals also hold references to the parameters; they do not grow
  with the batch, so activations are `R(2b) - R(b)` for the per-device micro-batch `b`.

Not included: XLA's temporary buffers (the recomputed activations of the one block being
differentiated, fusion scratch, collective buffers) and the framework's reserve, so the
figure is a lower bound; `launch/benchmark.py` prints XLA's own figure next to it on GPU/TPU.
Activations assume the batch is split over the data axes only (a `tensor` axis splits some
of them further, so with tensor parallelism the estimate is high).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType, NamedSharding

from stable_audio_jax import parallel

PyTree = Any


def abstract_mesh(shape: Sequence[int], axis_names: Sequence[str] = parallel.MESH_AXES) -> AbstractMesh:
    """A device-free mesh of `shape` (e.g. `(1, 8, 1)` for data, fsdp, tensor)."""
    if len(shape) != len(axis_names) or any(int(s) < 1 for s in shape):
        raise ValueError(f"mesh shape {tuple(shape)} must give a positive size to each of the axes {tuple(axis_names)}")
    return AbstractMesh(tuple(int(s) for s in shape), tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape))


def nbytes(leaf: Any) -> int:
    return math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize


def bytes_per_device(abstract_tree: PyTree, mesh: AbstractMesh, rules: parallel.Rules) -> int:
    """Bytes of one device's shards of a (logically boxed) abstract tree placed on `mesh` by
    `rules`; the largest shard where a split is uneven, so the busiest device."""
    shardings = parallel.logical_to_shardings(abstract_tree, mesh, rules)

    def shard_bytes(leaf: Any, sharding: NamedSharding) -> int:
        shape = sharding.shard_shape(leaf.shape)
        return math.prod(shape) * jnp.dtype(leaf.dtype).itemsize

    return sum(jax.tree.leaves(jax.tree.map(shard_bytes, nn.meta.unbox(abstract_tree), shardings)))


def saved_residual_bytes(loss_fn: Callable[[PyTree, PyTree], jax.Array], params: PyTree, inputs: PyTree) -> int:
    """Bytes JAX keeps for the backward pass of `loss_fn(params, inputs)` with respect to
    `params`: the leaves of the `jax.vjp` pullback, traced with `jax.eval_shape` (no FLOPs,
    no memory). Arguments may be `jax.ShapeDtypeStruct`s."""
    pullback = jax.eval_shape(lambda p, x: jax.vjp(lambda q: loss_fn(q, x), p)[1], params, inputs)
    return sum(nbytes(leaf) for leaf in jax.tree.leaves(pullback))


def activation_bytes(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    make_inputs: Callable[[int], PyTree],
    batch_size: int,
) -> int:
    """Residual bytes that scale with the batch at `batch_size` examples:
    `R(2 b) - R(b)`, which removes the batch-independent residuals (the parameters)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    one = saved_residual_bytes(loss_fn, params, make_inputs(batch_size))
    two = saved_residual_bytes(loss_fn, params, make_inputs(2 * batch_size))
    return two - one


@dataclasses.dataclass(frozen=True)
class TrainMemoryEstimate:
    """One device's share of a training step, in bytes (see the module docstring)."""

    mesh_shape: dict[str, int]
    global_batch: int
    micro_batch_per_device: int
    grad_accum_steps: int
    remat_policy: str
    params: int
    optimizer: int
    ema: int
    gradients: int
    activations: int
    frozen: int = 0  # weights the step reads but does not train (a LoRA run's base)
    merged: int = 0  # the adapted kernels a LoRA step computes from the base (float32)

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.ema + self.gradients + self.activations + self.frozen + self.merged

    def to_json(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), total=self.total)


def train_memory_estimate(
    *,
    state: PyTree,
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    make_inputs: Callable[[int], PyTree],
    mesh: AbstractMesh,
    rules: parallel.Rules,
    global_batch: int,
    grad_accum_steps: int = 1,
    remat_policy: str = "none",
    model: str,
    merged: PyTree | None = None,
) -> TrainMemoryEstimate:
    """Estimate for a `TrainState`-shaped abstract (logically boxed) `state` whose trained
    parameters are `state.params[model]`, the first argument of `loss_fn`.

    The global batch is split over the mesh's data axes (`batch` rule) and then into
    `grad_accum_steps` micro-batches; the activations are those of one micro-batch.
    `state.frozen` (if any) counts as frozen weights, and `merged` (a boxed abstract tree: the
    kernels a LoRA step recomputes from the base) as merged weights.
    """
    data_size = parallel.data_parallel_size(mesh, rules)
    if global_batch % (data_size * grad_accum_steps):
        raise ValueError(
            f"global batch {global_batch} does not split into {grad_accum_steps} micro-batches "
            f"over {data_size} data-parallel devices"
        )
    micro = global_batch // (data_size * grad_accum_steps)
    params_bytes = bytes_per_device(state.params, mesh, rules)
    gradient_copies = 1 if grad_accum_steps == 1 else 2
    return TrainMemoryEstimate(
        mesh_shape=dict(mesh.shape),
        global_batch=global_batch,
        micro_batch_per_device=micro,
        grad_accum_steps=grad_accum_steps,
        remat_policy=remat_policy,
        params=params_bytes,
        optimizer=bytes_per_device(state.opt_state, mesh, rules),
        ema=bytes_per_device(state.ema_params, mesh, rules),
        gradients=gradient_copies * bytes_per_device(state.params[model], mesh, rules),
        activations=activation_bytes(loss_fn, nn.meta.unbox(state.params[model]), make_inputs, micro),
        frozen=bytes_per_device(getattr(state, "frozen", {}), mesh, rules),
        merged=bytes_per_device(merged, mesh, rules) if merged is not None else 0,
    )
