"""Measuring one jitted executable, and the setup every benchmark row shares.

`measure` lowers, compiles and times a jitted function (`--warmup` untimed calls, then
`--steps` timed ones, each ended by `jax.block_until_ready`) into a `Measurement`; the other
helpers build the mesh, the batch-sharded inputs and the sharded initial state the rows
run on, and describe the hardware. JAX is imported inside the functions, so importing this
module starts no backend.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options


@dataclasses.dataclass
class Measurement:
    """One measured executable; everything derived is computed from these fields."""

    name: str
    description: str
    batch_size: int
    audio_seconds_per_item: float  # seconds of audio each batch item covers
    input_shapes: dict[str, list[int]]
    lower_seconds: float | None  # None: not a compiled program (the PyTorch reference rows)
    compile_seconds: float | None
    step_seconds: list[float]  # one wall time per timed call
    flops_per_device: float | None  # XLA cost analysis of the compiled (partitioned) program
    peak_bytes_in_use: int | None  # process-wide device high-water mark after this measurement
    compiled_memory: dict[str, int] | None  # compiled.memory_analysis(), per device

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def items_per_second(self) -> float:
        return self.batch_size / self.median_seconds

    @property
    def audio_seconds_per_second(self) -> float:
        return self.batch_size * self.audio_seconds_per_item / self.median_seconds

    @property
    def compiled_bytes_per_device(self) -> int | None:
        """XLA's footprint estimate of the executable: arguments + outputs - aliased + temporaries."""
        m = self.compiled_memory
        if not m or "temp_size_in_bytes" not in m:
            return None
        return (
            m.get("argument_size_in_bytes", 0)
            + m.get("output_size_in_bytes", 0)
            - m.get("alias_size_in_bytes", 0)
            + m["temp_size_in_bytes"]
        )

    @property
    def tflops_per_second_per_device(self) -> float | None:
        if self.flops_per_device is None:
            return None
        return self.flops_per_device / self.median_seconds / 1e12

    def to_json(self, peak_tflops_per_device: float | None = None) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        tflops = self.tflops_per_second_per_device
        d.update(
            median_seconds=self.median_seconds,
            min_seconds=min(self.step_seconds),
            mean_seconds=statistics.fmean(self.step_seconds),
            items_per_second=self.items_per_second,
            audio_seconds_per_second=self.audio_seconds_per_second,
            tflops_per_second_per_device=tflops,
            compiled_bytes_per_device=self.compiled_bytes_per_device,
            mfu=(tflops / peak_tflops_per_device) if tflops is not None and peak_tflops_per_device else None,
        )
        return d


def xla_flops(compiled: Any) -> float | None:
    """The `flops` entry of `compiled.cost_analysis()` (a dict, or a list of one dict on some versions)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    flops = float(analysis["flops"])
    return flops if flops >= 0 else None


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    """XLA's per-device memory estimate of an executable (argument, output, temp, alias bytes)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:
        return None
    if stats is None:
        return None
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    return {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def peak_memory_bytes(devices: Sequence[Any]) -> int | None:
    """Largest `peak_bytes_in_use` over the addressable `devices`; None without memory statistics."""
    import jax

    peaks = []
    for device in devices:
        if device.process_index != jax.process_index():
            continue
        try:
            stats = device.memory_stats()
        except Exception:
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


_SLOW_CALL_SECONDS = 10.0


def measure(
    name: str,
    description: str,
    jitted: Callable,
    args: tuple,
    *,
    options: Options,
    mesh: Any,
    batch_size: int,
    audio_seconds_per_item: float,
    input_shapes: dict[str, list[int]],
    advance: Callable[[tuple, Any], tuple] | None = None,
    count_flops: bool = True,
) -> tuple[Measurement, tuple]:
    """Lower, compile and time `jitted(*args)`.

    `count_flops=False` leaves the FLOPs (and so MFU) out: XLA's cost analysis counts a loop
    body once, so a program that is a `lax.scan` over steps (the samplers) would report one
    step's work.

    `advance(args, outputs)` gives the arguments of the next call (e.g. the new train state
    when the old one was donated); by default the same arguments are reused. Returns the
    measurement and the arguments after the last call.
    """
    import jax

    advance = advance or (lambda a, _: a)
    print(f"  {name}: lowering and compiling", flush=True)
    with jax.set_mesh(mesh):
        t0 = time.perf_counter()
        lowered = jitted.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        step_seconds = []
        for i in range(options.warmup + options.steps):
            start = time.perf_counter()
            outputs = compiled(*args)
            jax.block_until_ready(outputs)
            elapsed = time.perf_counter() - start
            if i >= options.warmup:
                step_seconds.append(elapsed)
            if elapsed > _SLOW_CALL_SECONDS:  # show progress on slow backends
                kind = "warm-up" if i < options.warmup else "timed"
                print(f"    {name}: {kind} call {i + 1}/{options.warmup + options.steps}: {elapsed:.2f} s", flush=True)
            args = advance(args, outputs)
    del outputs
    result = Measurement(
        name=name,
        description=description,
        batch_size=batch_size,
        audio_seconds_per_item=audio_seconds_per_item,
        input_shapes=input_shapes,
        lower_seconds=t1 - t0,
        compile_seconds=t2 - t1,
        step_seconds=step_seconds,
        flops_per_device=xla_flops(compiled) if count_flops else None,
        peak_bytes_in_use=peak_memory_bytes(mesh.devices.flat),
        compiled_memory=compiled_memory(compiled),
    )
    print(
        f"  measured {name}: compile {result.compile_seconds:.2f} s, median {result.median_seconds:.4f} s", flush=True
    )
    return result, args


def make_mesh(config: Any, num_devices: int = 0):
    """The config's mesh over the first `num_devices` devices (0: all of them, `--num_devices`)."""
    import jax

    from stable_audio_jax import parallel

    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise BenchmarkUsageError(f"--num_devices={num_devices} but only {len(devices)} devices exist")
        devices = devices[:num_devices]
    return parallel.mesh_from_config(config.mesh, devices=devices)[0]


def mesh_rules(config: Any) -> tuple:
    """The config's logical sharding rules."""
    from stable_audio_jax import parallel

    return parallel.rules_from_config(config.mesh)


def global_array(host: Any, mesh: Any, rules: tuple):
    """A `[batch, ...]` host array (identical on every process) as a batch-sharded global array."""
    import jax

    from stable_audio_jax import parallel

    sharding = parallel.batch_sharding(mesh, host.ndim, rules)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shapes_of(**arrays: Any) -> dict[str, list[int]]:
    """`name -> shape` of the arrays, as a measurement's `input_shapes`."""
    return {k: list(v.shape) for k, v in arrays.items()}


def init_for_benchmark(task: Any, model: str, seed: int, skip_train: bool, mesh: Any, rules: tuple):
    """`(state, state_shardings, params, param_shardings, seconds)` created sharded on `mesh`.

    With `skip_train` only the parameters of `model` are created (state and its shardings are
    None): no optimizer state or EMA copy in memory, which decides whether a paper-size
    model's inference fits on the device.
    """
    import jax

    from stable_audio_jax import parallel

    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    if skip_train:
        init = lambda rng: task.init_state(rng).params[model]  # noqa: E731
        params, param_shardings = parallel.init_sharded(init, key, mesh=mesh, rules=rules)
        state = state_shardings = None
    else:
        state, state_shardings = parallel.init_sharded(task.init_state, key, mesh=mesh, rules=rules)
        params, param_shardings = state.params[model], state_shardings.params[model]
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    print(
        f"  initialised {model + ' parameters' if skip_train else 'the train state'} in {seconds:.2f} s "
        "(jit compile + run)",
        flush=True,
    )
    return state, state_shardings, params, param_shardings, seconds


def measure_train_phase(
    name: str,
    description: str,
    step_fn: Callable,
    state: Any,
    state_shardings: Any,
    batch: dict[str, Any],
    *,
    options: Options,
    mesh: Any,
    rules: tuple,
    audio_seconds_per_item: float,
) -> tuple[Measurement, Any]:
    """A `(state, batch) -> (state, metrics)` step jitted as the trainer does (state shardings,
    batch over the data axes, old state donated); returns (measurement, state after it)."""
    from stable_audio_jax.training.trainer import jit_train_step

    jitted = jit_train_step(step_fn, mesh=mesh, rules=rules, state_shardings=state_shardings, example_batch=batch)
    batch_size = next(iter(batch.values())).shape[0]
    result, (state, _) = measure(
        name,
        description,
        jitted,
        (state, batch),
        options=options,
        mesh=mesh,
        batch_size=batch_size,
        audio_seconds_per_item=audio_seconds_per_item,
        input_shapes=shapes_of(**batch),
        advance=lambda args, out: (out[0], args[1]),
    )
    return result, state


def measure_inference(
    name: str,
    description: str,
    fn: Callable,
    params: Any,
    param_shardings: Any,
    inputs: Sequence[Any],
    *,
    options: Options,
    mesh: Any,
    rules: tuple,
    audio_seconds_per_item: float,
    batch_size: int | None = None,
    input_shapes: dict[str, list[int]] | None = None,
) -> Measurement:
    """One jitted `fn(params, *inputs)`, each input a `[batch, ...]` global array split over the
    data axes. `batch_size` (default: the inputs' leading dimension) is the item count behind
    clips/s and audio s/s; `input_shapes` defaults to `input_<i>` entries."""
    import jax

    from stable_audio_jax import parallel
    from stable_audio_jax.parallel import with_rules

    in_shardings = (param_shardings,) + tuple(parallel.batch_sharding(mesh, x.ndim, rules) for x in inputs)
    jitted = jax.jit(with_rules(fn, rules), in_shardings=in_shardings)
    result, _ = measure(
        name,
        description,
        jitted,
        (params, *inputs),
        options=options,
        mesh=mesh,
        batch_size=inputs[0].shape[0] if batch_size is None else batch_size,
        audio_seconds_per_item=audio_seconds_per_item,
        input_shapes=input_shapes or {f"input_{i}": list(x.shape) for i, x in enumerate(inputs)},
    )
    return result


def hardware_info(mesh: Any | None = None) -> dict[str, Any]:
    """The report's `hardware` section: backend, devices, library versions, host and (with `mesh`) the mesh."""
    import flax
    import jax
    import jaxlib

    devices = jax.devices()
    info = {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "flax_version": flax.__version__,
        "python_version": platform.python_version(),
        "host": platform.node(),
        "host_cpu_count": os.cpu_count(),
        "platform_version": getattr(devices[0].client, "platform_version", None),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir or None,
    }
    if mesh is not None:
        info["mesh"] = {str(k): int(v) for k, v in mesh.shape.items()}
        info["mesh_device_count"] = int(mesh.devices.size)
    memory = None
    try:
        memory = devices[0].memory_stats()
    except Exception:
        pass
    info["bytes_limit"] = int(memory["bytes_limit"]) if memory and "bytes_limit" in memory else None
    return info


def load_average() -> list[float] | None:
    """The host's 1/5/15-minute load averages: other processes on the host skew timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
