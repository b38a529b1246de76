"""One benchmark run: the rows of `config.task` measured on the mesh, returned as the report.

`run_benchmark` checks everything that can fail before a measurement (options, the task,
the reference's config, the batch split), then runs the task's rows (`BENCHMARKS`), then
the PyTorch reference if asked, so the two never share the CPUs.
"""

from __future__ import annotations

from typing import Any, Callable

from stable_audio_jax.benchmark.clap_rows import benchmark_clap, clap_param_counts
from stable_audio_jax.benchmark.diffusion_rows import benchmark_diffusion, diffusion_param_counts
from stable_audio_jax.benchmark.embedder_rows import benchmark_embedders, embedder_param_counts
from stable_audio_jax.benchmark.harness import Measurement, hardware_info, load_average, make_mesh, mesh_rules
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options
from stable_audio_jax.benchmark.reference import reference_dit_arguments, reference_forward
from stable_audio_jax.benchmark.report import build_report
from stable_audio_jax.benchmark.vae_rows import benchmark_vae, vae_param_counts

# config.task -> parameter counter and benchmark.
PARAM_COUNTERS: dict[str, Callable[[Any], dict[str, int]]] = {
    "vae": vae_param_counts,
    "clap": clap_param_counts,
    "diffusion": diffusion_param_counts,
    "embedders": embedder_param_counts,
}
BENCHMARKS: dict[str, Callable[[Any, Options, Any], tuple[dict[str, Any], list[Measurement]]]] = {
    "vae": benchmark_vae,
    "clap": benchmark_clap,
    "diffusion": benchmark_diffusion,
    "embedders": benchmark_embedders,
}


def _lookup(registry: dict, task: str):
    if task not in registry:
        raise BenchmarkUsageError(f"no benchmark for config.task={task!r}; known: {sorted(registry)}")
    return registry[task]


def param_counts(config: Any) -> dict[str, int]:
    """The task's parameter counts from `jax.eval_shape` (nothing is allocated)."""
    return _lookup(PARAM_COUNTERS, config.task)(config)


def config_summary(config: Any, name: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The report's `config` section: file `name`, task, dtypes, seed and command-line `overrides`."""
    return {
        "name": name,
        "task": config.task,
        "dtype": config.get("dtype", "float32"),
        "param_dtype": config.get("param_dtype", "float32"),
        "seed": config.seed,
        "overrides": overrides,
    }


def run_benchmark(
    config: Any, options: Options, *, config_name: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Measure `config` under `options`; returns the JSON-ready report (`report.build_report`),
    whose `config` section names the config file `config_name` and its `overrides`."""
    options.validate()
    from stable_audio_jax.models import attention

    try:  # the training configs' kernel choice, as the trainer applies it
        attention.set_attention_implementation(config.get("attention_impl", "auto"))
    except ValueError as error:
        raise BenchmarkUsageError(f"config.{error}") from None
    benchmark = _lookup(BENCHMARKS, config.task)
    if options.forward_seconds and config.task != "diffusion":
        raise BenchmarkUsageError(f"--forward_seconds measures the diffusion model; config.task={config.task!r}")
    if options.reference_python:
        reference_dit_arguments(config)  # a U-Net config fails here, before anything is measured
    mesh = make_mesh(config, options.num_devices)
    rules = mesh_rules(config)
    from stable_audio_jax import parallel

    dp = parallel.data_parallel_size(mesh, rules)
    if options.batch_size % dp:
        raise BenchmarkUsageError(
            f"--batch_size={options.batch_size} is not divisible by the {dp} data-parallel "
            f"devices of mesh {dict(mesh.shape)}; use a multiple of {dp}, --num_devices or "
            f"--config.mesh.shape"
        )
    counts = param_counts(config)
    load_before = load_average()
    info, measurements = benchmark(config, options, mesh)
    load_after = load_average()
    hardware = dict(
        hardware_info(mesh),
        host_load_average_before=load_before,
        host_load_average_after=load_after,
        attention_impl=attention.attention_implementation_in_use(),
    )
    if options.reference_python:  # after ours (whose arrays are freed by now): the two never share the CPUs
        hardware["reference"], reference_rows = reference_forward(config, options)
        measurements = list(measurements) + reference_rows
    return build_report(
        hardware, config_summary(config, config_name, overrides or {}), options, info, counts, measurements
    )
