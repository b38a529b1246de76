"""Device mesh, logical sharding rules, sharded state creation, host -> global arrays.

One mesh with the axes `('data', 'fsdp', 'tensor')` serves every strategy: size-1 axes
cost nothing. Parameters carry logical axis names (`nn.with_logical_partitioning`); a
rules table maps those names to mesh axes. A logical dimension whose size is not
divisible by its mesh axes is replicated instead (e.g. the 2 output channels of the
decoder's last conv on a 4-way `fsdp` axis), so any config runs on any mesh.

Multi-host: `maybe_initialize_distributed` runs `jax.distributed.initialize` when more
than one process is requested, and `host_to_global` assembles each process's slice of
the batch into one global array.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axes. Batch is split over every data-parallel axis; weights
# are split over `fsdp` on their output dimension (FSDP/ZeRO-3 style) and over `tensor`
# for attention heads and MLP hidden units; everything else is replicated.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("channels", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
)

Rules = Sequence[tuple[str, Any]]


def create_mesh(shape: Sequence[int], axis_names: Sequence[str] = MESH_AXES,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh of `devices` (default: all) with Auto axis types; one entry may be -1.

    Auto axes are required for linen's logical-rule sharding (explicit axes reject the
    FSDP matmuls, see JAX_NOTES pitfall 1).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh shape {shape} and axis names {axis_names} differ in length")
    if shape.count(-1) > 1:
        raise ValueError(f"at most one mesh dimension may be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot fill mesh shape {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, "
                         f"but {len(devices)} are available")
    return jax.make_mesh(tuple(shape), tuple(axis_names), devices=devices,
                         axis_types=(AxisType.Auto,) * len(shape))


def _mesh_axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        return mesh.shape[axes]
    return math.prod(mesh.shape[a] for a in axes)


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drop the mesh axes of every dimension that they do not divide evenly."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    fitted = [axes if dim % _mesh_axis_size(mesh, axes) == 0 else None
              for axes, dim in zip(entries, shape)]
    return P(*fitted)


def logical_to_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree of (possibly logically boxed) abstract arrays.

    Leaves without logical names (unboxed arrays, step counters, optimizer counts) are
    replicated. The result has the structure of `nn.meta.unbox(abstract_tree)`.
    """
    logical_specs = nn.get_partition_spec(abstract_tree)
    unboxed = nn.meta.unbox(abstract_tree)

    def one(spec: P | None, leaf: Any) -> NamedSharding:
        shape = getattr(leaf, "shape", ())
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec or ()), rules) if spec else P()
        return NamedSharding(mesh, fit_spec(mesh_spec, shape, mesh))

    return jax.tree.map(one, logical_specs, unboxed, is_leaf=lambda x: isinstance(x, P) or x is None)


def abstract_with_shardings(init_fn: Callable[..., Any], *args, mesh: Mesh, rules: Rules):
    """`(abstract unboxed tree carrying shardings, shardings)` for `init_fn(*args)`, allocating nothing."""
    with nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(init_fn, *args)
    shardings = logical_to_shardings(abstract, mesh, rules)
    structs = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                           nn.meta.unbox(abstract), shardings)
    return structs, shardings


def init_sharded(init_fn: Callable[..., Any], *args, mesh: Mesh, rules: Rules):
    """Run `init_fn(*args)` under jit so each device materialises only its own shard.

    Returns `(state, shardings)` with the logical boxes removed.
    """
    _, shardings = abstract_with_shardings(init_fn, *args, mesh=mesh, rules=rules)

    def unboxed_init(*a):
        with nn.logical_axis_rules(rules):
            return nn.meta.unbox(init_fn(*a))

    with jax.set_mesh(mesh):
        state = jax.jit(unboxed_init, out_shardings=shardings)(*args)
    return state, shardings


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Sharding of a `[batch, ...]` array: batch over the data axes, the rest replicated."""
    batch_axes = nn.logical_to_mesh_axes(("batch",), rules)[0]
    return NamedSharding(mesh, P(batch_axes, *([None] * (ndim - 1))))


def host_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict:
    """Assemble each process's `[local_batch, ...]` arrays into global `[global_batch, ...]` arrays."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v), rules), np.asarray(v))
            for k, v in batch.items()}


def data_parallel_size(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """How many ways the `batch` logical axis is split on `mesh`: global batches must be a
    multiple of it."""
    return _mesh_axis_size(mesh, nn.logical_to_mesh_axes(("batch",), rules)[0])


def per_process_batch_size(global_batch_size: int, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """The share of the global batch that this process loads."""
    n = jax.process_count()
    data_parallel = data_parallel_size(mesh, rules)
    if global_batch_size % data_parallel:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                         f"{data_parallel} data-parallel devices of mesh {dict(mesh.shape)}")
    if global_batch_size % n:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by {n} processes")
    return global_batch_size // n


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """Initialise multi-process JAX when asked for explicitly or when the cluster says so.

    Explicit arguments win; otherwise JAX's own auto-detection is used when a TPU pod
    or SLURM/Open MPI job with several tasks is detected. A single process does nothing.
    """
    if coordinator_address or (num_processes and num_processes > 1):
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ \
            or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        jax.distributed.initialize()
    else:
        return
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
