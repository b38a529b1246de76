"""Device mesh, logical sharding rules, sharded state creation, host -> global arrays.

One mesh with the axes `('data', 'fsdp', 'tensor')` serves every strategy: size-1 axes
cost nothing. Parameters carry logical axis names (`nn.with_logical_partitioning`); a
rules table maps those names to mesh axes. A logical dimension whose size is not
divisible by its mesh axes is replicated instead (e.g. the 2 output channels of the
decoder's last conv on a 4-way `fsdp` axis), so any config runs on any mesh.

Multi-host: `maybe_initialize_distributed` runs `jax.distributed.initialize` when more
than one process is requested or detected (TPU pod, SLURM, Open MPI, Kubernetes);
`process_batch` says which rows of every global batch a process loads, and
`host_to_global` assembles the processes' rows into one global array.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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


def create_mesh(
    shape: Sequence[int], axis_names: Sequence[str] = MESH_AXES, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A mesh of `devices` (default: all) with Auto axis types; one entry may be -1.

    Auto axes are required for linen's logical-rule sharding (explicit axes reject the
    FSDP matmuls that the rules produce).
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
        raise ValueError(
            f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, but {len(devices)} are available"
        )
    return jax.make_mesh(tuple(shape), tuple(axis_names), devices=devices, axis_types=(AxisType.Auto,) * len(shape))


def with_rules(fn: Callable[..., Any], rules: Rules) -> Callable[..., Any]:
    """`fn` traced under the logical axis rules (so activation constraints resolve)."""

    def wrapped(*args):
        with nn.logical_axis_rules(rules):
            return fn(*args)

    return wrapped


def rules_from_config(mesh_config: Any) -> Rules:
    """The logical rules of a config's `mesh` section (a ConfigDict or a dict; default rules
    when it names none), as tuples."""
    return tuple(tuple(rule) for rule in (mesh_config.get("rules") or DEFAULT_RULES))


def mesh_from_config(
    mesh_config: Any, *, shape: Sequence[int] | None = None, devices: Sequence[jax.Device] | None = None
) -> tuple[Mesh, Rules]:
    """`(mesh, rules)` of a config's `mesh` section: its `shape` (or `shape` given here, e.g.
    a launch script's --mesh) and `axis_names` over `devices` (default: all), and its rules.
    The one place training, benchmarks and inference build their mesh from a config."""
    names = tuple(mesh_config.get("axis_names") or MESH_AXES)
    return create_mesh(tuple(shape or mesh_config["shape"]), names, devices=devices), rules_from_config(mesh_config)


def _mesh_axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        return mesh.shape[axes]
    return math.prod(mesh.shape[a] for a in axes)


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drop the mesh axes of every dimension that they do not divide evenly."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    fitted = [axes if dim % _mesh_axis_size(mesh, axes) == 0 else None for axes, dim in zip(entries, shape)]
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


def with_shardings(abstract: Any, mesh: Mesh, rules: Rules):
    """`(unboxed tree of ShapeDtypeStructs carrying shardings, shardings)` for a tree of
    (possibly logically boxed) abstract arrays: the target of a sharded restore."""
    shardings = logical_to_shardings(abstract, mesh, rules)
    structs = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.meta.unbox(abstract), shardings
    )
    return structs, shardings


def abstract_params(module: nn.Module, *example_inputs: Any, **keyword_inputs: Any) -> Any:
    """The (logically boxed) parameter shapes of `module`, traced on `example_inputs`
    (arrays or `jax.ShapeDtypeStruct`s, `None` for absent optional inputs) and
    `keyword_inputs` (passed as they are, not traced), allocating nothing."""
    init = functools.partial(module.init, **keyword_inputs)
    return jax.eval_shape(init, jax.random.key(0), *example_inputs)["params"]


def count_params(tree: Any) -> int:
    """Number of scalars in a tree of arrays or `ShapeDtypeStruct`s (logical boxes included)."""
    return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


def abstract_with_shardings(init_fn: Callable[..., Any], *args, mesh: Mesh, rules: Rules):
    """`(abstract unboxed tree carrying shardings, shardings)` for `init_fn(*args)`, allocating nothing."""
    with nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(init_fn, *args)
    return with_shardings(abstract, mesh, rules)


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
    """Assemble each process's `[process_batch(...).size, ...]` arrays into global
    `[global_batch, ...]` arrays (processes with the same share pass the same rows)."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v), rules), np.asarray(v))
        for k, v in batch.items()
    }


def data_parallel_size(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """How many ways the `batch` logical axis is split on `mesh`: global batches must be a
    multiple of it."""
    return _mesh_axis_size(mesh, nn.logical_to_mesh_axes(("batch",), rules)[0])


def run_batch_on_mesh(
    fn: Callable[..., Any],
    params: Any,
    arrays: Sequence[np.ndarray],
    mesh: jax.sharding.Mesh,
    rules: Rules = DEFAULT_RULES,
) -> Any:
    """`fn(params, *arrays)` on `mesh` for host arrays `[n, ...]`: the batch is padded to a
    multiple of the batch axes' size (repeating the last row), split over them, and every
    output leaf is cut back to its first `n` rows. Shared by the frozen encoders."""
    n = len(arrays[0])
    multiple = data_parallel_size(mesh, rules)
    padded = -(-max(n, 1) // multiple) * multiple
    arrays = [np.concatenate([a, np.repeat(a[-1:], padded - n, axis=0)]) if padded > n else a for a in arrays]
    with jax.set_mesh(mesh):
        inputs = [jax.device_put(a, batch_sharding(mesh, a.ndim, rules)) for a in arrays]
        out = fn(params, *inputs)
    return jax.tree.map(lambda x: x[:n], out)


class ProcessBatch(NamedTuple):
    """This process's share of every global batch: `size` rows, share `index` of `count`.

    Processes whose devices hold the same rows of the batch (the batch axes do not span
    them, e.g. tensor parallelism across hosts) have the same share and must load the same
    examples; the others load disjoint ones.
    """

    size: int
    index: int
    count: int


def process_batch(global_batch_size: int, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> ProcessBatch:
    """Which rows of a `[global_batch_size, ...]` batch this process's devices hold (see
    `ProcessBatch`); `host_to_global` turns its `[size, ...]` arrays into the global batch."""
    data_parallel = data_parallel_size(mesh, rules)
    if global_batch_size % data_parallel:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the "
            f"{data_parallel} data-parallel devices of mesh {dict(mesh.shape)}"
        )
    rows: dict[int, set[int]] = {}
    for device, (index, *_) in batch_sharding(mesh, 1, rules).devices_indices_map((global_batch_size,)).items():
        rows.setdefault(device.process_index, set()).update(range(global_batch_size)[index])
    shares = sorted({frozenset(r) for r in rows.values()}, key=min)
    if sum(map(len, shares)) != global_batch_size or len(set(map(len, shares))) > 1:
        # Shares must be equal or disjoint, and of one size: each process loads whole shares.
        raise ValueError(f"the processes of mesh {dict(mesh.shape)} hold overlapping or unequal parts of the batch")
    if jax.process_index() not in rows:
        raise ValueError(f"process {jax.process_index()} has no device in the mesh {dict(mesh.shape)}")
    mine = frozenset(rows[jax.process_index()])
    return ProcessBatch(size=len(mine), index=shares.index(mine), count=len(shares))


def detect_cluster() -> tuple[str, int] | None:
    """`(name, process count)` of the cluster `jax.distributed.initialize()` would detect by
    itself (Cloud TPU VM or GKE, SLURM, Open MPI, Kubernetes), or None on a plain machine.

    Asks JAX's own detectors, so this agrees with what `initialize()` will do; they live in a
    private module, so plain environment checks stand in if it ever moves.
    """
    try:
        from jax._src.clusters import ClusterEnv

        detectors = [env for env in ClusterEnv._cluster_types if not env.opt_in_only_method]
    except (ImportError, AttributeError):
        detectors = None
    if detectors is None:
        for name, var in (("SlurmCluster", "SLURM_NTASKS"), ("OmpiCluster", "OMPI_COMM_WORLD_SIZE")):
            if var in os.environ:
                return name, int(os.environ[var])
        if "TPU_WORKER_HOSTNAMES" in os.environ:
            return "GkeTpuCluster", len(os.environ["TPU_WORKER_HOSTNAMES"].split(","))
        return None
    for env in detectors:
        if env.is_env_present():
            return env.__name__, int(env.get_process_count())
    return None


def maybe_initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Initialise multi-process JAX when asked for explicitly or when the cluster says so.

    Must run before anything touches a JAX device. Explicit arguments win (JAX detects any
    left as None) and `num_processes=1` forces one process. Without arguments, JAX's
    auto-detection runs only when a TPU pod, SLURM / Open MPI job or Kubernetes job with more
    than one process is detected: a one-task SLURM job stays a plain process that sees every
    local device (JAX's SLURM setup would give it only `SLURM_LOCALID`'s). A plain machine does
    nothing. Returns whether `jax.distributed` was initialised.
    """
    explicit = coordinator_address is not None or process_id is not None or num_processes is not None
    if explicit and num_processes == 1:
        return False
    if not explicit:
        cluster = detect_cluster()
        if cluster is None or cluster[1] <= 1:
            return False
        logging.info("jax.distributed: %s with %d processes detected", *cluster)
    # Multi-process computations on the CPU backend need cross-process collectives; gloo is
    # JAX's default now, but older releases defaulted to none.
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
