"""Benchmark a config on the current backend: compile time, step time, throughput, FLOPs, memory.

    python launch/benchmark.py --config=configs/vae_sao.py --params_only
    python launch/benchmark.py --config=configs/vae_sao.py --batch_size=1 --seconds=1.5 \
        --steps=5 --output_json=/tmp/bench_sao.json
    python launch/benchmark.py --config=configs/dit_sao.py --config.dtype=float32 --skip_train \
        --sample_steps=0 --forward_seconds=10,47 --reference_python=/work/refvenv/bin/python
    python launch/benchmark.py --compare /tmp/bench_gpu.json /tmp/bench_tpu.json
    python launch/benchmark.py --config=configs/diffusion_sa1.py --memory_estimate --batch_size=256 \
        --memory_mesh=8,8,1 --remat_policies=none,full,dots_with_no_batch_dims_saveable

Config overrides work as in `launch/train.py` (`--config.dtype=bfloat16`).

What is measured, for every entry of the task's benchmark (`BENCHMARKS[config.task]`):

- `lower s`: tracing and lowering to StableHLO (`jax.jit(f).lower(...)`);
- `compile s`: XLA compilation alone (`lowered.compile()`);
- `median s`: the median wall time of `--steps` calls of the compiled executable after
  `--warmup` untimed calls, each call followed by `jax.block_until_ready`;
- `clips/s` = batch / median and `audio s/s` = batch x window seconds / median (the
  real-time factor);
- `GFLOP/dev`: the `flops` entry of `compiled.cost_analysis()`, i.e. XLA's count for the
  partitioned program of one device (replicated work counted on every device);
  `TFLOP/s/dev` = that / median, and `MFU` = TFLOP/s/dev / the device's peak: `--peak_tflops`
  (alias `--peak_tflops_per_device`) when given, else the table of
  `stable_audio_jax/peak_flops.py` looked up from `jax.devices()[0].device_kind` (H100, H200,
  A100, TPU v4, v5e, v5p, v6e), else n/a (e.g. CPU). The table holds dense (no sparsity) bf16
  peaks, also for runs in another dtype: an fp32 run's MFU is against the bf16 peak. The JSON
  `peak` records the value used and its source ("table: H100 bf16 dense", "flag" or null);
- `peak mem`: the largest `peak_bytes_in_use` of `device.memory_stats()` over the local
  mesh devices, read after the measurement. It is the process-wide high-water mark since
  start-up (it includes the resident train state and every earlier measurement), and n/a
  where the backend has no memory statistics (CPU). XLA's own per-executable estimate
  (`compiled.memory_analysis()`: arguments + outputs - aliased + temporaries) is shown as
  `XLA mem/dev`.

Inputs are seeded random arrays (data loading is not measured). Nothing is fitted; the
only extrapolated figures are the diffusion `extrapolated_100_step_*` entries, labelled so.

`--compare A.json B.json` (no `--config`) measures nothing: it prints the hardware and config
of two `--output_json` reports and, for every measurement name in either, A and B side by
side (median step time, clips/s, audio s/s, TFLOP/s/dev, MFU, peak memory, compile time) with
the ratio B/A: on the step time, B/A < 1 means B is faster. A measurement missing from one
report reads n/a on that side.

VAE (`config.task == 'vae'`): the training step is measured per phase, each phase jitted
as the trainer jits it (state shardings, batch over the data axes, old state donated):
`generator` (spectral + KL + adversarial + feature-matching losses: the autoencoder step
after warm-up), `discriminator`, and on request `generator_warmup` (adversarial and
feature-matching terms off). The phase functions come from `task.train_phases()`. `encode` is audio -> latents (the latent
mean, no sampling) and `decode` latents -> audio, with the initial (random) weights. The
window is `--seconds` rounded up to a multiple of the downsampling ratio and to at least the
largest FFT of the discriminator and of the STFT loss. With both phases measured, the line
`train alternating` gives their mean: the cost per step of the trainer after warm-up.

CLAP (`config.task == 'clap'`): `text_features` (token ids -> the penultimate text hidden
states that condition the diffusion model; clips/s reads prompts/s), `encode_audio` (one
audio-tower window -> joint embedding) and `train/clap` (the contrastive step as the
trainer jits it). The window is the audio tower's (`config.data.sample_size`); token ids
are random, each prompt of random length.

Diffusion (`config.task == 'diffusion'`): `train/diffusion` (the v-objective step on
random pre-encoded-shaped inputs) and `sample/<N>_steps`: N DPM-Solver++(3M) SDE steps
with CFG (`--cfg_scale`, conditional and unconditional halves in one 2B batch) in one
jitted `lax.scan`, ending with the decoder of `--vae_config` when given. `audio s/s` of
that row is the real-time factor. Where a full 100-step run is too slow (the paper config
on a CPU), run `--sample_steps=1`: the shapes section then also reports the 100-step
latency and real-time factor extrapolated linearly from the measured per-step time,
labelled as such; `--sample_steps=0` drops the sampling row.

Diffusion forward rows (`--forward_seconds=10,47`): `forward/<s>s_cfg` is one jitted
`task.model.apply` (timing embedders and any text projection included) on the CFG batch
`2B` (`B` = `--batch_size`; the first B rows conditional, the last B the same inputs with
`use_null_context`) of seeded random latents `[2B, frames, latent_dim]`, with
`frames = ceil(s * sample_rate / pretransform.downsampling_ratio)` rounded up to the
backbone's downsampling factor (the U-Net's; the DiT takes any length). `clips/s` = B /
median and `audio s/s` = B x frames' seconds / median: seconds of guided (conditional)
audio per forward-second. The frames per row are in the shapes section (`forward_frames`).
With `--skip_train` only the model's parameters are created (no optimizer state or EMA).

Memory estimate (`--memory_estimate`, diffusion configs): measures nothing and needs no
accelerator. For a (data, fsdp, tensor) `--memory_mesh` (devices need not exist) and the global
`--batch_size`, it prints one device's share of a train step for each `--remat_policies`
entry (default: the config's): parameter, Adam-state, EMA and gradient shards under the
logical rules, plus the activations the backward pass keeps for one micro-batch (the
residuals of `jax.vjp`, traced with `jax.eval_shape`, so the remat policy and compute dtype
count exactly). XLA's temporaries come on top; see `stable_audio_jax/memory_estimate.py`.

Reference rows (`--reference_python=/path/to/python`, with `--forward_seconds`, DiT configs
only): after the measurements above, `tests/reference/time_reference_dit.py` runs under
that interpreter (torch + stable-audio-tools; `PYTHONPATH` starts with
`tests/reference/shims`) with the config's DiT shape (embed_dim, depth, num_heads,
io_channels, cond_token_dim, global_cond_dim, ff_mult; text tokens + 2 timing tokens), the
same frames, B, `--steps`, `--warmup` and `--reference_threads` torch threads (0: the CPUs
this process may run on, as XLA's CPU thread pool). It times the reference
`DiffusionTransformer` forward (float32, eval, random weights, `torch.no_grad()`,
`cfg_scale=1` on the 2B batch: conditional context and an all-zero one; the conditioners
are not part of it). Each length gives a row `reference/forward/<s>s_cfg` (median, min,
clips/s, audio s/s as above; compile, FLOPs and memory n/a), the `derived` entry
`forward/<s>s_cfg median ours/reference` (< 1: ours is faster; printed under the table), and
the hardware section gets `reference` (interpreter, torch and stable-audio-tools versions,
threads, parameter count, host load averages around its run). A failing subprocess ends
the benchmark with one line naming the interpreter and the last line of its stderr. The
reference computes in float32: pass `--config.dtype=float32` to compare like with like.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from stable_audio_jax import cli, peak_flops  # noqa: E402  (pure Python: no backend starts at import)
from stable_audio_jax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_PARAMS_ONLY = flags.DEFINE_bool("params_only", False, "Print the parameter counts (no allocation) and exit.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Global batch size (split over the data-parallel mesh axes).")
_SECONDS = flags.DEFINE_float("seconds", 1.5, "Audio window in seconds; rounded up to a valid sample count.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls per measurement (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls per measurement after compilation.")
_SKIP_TRAIN = flags.DEFINE_bool("skip_train", False, "Measure inference only (VAE: encode and decode).")
_TRAIN_PHASES = flags.DEFINE_list("train_phases", ["generator", "discriminator"],
                                  "VAE training phases to measure: generator, discriminator, generator_warmup.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 0, "Use the first N devices for the mesh (0: all).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0,
                                  "Peak TFLOP/s of one device for MFU; > 0 overrides the dense bf16 table of "
                                  "stable_audio_jax/peak_flops.py (0: the table; devices not in it get no MFU).")
flags.DEFINE_alias("peak_tflops_per_device", "peak_tflops")  # the flag's earlier name
_COMPARE = flags.DEFINE_bool("compare", False,
                             "Compare two --output_json reports given as arguments (A.json B.json); "
                             "measures nothing and needs no --config.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the results to this JSON file.")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 100, "Diffusion: sampler steps in the sampling row.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", 6.0, "Diffusion: guidance scale of the sampling row (1: no CFG).")
_VAE_CONFIG = flags.DEFINE_string("vae_config", None,
                                  "Diffusion: a configs/vae_*.py whose decoder (random weights) ends the "
                                  "sampling row; without it the row stops at the latents.")
_FORWARD_SECONDS = flags.DEFINE_list("forward_seconds", [],
                                     "Diffusion: audio lengths in seconds (e.g. 10,47); one row forward/<s>s_cfg "
                                     "each: one model forward on the CFG batch (2 x --batch_size) at that many "
                                     "latent frames.")
_REFERENCE_PYTHON = flags.DEFINE_string("reference_python", None,
                                        "Diffusion with a DiT and --forward_seconds: a Python with torch and "
                                        "stable-audio-tools (e.g. /work/refvenv/bin/python) that times the "
                                        "reference DiT's forward at the same lengths (rows reference/forward/...).")
_MEMORY_ESTIMATE = flags.DEFINE_bool(
    "memory_estimate", False, "Diffusion: print the per-device memory of a train step on --memory_mesh, estimated "
    "from shapes for each --remat_policies entry (nothing compiled or allocated), and exit.")
_MEMORY_MESH = flags.DEFINE_list("memory_mesh", ["1", "8", "1"],
                                 "--memory_estimate: the (data, fsdp, tensor) mesh shape to estimate for.")
_REMAT_POLICIES = flags.DEFINE_list("remat_policies", [],
                                    "--memory_estimate: remat policies to compare (default: the config's).")
_REFERENCE_THREADS = flags.DEFINE_integer("reference_threads", 0,
                                          "torch threads of the --reference_python run (0: the CPUs this process "
                                          "may run on, as XLA's CPU thread pool).")


# --------------------------------------------------------------------------- options
class BenchmarkUsageError(UserError, ValueError):
    """A flag or config value that makes the requested benchmark impossible (one line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """What to measure and how often (the non-config flags)."""

    batch_size: int = 1
    seconds: float = 1.5
    steps: int = 5
    warmup: int = 1
    skip_train: bool = False
    train_phases: tuple[str, ...] = ("generator", "discriminator")
    num_devices: int = 0
    peak_tflops: float = 0.0  # per device; 0: the device-kind table (peak_flops.resolve_peak)
    sample_steps: int = 100
    cfg_scale: float = 6.0
    vae_config: str | None = None
    forward_seconds: tuple[float, ...] = ()  # diffusion: one forward/<s>s_cfg row per length
    reference_python: str | None = None  # diffusion (DiT): the interpreter timing the PyTorch reference
    reference_threads: int = 0  # its torch threads; 0: the CPUs this process may run on

    def validate(self) -> None:
        if self.batch_size < 1:
            raise BenchmarkUsageError(f"--batch_size must be >= 1, got {self.batch_size}")
        if not self.seconds > 0:
            raise BenchmarkUsageError(f"--seconds must be > 0, got {self.seconds}")
        if self.steps < 1:
            raise BenchmarkUsageError(f"--steps must be >= 1, got {self.steps}")
        if self.warmup < 0:
            raise BenchmarkUsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.peak_tflops < 0:
            raise BenchmarkUsageError(f"--peak_tflops must be >= 0 (0: the device table), got {self.peak_tflops}")
        if self.sample_steps < 0:
            raise BenchmarkUsageError(f"--sample_steps must be >= 0 (0: no sampling row), got {self.sample_steps}")
        if not all(s > 0 for s in self.forward_seconds):
            raise BenchmarkUsageError(f"--forward_seconds must all be > 0, got {list(self.forward_seconds)}")
        names = [forward_row_name(s) for s in self.forward_seconds]
        if len(set(names)) != len(names):
            raise BenchmarkUsageError(f"--forward_seconds repeats a length: rows {names}")
        if self.reference_python is not None:
            if not self.forward_seconds:
                raise BenchmarkUsageError("--reference_python times the reference at --forward_seconds: give both")
            if not (os.path.isfile(self.reference_python) and os.access(self.reference_python, os.X_OK)):
                raise BenchmarkUsageError(f"--reference_python={self.reference_python} is not an executable file")
        if self.reference_threads < 0:
            raise BenchmarkUsageError(f"--reference_threads must be >= 0, got {self.reference_threads}")


# --------------------------------------------------------------------------- measurement
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
        return (m.get("argument_size_in_bytes", 0) + m.get("output_size_in_bytes", 0)
                - m.get("alias_size_in_bytes", 0) + m["temp_size_in_bytes"])

    @property
    def tflops_per_second_per_device(self) -> float | None:
        if self.flops_per_device is None:
            return None
        return self.flops_per_device / self.median_seconds / 1e12

    def to_json(self, peak_tflops_per_device: float | None = None) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        tflops = self.tflops_per_second_per_device
        d.update(median_seconds=self.median_seconds, min_seconds=min(self.step_seconds),
                 mean_seconds=statistics.fmean(self.step_seconds),
                 items_per_second=self.items_per_second,
                 audio_seconds_per_second=self.audio_seconds_per_second,
                 tflops_per_second_per_device=tflops,
                 compiled_bytes_per_device=self.compiled_bytes_per_device,
                 mfu=(tflops / peak_tflops_per_device) if tflops is not None and peak_tflops_per_device else None)
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
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes", "generated_code_size_in_bytes")
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


def measure(name: str, description: str, jitted: Callable, args: tuple, *, options: Options,
            mesh: Any, batch_size: int, audio_seconds_per_item: float,
            input_shapes: dict[str, list[int]],
            advance: Callable[[tuple, Any], tuple] | None = None) -> tuple[Measurement, tuple]:
    """Lower, compile and time `jitted(*args)`.

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
                print(f"    {name}: {kind} call {i + 1}/{options.warmup + options.steps}: {elapsed:.2f} s",
                      flush=True)
            args = advance(args, outputs)
    del outputs
    result = Measurement(
        name=name, description=description, batch_size=batch_size,
        audio_seconds_per_item=audio_seconds_per_item, input_shapes=input_shapes,
        lower_seconds=t1 - t0, compile_seconds=t2 - t1, step_seconds=step_seconds,
        flops_per_device=xla_flops(compiled), peak_bytes_in_use=peak_memory_bytes(mesh.devices.flat),
        compiled_memory=compiled_memory(compiled))
    print(f"  measured {name}: compile {result.compile_seconds:.2f} s, "
          f"median {result.median_seconds:.4f} s", flush=True)
    return result, args


# --------------------------------------------------------------------------- helpers
def count_params(tree: Any) -> int:
    import jax
    import numpy as np

    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(tree)))


def make_mesh(config: Any, num_devices: int = 0):
    import jax

    from stable_audio_jax import parallel

    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise BenchmarkUsageError(f"--num_devices={num_devices} but only {len(devices)} devices exist")
        devices = devices[:num_devices]
    return parallel.mesh_from_config(config.mesh, devices=devices)[0]


def mesh_rules(config: Any) -> tuple:
    from stable_audio_jax import parallel

    return parallel.rules_from_config(config.mesh)


def global_array(host: Any, mesh: Any, rules: tuple):
    """A `[batch, ...]` host array (identical on every process) as a batch-sharded global array."""
    import jax

    from stable_audio_jax import parallel

    sharding = parallel.batch_sharding(mesh, host.ndim, rules)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shapes_of(**arrays: Any) -> dict[str, list[int]]:
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
    print(f"  initialised {model + ' parameters' if skip_train else 'the train state'} in {seconds:.2f} s "
          "(jit compile + run)", flush=True)
    return state, state_shardings, params, param_shardings, seconds


# --------------------------------------------------------------------------- VAE
VAE_TRAIN_PHASES = ("generator", "discriminator", "generator_warmup")


def vae_window_samples(config: Any, seconds: float) -> int:
    """`seconds` of audio in samples, rounded up to a multiple of the downsampling ratio and to
    at least the largest FFT of the discriminator and of the multi-resolution STFT loss."""
    from stable_audio_jax.models.autoencoder import AutoencoderConfig

    ratio = AutoencoderConfig.from_dict(config.model.to_dict()).downsampling_ratio
    largest_fft = max(max(config.discriminator.n_ffts), max(config.loss.stft.fft_sizes))
    samples = max(math.ceil(seconds * config.data.sample_rate), largest_fft)
    return ratio * -(-samples // ratio)


def vae_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts from `jax.eval_shape` of `VAETask.init_state` (nothing is allocated)."""
    import flax.linen as nn
    import jax

    from stable_audio_jax.training.vae_task import VAETask

    abstract = nn.meta.unbox(jax.eval_shape(VAETask(config).init_state, jax.random.PRNGKey(0)))
    autoencoder = abstract.params["autoencoder"]
    return {"autoencoder": count_params(autoencoder),
            "encoder": count_params(autoencoder["encoder"]),
            "decoder": count_params(autoencoder["decoder"]),
            "discriminator": count_params(abstract.params["discriminator"])}


_VAE_PHASE_DESCRIPTIONS = {
    "generator": "autoencoder update, adversarial + feature-matching losses on (after warm-up)",
    "discriminator": "discriminator update",
    "generator_warmup": "autoencoder update, adversarial + feature-matching losses off (warm-up)",
}


def vae_phase_function(task: Any, phase: str) -> tuple[Callable, str]:
    """`(state, batch) -> (state, metrics)` for one VAE training phase, and its description."""
    if phase not in VAE_TRAIN_PHASES:
        raise BenchmarkUsageError(f"unknown VAE training phase {phase!r}; known: {VAE_TRAIN_PHASES}")
    description = f"{type(task).__name__}.train_phases()[{phase!r}]: " + _VAE_PHASE_DESCRIPTIONS[phase]
    return task.train_phases()[phase], description


def measure_train_phase(name: str, description: str, step_fn: Callable, state: Any, state_shardings: Any,
                        batch: dict[str, Any], *, options: Options, mesh: Any, rules: tuple,
                        audio_seconds_per_item: float) -> tuple[Measurement, Any]:
    """A `(state, batch) -> (state, metrics)` step jitted as the trainer does (state shardings,
    batch over the data axes, old state donated); returns (measurement, state after it)."""
    from stable_audio_jax.training.trainer import jit_train_step

    jitted = jit_train_step(step_fn, mesh=mesh, rules=rules, state_shardings=state_shardings, example_batch=batch)
    batch_size = next(iter(batch.values())).shape[0]
    result, (state, _) = measure(
        name, description, jitted, (state, batch), options=options, mesh=mesh, batch_size=batch_size,
        audio_seconds_per_item=audio_seconds_per_item, input_shapes=shapes_of(**batch),
        advance=lambda args, out: (out[0], args[1]))
    return result, state


def measure_inference(name: str, description: str, fn: Callable, params: Any, param_shardings: Any,
                      inputs: Sequence[Any], *, options: Options, mesh: Any, rules: tuple,
                      audio_seconds_per_item: float, batch_size: int | None = None,
                      input_shapes: dict[str, list[int]] | None = None) -> Measurement:
    """One jitted `fn(params, *inputs)`, each input a `[batch, ...]` global array split over the
    data axes. `batch_size` (default: the inputs' leading dimension) is the item count behind
    clips/s and audio s/s; `input_shapes` defaults to `input_<i>` entries."""
    import jax

    from stable_audio_jax import parallel
    from stable_audio_jax.parallel import with_rules

    in_shardings = (param_shardings,) + tuple(parallel.batch_sharding(mesh, x.ndim, rules) for x in inputs)
    jitted = jax.jit(with_rules(fn, rules), in_shardings=in_shardings)
    result, _ = measure(name, description, jitted, (params, *inputs), options=options, mesh=mesh,
                        batch_size=inputs[0].shape[0] if batch_size is None else batch_size,
                        audio_seconds_per_item=audio_seconds_per_item,
                        input_shapes=input_shapes or {f"input_{i}": list(x.shape) for i, x in enumerate(inputs)})
    return result


def benchmark_vae(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """Encode, decode and the requested training phases of the VAE config."""
    import numpy as np

    from stable_audio_jax.training.vae_task import VAETask

    unknown = set(options.train_phases) - set(VAE_TRAIN_PHASES)
    if unknown:
        raise BenchmarkUsageError(f"unknown --train_phases {sorted(unknown)}; known: {VAE_TRAIN_PHASES}")
    rules = mesh_rules(config)
    samples = vae_window_samples(config, options.seconds)
    with config.unlocked():
        config.data.sample_size = samples
        config.data.batch_size = options.batch_size
    task = VAETask(config)
    autoencoder = task.autoencoder
    ratio = autoencoder.config.downsampling_ratio
    sample_rate = config.data.sample_rate
    window_seconds = samples / sample_rate

    rng = np.random.default_rng(config.seed)
    host_audio = (0.1 * rng.standard_normal((options.batch_size, samples, autoencoder.config.io_channels))
                  ).astype(np.float32)
    host_latents = rng.standard_normal((options.batch_size, samples // ratio, autoencoder.config.latent_dim)
                                       ).astype(np.float32)
    audio = global_array(host_audio, mesh, rules)
    latents = global_array(host_latents, mesh, rules)

    state, state_shardings, ae_params, ae_shardings, init_seconds = init_for_benchmark(
        task, "autoencoder", config.seed, options.skip_train, mesh, rules)

    common = dict(options=options, mesh=mesh, rules=rules, audio_seconds_per_item=window_seconds)
    def encode(params, audio):  # audio [batch, T, 2] -> latents [batch, T/ratio, latent_dim] (the mean)
        return autoencoder.apply({"params": params}, audio, None, method=type(autoencoder).encode)[0]

    def decode(params, latents):  # latents [batch, N, latent_dim] -> audio [batch, N*ratio, 2]
        return autoencoder.apply({"params": params}, latents, method=type(autoencoder).decode)

    results = [
        measure_inference("encode", "audio -> latents (mean, no sampling)", encode, ae_params, ae_shardings,
                          (audio,), input_shapes={"encode_input": list(audio.shape)}, **common),
        measure_inference("decode", "latents -> audio", decode, ae_params, ae_shardings, (latents,),
                          input_shapes={"decode_input": list(latents.shape)}, **common),
    ]
    del ae_params  # the train state is donated from here on
    if not options.skip_train:
        for phase in options.train_phases:
            step_fn, description = vae_phase_function(task, phase)
            result, state = measure_train_phase(
                f"train/{phase}", description, step_fn, state, state_shardings, {"audio": audio},
                options=options, mesh=mesh, rules=rules, audio_seconds_per_item=window_seconds)
            results.append(result)

    info = {
        "window_samples": samples,
        "window_seconds": window_seconds,
        "requested_seconds": options.seconds,
        "sample_rate": sample_rate,
        "downsampling_ratio": ratio,
        "audio_shape": list(host_audio.shape),
        "latent_shape": list(host_latents.shape),
        "loss_warmup_steps": int(config.loss.warmup_steps),
        "train_phases": [] if options.skip_train else list(options.train_phases),
        "init_seconds": init_seconds,
    }
    return info, results


# --------------------------------------------------------------------------- CLAP
def clap_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts of both towers from `jax.eval_shape` (nothing is allocated)."""
    import jax

    from stable_audio_jax.training.clap_task import build_clap

    model = build_clap(config)
    abstract = jax.eval_shape(model.init, {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                              *clap_example_inputs(config, 1))
    params = abstract["params"]
    counts = {"clap": count_params(params)}
    for name in ("text_encoder", "audio_encoder", "text_projection", "audio_projection"):
        counts[name] = count_params(params[name])
    return counts


def clap_example_inputs(config: Any, batch_size: int, seed: int = 0):
    """Seeded random CLAP inputs: audio `[batch, window, 2]`, token ids and mask `[batch, max_length]`
    (each prompt a random length between 3 and max_length tokens)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    length = config.text.max_length
    audio = (0.1 * rng.standard_normal((batch_size, config.data.sample_size, 2))).astype(np.float32)
    ids = rng.integers(5, config.model.text.vocab_size, (batch_size, length)).astype(np.int32)
    mask = np.arange(length)[None, :] < rng.integers(3, length + 1, (batch_size, 1))
    return audio, ids, mask


def benchmark_clap(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """The contrastive training step, text-feature extraction (the diffusion conditioning) and
    audio embedding, at the audio tower's window (`--seconds` does not apply)."""
    from stable_audio_jax.models.clap import CLAP
    from stable_audio_jax.training.clap_task import CLAPTask

    rules = mesh_rules(config)
    with config.unlocked():
        config.data.batch_size = options.batch_size
    task = CLAPTask(config)
    window_seconds = config.data.sample_size / config.data.sample_rate
    host_audio, host_ids, host_mask = clap_example_inputs(config, options.batch_size, config.seed)
    audio, ids, mask = (global_array(x, mesh, rules) for x in (host_audio, host_ids, host_mask))

    state, state_shardings, params, param_shardings, init_seconds = init_for_benchmark(
        task, "clap", config.seed, options.skip_train, mesh, rules)

    def inference(name: str, description: str, method: Callable, inputs: tuple, seconds: float) -> Measurement:
        fn = lambda p, *x: task.model.apply({"params": p}, *x, method=method)  # noqa: E731
        return measure_inference(name, description, fn, params, param_shardings, inputs, options=options,
                                 mesh=mesh, rules=rules, audio_seconds_per_item=seconds)

    results = [
        inference("text_features", f"prompts -> text hidden state {task.model.config.feature_layer} "
                  "(the diffusion conditioning; clips/s = prompts/s)", CLAP.text_features, (ids, mask), 0.0),
        inference("encode_audio", "audio window -> unit-norm joint embedding", CLAP.encode_audio, (audio,),
                  window_seconds),
    ]
    if not options.skip_train:
        result, state = measure_train_phase(
            "train/clap", "contrastive step: both towers, symmetric InfoNCE, AdamW, EMA", task.train_step,
            state, state_shardings, {"audio": audio, "text_ids": ids, "text_mask": mask},
            options=options, mesh=mesh, rules=rules, audio_seconds_per_item=window_seconds)
        results.append(result)
    info = {"window_samples": config.data.sample_size, "window_seconds": window_seconds,
            "sample_rate": config.data.sample_rate, "text_length": config.text.max_length,
            "init_seconds": init_seconds}
    return info, results


# --------------------------------------------------------------------------- diffusion
def diffusion_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts of the conditioned backbone (U-Net or DiT) from `jax.eval_shape` (nothing
    is allocated)."""
    import jax

    from stable_audio_jax.training.diffusion_task import DiffusionTask

    task = DiffusionTask(config)
    params = jax.eval_shape(task.model.init, jax.random.PRNGKey(0), *task.example_inputs())["params"]
    backbone = task.model.config.backbone
    return {"diffusion": count_params(params), backbone: count_params(params[backbone]),
            "timing": count_params(params["timing"])}


@dataclasses.dataclass(frozen=True)
class ForwardLength:
    """One `forward/<s>s_cfg` row: the requested seconds and the latent frames that cover them."""

    seconds: float  # as requested (--forward_seconds)
    frames: int  # latent frames of the row
    window_seconds: float  # the audio those frames decode to (>= seconds: rounded up)

    @property
    def name(self) -> str:
        return forward_row_name(self.seconds)


def forward_row_name(seconds: float) -> str:
    return f"forward/{seconds:g}s_cfg"


def forward_latent_frames(seconds: float, sample_rate: int, downsampling_ratio: int, backbone_factor: int) -> int:
    """Latent frames covering `seconds` of audio: `ceil(seconds * sample_rate / ratio)`, rounded
    up to a multiple of the backbone's downsampling factor (the U-Net's; 1 for the DiT)."""
    frames = math.ceil(seconds * sample_rate / downsampling_ratio)
    return backbone_factor * -(-frames // backbone_factor)


def forward_lengths(config: Any, options: Options) -> list[ForwardLength]:
    """The `--forward_seconds` rows of a diffusion config, in the order given."""
    from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig

    factor = LatentDiffusionConfig.from_dict(config.model.to_dict()).downsampling_factor
    sample_rate, ratio = int(config.data.sample_rate), int(config.pretransform.downsampling_ratio)
    lengths = []
    for seconds in options.forward_seconds:
        frames = forward_latent_frames(seconds, sample_rate, ratio, factor)
        lengths.append(ForwardLength(seconds, frames, frames * ratio / sample_rate))
    return lengths


def measure_forward(task: Any, params: Any, param_shardings: Any, length: ForwardLength, *, options: Options,
                    mesh: Any, rules: tuple, seed: int) -> Measurement:
    """One jitted `task.model.apply` (timing and text conditioning included) on the CFG batch:
    x `[2B, frames, latent_dim]`, the first B rows conditional, the last B the same inputs
    with `use_null_context`. clips/s and audio s/s count the B conditional items (a guided
    denoiser evaluation of B clips per forward)."""
    import numpy as np

    b = options.batch_size
    model = task.model.config
    _, _, text, text_mask, start, _ = (np.asarray(a) for a in task.example_inputs(b))
    rng = np.random.default_rng(seed)
    cfg = lambda a: np.concatenate([a, a])  # noqa: E731  (CFG: both halves see the same inputs)
    inputs = (
        cfg(rng.standard_normal((b, length.frames, model.latent_dim)).astype(np.float32)),  # x
        cfg(rng.uniform(0.0, 1.0, (b,)).astype(np.float32)),  # t
        cfg(rng.standard_normal(text.shape).astype(np.float32)), cfg(text_mask), cfg(start),  # text, start
        np.full((2 * b,), round(length.window_seconds), np.int32),  # seconds_total
        np.repeat(np.array([False, True]), b),  # use_null_context: the unconditional half
    )
    names = ("x", "t", "text_features", "text_mask", "seconds_start", "seconds_total", "use_null_context")
    fn = lambda p, *a: task.model.apply({"params": p}, *a)  # noqa: E731
    return measure_inference(
        length.name, f"one {model.backbone} forward (timing + text conditioning included) on the CFG batch "
        f"2B={2 * b} (conditional half, unconditional half with use_null_context) at {length.frames} latent "
        f"frames = {length.window_seconds:.2f} s; clips/s and audio s/s count the B={b} conditional items",
        fn, params, param_shardings, tuple(global_array(a, mesh, rules) for a in inputs), options=options,
        mesh=mesh, rules=rules, batch_size=b, audio_seconds_per_item=length.window_seconds,
        input_shapes={n: list(a.shape) for n, a in zip(names, inputs)})


def benchmark_diffusion(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """Guided sampling (`--sample_steps` DPM-Solver++(3M) SDE steps, CFG as one 2B batch, then the
    `--vae_config` decoder if given) at the config's window, one CFG-batch forward per
    `--forward_seconds` length, and the v-objective train step."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stable_audio_jax import parallel
    from stable_audio_jax.diffusion import guidance, samplers, schedule
    from stable_audio_jax.parallel import with_rules
    from stable_audio_jax.training.diffusion_task import DiffusionTask

    rules = mesh_rules(config)
    with config.unlocked():
        config.data.batch_size = options.batch_size
    task = DiffusionTask(config)
    lengths = forward_lengths(config, options)
    window_seconds = config.data.sample_size / config.data.sample_rate
    b = options.batch_size
    x, _, text, text_mask, start, total = (np.asarray(a) for a in task.example_inputs(b))
    rng = np.random.default_rng(config.seed)
    host = {"latent_mean": rng.standard_normal(x.shape).astype(np.float32),
            "latent_std": np.full(x.shape, 0.1, np.float32), "latent_mask": np.ones(x.shape[:2], bool),
            "text_features": rng.standard_normal(text.shape).astype(np.float32), "text_mask": text_mask,
            "seconds_start": start, "seconds_total": np.full_like(total, int(window_seconds))}
    batch = {k: global_array(v, mesh, rules) for k, v in host.items()}

    state, state_shardings, params, param_shardings, init_seconds = init_for_benchmark(
        task, "diffusion", config.seed, options.skip_train, mesh, rules)

    results = []
    info = {"window_samples": int(config.data.sample_size), "window_seconds": window_seconds,
            "latent_shape": list(x.shape), "text_shape": list(text.shape), "sample_steps": options.sample_steps,
            "cfg_scale": options.cfg_scale, "vae_config": options.vae_config, "init_seconds": init_seconds}
    if options.sample_steps:  # 0: no sampling row (e.g. only the forward rows of a paper-size model)
        decoder = None
        if options.vae_config:
            import importlib.util
            spec = importlib.util.spec_from_file_location("vae_config", options.vae_config)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            from stable_audio_jax.training.vae_task import build_autoencoder
            autoencoder = build_autoencoder(module.get_config())
            if autoencoder.config.latent_dim != task.model.config.latent_dim:
                raise BenchmarkUsageError(
                    f"--vae_config latent_dim {autoencoder.config.latent_dim} differs from the "
                    f"{task.model.config.backbone}'s latent channels {task.model.config.latent_dim}")
            vae_params, vae_shardings = parallel.init_sharded(
                lambda r: autoencoder.init(r, jnp.zeros((1, autoencoder.config.downsampling_ratio, 2)))["params"],
                jax.random.PRNGKey(1), mesh=mesh, rules=rules)
            decoder = (autoencoder, vae_params, vae_shardings)

        sigmas = schedule.polyexponential_sigmas(options.sample_steps, 0.03, 500.0)

        def generate(p, vp, text_features, mask, seconds_start, seconds_total, key):
            def model_fn(xx, t, cond):
                return task.model.apply({"params": p}, xx, t, cond["f"], cond["m"], cond["s"], cond["t"], cond["n"])
            cond = {"f": text_features, "m": mask, "s": seconds_start, "t": seconds_total,
                    "n": jnp.zeros(text_features.shape[:1], bool)}
            uncond = dict(cond, n=jnp.ones(text_features.shape[:1], bool))
            v_model = guidance.guided_v_model(model_fn, cond, uncond, options.cfg_scale)
            noise_key, sampler_key = jax.random.split(key)
            x_init = jax.random.normal(noise_key, x.shape) * sigmas[0]
            latents = samplers.sample(samplers.v_denoiser(v_model), x_init, sigmas, sampler="dpmpp_3m_sde",
                                      rng=sampler_key)
            if decoder is None:
                return latents
            return decoder[0].apply({"params": vp}, latents, method=type(decoder[0]).decode)

        vp, vs = (decoder[1], decoder[2]) if decoder else (None, None)
        sampling_inputs = (batch["text_features"], batch["text_mask"], batch["seconds_start"],
                           batch["seconds_total"])
        jitted = jax.jit(with_rules(generate, rules),
                         in_shardings=(param_shardings, vs) + tuple(x.sharding for x in sampling_inputs) + (None,))
        cfg = "with CFG (2B batch)" if options.cfg_scale != 1 else "no CFG"
        result, _ = measure(
            f"sample/{options.sample_steps}_steps",
            f"DPM-Solver++(3M) SDE, {options.sample_steps} steps, {cfg}"
            + (", + VAE decode" if decoder else ", latents only (no --vae_config)"),
            jitted, (params, vp) + sampling_inputs + (jax.random.PRNGKey(0),), options=options, mesh=mesh,
            batch_size=b, audio_seconds_per_item=window_seconds, input_shapes={"latents": list(x.shape)})
        results.append(result)
        per_step = result.median_seconds / options.sample_steps
        # Labelled as an extrapolation: only meaningful when the sampling row ran few steps.
        info.update(extrapolated_100_step_seconds=per_step * 100,
                    extrapolated_100_step_real_time_factor=window_seconds * b / (per_step * 100))
    for length in lengths:  # before the train step, which donates the parameters
        results.append(measure_forward(task, params, param_shardings, length, options=options, mesh=mesh,
                                       rules=rules, seed=config.seed))
    if lengths:
        info["forward_frames"] = {length.name: length.frames for length in lengths}
    del params
    if not options.skip_train:
        train, state = measure_train_phase(
            "train/diffusion", "v-objective step: VAE posterior sample, cosine schedule, 10% null context, "
            "AdamW, EMA", task.train_step, state, state_shardings, batch, options=options, mesh=mesh, rules=rules,
            audio_seconds_per_item=window_seconds)
        results.append(train)
    return info, results


# --------------------------------------------------------------------------- PyTorch reference (DiT)
REFERENCE_SCRIPT = os.path.join(_ROOT, "tests", "reference", "time_reference_dit.py")
REFERENCE_SHIMS = os.path.join(_ROOT, "tests", "reference", "shims")  # import shims for torchaudio/torchvision


class ReferenceRunError(RuntimeError):
    """The reference timing subprocess failed (reported in one line)."""


def reference_dit_arguments(config: Any) -> dict[str, int]:
    """The DiT shape of a diffusion config as `tests/reference/time_reference_dit.py` arguments
    (`text_tokens` counts the 2 timing tokens); a usage error for a U-Net config."""
    from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig

    model = LatentDiffusionConfig.from_dict(config.model.to_dict())
    if model.dit is None:
        raise BenchmarkUsageError("--reference_python times the reference DiT: it needs a DiT config "
                                  f"(configs/dit_*.py), not a {model.backbone} one")
    dit = model.dit
    return {"io_channels": dit.io_channels, "embed_dim": dit.embed_dim, "depth": dit.depth,
            "num_heads": dit.num_heads, "cond_token_dim": dit.cond_token_dim,
            "global_cond_dim": dit.global_cond_dim, "ff_mult": dit.ff_mult, "text_tokens": model.text_length + 2}


def reference_threads(requested: int) -> int:
    """`requested`, or with 0 the CPUs this process may run on (what XLA's CPU thread pool uses)."""
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _last_line(text: str) -> str:
    """The last non-blank line of `text`, stripped ('' if none)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def run_reference_script(python: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run the reference timing script with `python` (PYTHONPATH: the shims first) and return the
    JSON of its last stdout line; a `ReferenceRunError` naming the interpreter and the last
    line of its stderr when it fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REFERENCE_SHIMS, env.get("PYTHONPATH")) if p)
    command = [python, REFERENCE_SCRIPT] + [f"--{k}={v}" for k, v in arguments.items()]
    print(f"  reference: {' '.join(command)}", flush=True)
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
    except OSError as e:
        raise ReferenceRunError(f"reference timing with {python} failed: {e}") from None
    if proc.returncode != 0:
        raise ReferenceRunError(f"reference timing with {python} failed (exit {proc.returncode}): "
                                f"{_last_line(proc.stderr) or '(no stderr)'}")
    try:
        result = json.loads(_last_line(proc.stdout))
        rows = result["rows"]
    except (ValueError, KeyError, TypeError):
        raise ReferenceRunError(f"reference timing with {python} printed no JSON result; last stdout line: "
                                f"{_last_line(proc.stdout)!r}, last stderr line: {_last_line(proc.stderr)!r}"
                                ) from None
    if len(rows) != len(arguments["frames"].split(",")):
        raise ReferenceRunError(f"reference timing with {python} returned {len(rows)} rows for frames "
                                f"{arguments['frames']}")
    return result


def reference_forward(config: Any, options: Options) -> tuple[dict[str, Any], list[Measurement]]:
    """Time the PyTorch reference DiT at the `--forward_seconds` lengths (same frames and batch as
    the `forward/...` rows): its section of the hardware report and rows `reference/forward/...`
    (median and throughput only: nothing is compiled or cost-analysed)."""
    arguments = reference_dit_arguments(config)
    lengths = forward_lengths(config, options)
    b = options.batch_size
    arguments.update(frames=",".join(str(length.frames) for length in lengths), batch_size=b,
                     steps=options.steps, warmup=options.warmup,
                     threads=reference_threads(options.reference_threads), seed=config.seed)
    load_before = _load_average()
    result = run_reference_script(options.reference_python, arguments)
    section = {"python": options.reference_python, "dtype": "float32", "host_load_average_before": load_before,
               "host_load_average_after": _load_average(),
               **{k: result.get(k) for k in ("torch_version", "stable_audio_tools_version", "threads", "params",
                                             "build_seconds")}}
    rows = []
    for length, row in zip(lengths, result["rows"]):
        rows.append(Measurement(
            name="reference/" + length.name,
            description=f"PyTorch stable_audio_tools DiffusionTransformer forward, float32 eval, no_grad, "
                        f"torch {result.get('torch_version')} with {result.get('threads')} threads, on the "
                        f"CFG batch 2B={2 * b} at {length.frames} frames (conditioners not included)",
            batch_size=b, audio_seconds_per_item=length.window_seconds,
            input_shapes={"x": [2 * b, arguments["io_channels"], length.frames],
                          "cross_attn_cond": [2 * b, arguments["text_tokens"], arguments["cond_token_dim"]],
                          "global_embed": [2 * b, arguments["global_cond_dim"]]},
            lower_seconds=None, compile_seconds=None, step_seconds=[float(s) for s in row["step_seconds"]],
            flops_per_device=None, peak_bytes_in_use=None, compiled_memory=None))
        print(f"  measured {rows[-1].name}: median {rows[-1].median_seconds:.4f} s", flush=True)
    return section, rows


# --------------------------------------------------------------------------- registry
# config.task -> parameter counter and benchmark.
PARAM_COUNTERS: dict[str, Callable[[Any], dict[str, int]]] = {"vae": vae_param_counts,
                                                              "clap": clap_param_counts,
                                                              "diffusion": diffusion_param_counts}
BENCHMARKS: dict[str, Callable[[Any, Options, Any], tuple[dict[str, Any], list[Measurement]]]] = {
    "vae": benchmark_vae,
    "clap": benchmark_clap,
    "diffusion": benchmark_diffusion,
}


def _lookup(registry: dict, task: str):
    if task not in registry:
        raise BenchmarkUsageError(f"no benchmark for config.task={task!r}; known: {sorted(registry)}")
    return registry[task]


def param_counts(config: Any) -> dict[str, int]:
    return _lookup(PARAM_COUNTERS, config.task)(config)


def hardware_info(mesh: Any | None = None) -> dict[str, Any]:
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


def run_benchmark(config: Any, options: Options) -> dict[str, Any]:
    """Measure `config` under `options`; returns the JSON-ready report (see the module docstring)."""
    options.validate()
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
        raise BenchmarkUsageError(f"--batch_size={options.batch_size} is not divisible by the {dp} data-parallel "
                         f"devices of mesh {dict(mesh.shape)}; use a multiple of {dp}, --num_devices or "
                         f"--config.mesh.shape")
    counts = param_counts(config)
    load_before = _load_average()
    info, measurements = benchmark(config, options, mesh)
    load_after = _load_average()
    hardware = dict(hardware_info(mesh), host_load_average_before=load_before,
                    host_load_average_after=load_after)
    if options.reference_python:  # after ours (whose arrays are freed by now): the two never share the CPUs
        hardware["reference"], reference_rows = reference_forward(config, options)
        measurements = list(measurements) + reference_rows
    return build_report(hardware, config_summary(config), options, info, counts, measurements)


def config_summary(config: Any) -> dict[str, Any]:
    """The report's `config` section: file, task, dtypes, seed and command-line overrides."""
    return {"name": config_name(), "task": config.task, "dtype": config.get("dtype", "float32"),
            "param_dtype": config.get("param_dtype", "float32"), "seed": config.seed,
            "overrides": config_overrides()}


def build_report(hardware: dict[str, Any], config: dict[str, Any], options: Options, shapes: dict[str, Any],
                 counts: dict[str, int], measurements: Sequence[Measurement]) -> dict[str, Any]:
    """The JSON-ready report of finished measurements; MFU is against the resolved peak."""
    peak_tflops, peak_source = peak_flops.resolve_peak(options.peak_tflops, hardware["device_kind"])
    notes = [
        "median s: median wall time of the timed calls after warm-up, each ended by block_until_ready",
        "compile s: lowered.compile() only; lower s: tracing + lowering",
        "GFLOP/dev: compiled.cost_analysis()['flops'], XLA's count for one device's partitioned program",
        "MFU: TFLOP/s/dev / the peak per device (the table's peaks are dense bf16, whatever the run's dtype)",
        "XLA mem/dev: compiled.memory_analysis() estimate, arguments + outputs - donated/aliased + temporaries",
        "peak mem: process-wide peak_bytes_in_use high-water mark after the measurement (n/a: no statistics)",
        "inputs are seeded random arrays; weights are the random initialisation",
    ]
    if hardware.get("compilation_cache_dir"):
        notes.append("a persistent compilation cache is enabled: compile times may be cache hits")
    return {
        "hardware": hardware,
        "config": config,
        "options": dataclasses.asdict(options),
        "peak": {"tflops_per_device": peak_tflops, "source": peak_source},
        "shapes": shapes,
        "param_counts": counts,
        "measurements": [m.to_json(peak_tflops) for m in measurements],
        "derived": derived_figures(measurements),
        "notes": notes,
    }


def _load_average() -> list[float] | None:
    """The host's 1/5/15-minute load averages: other processes on the host skew timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


REFERENCE_PREFIX = "reference/"
RATIO_SUFFIX = " median ours/reference"


def derived_figures(measurements: Sequence[Measurement]) -> dict[str, float]:
    """Alternating generator/discriminator training (as the trainer runs after warm-up), and for
    every `reference/<name>` row with a `<name>` row, the ratio of their medians (ours over the
    reference's: < 1 means ours is faster) under the key `<name> median ours/reference`."""
    by_name = {m.name: m for m in measurements}
    derived = {}
    gen, disc = by_name.get("train/generator"), by_name.get("train/discriminator")
    if gen is not None and disc is not None:
        pair_seconds = gen.median_seconds + disc.median_seconds
        derived.update(train_alternating_seconds_per_step=pair_seconds / 2,
                       train_alternating_items_per_second=2 * gen.batch_size / pair_seconds,
                       train_alternating_generator_updates_per_second=1.0 / pair_seconds)
    for name, reference in by_name.items():
        ours = by_name.get(name[len(REFERENCE_PREFIX):]) if name.startswith(REFERENCE_PREFIX) else None
        if ours is not None:
            derived[ours.name + RATIO_SUFFIX] = ours.median_seconds / reference.median_seconds
    return derived


# --------------------------------------------------------------------------- output
def config_name() -> str | None:
    try:
        return config_flags.get_config_filename(flags.FLAGS["config"])
    except Exception:
        return None


def config_overrides() -> dict[str, Any]:
    try:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in config_flags.get_override_values(flags.FLAGS["config"]).items()}
    except Exception:
        return {}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _fmt_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "n/a"


def _fmt_bytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def _fmt_percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"


def format_params(counts: dict[str, int]) -> str:
    width = max(len(k) for k in counts)
    return "\n".join(f"  {k:<{width}}  {v:>15,}" for k, v in counts.items())


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Aligned lines: the first `left` columns (names) left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt_row(r: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows]


def _section(report: dict[str, Any], key: str) -> dict[str, Any]:
    """`report[key]` when it is a dict, else {}: reports from older versions lack some sections."""
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    """`value` when it is a number (not a bool), else None: a garbled field reads n/a, not a traceback."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def report_peak(report: dict[str, Any]) -> tuple[float | None, str | None]:
    """The peak TFLOP/s per device the report's MFU is against, and its source."""
    if "peak" in report:
        peak = _section(report, "peak")
        return _number(peak.get("tflops_per_device")), peak.get("source")
    # Reports written before the device table: MFU came from --peak_tflops_per_device alone.
    flag = _number(_section(report, "options").get("peak_tflops_per_device"))
    return (flag, "flag") if flag else (None, None)


def _peak_line(report: dict[str, Any]) -> str:
    tflops, source = report_peak(report)
    if not tflops:
        kind = _section(report, "hardware").get("device_kind")
        return f"peak: n/a, no MFU (device kind {kind!r} is not in the peak table; --peak_tflops sets one)"
    return f"peak: {tflops:g} TFLOP/s per device ({source}); MFU = TFLOP/s/dev / peak"


def header_lines(report: dict[str, Any]) -> list[str]:
    """Hardware, software, config, shapes, peak and timing of a report, one line each."""
    hw, cfg, opts = _section(report, "hardware"), _section(report, "config"), _section(report, "options")
    shapes = _section(report, "shapes")
    overrides = cfg.get("overrides")
    reference = hw.get("reference")
    reference = [
        f"reference: PyTorch stable-audio-tools {reference.get('stable_audio_tools_version')}, torch "
        f"{reference.get('torch_version')}, {reference.get('threads')} threads, {reference.get('dtype')}, "
        f"{_fmt_count(reference.get('params'))} DiT parameters ({reference.get('python')}), host load average "
        f"before/after {reference.get('host_load_average_before')} / {reference.get('host_load_average_after')}"
    ] if isinstance(reference, dict) else []
    return [
        f"hardware: backend={hw.get('backend')} device_kind={hw.get('device_kind')!r} "
        f"devices={hw.get('device_count')} (mesh {hw.get('mesh')}, {hw.get('process_count')} process(es)), "
        f"host CPUs={hw.get('host_cpu_count')}, host load average before/after "
        f"{hw.get('host_load_average_before')} / {hw.get('host_load_average_after')}",
        f"software: jax {hw.get('jax_version')}, jaxlib {hw.get('jaxlib_version')}, flax {hw.get('flax_version')}, "
        f"python {hw.get('python_version')}",
        *reference,
        f"config: {cfg.get('name')} (task={cfg.get('task')}, dtype={cfg.get('dtype')}, "
        f"param_dtype={cfg.get('param_dtype')})" + (f" overrides={overrides}" if overrides else ""),
        "shapes: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shapes.items()),
        _peak_line(report),
        f"timing: global batch {opts.get('batch_size')}, {opts.get('warmup')} warm-up + {opts.get('steps')} "
        "timed calls per row",
    ]


def format_report(report: dict[str, Any]) -> str:
    peak, _ = report_peak(report)
    lines = header_lines(report) + ["parameters:", format_params(report["param_counts"]), ""]
    header = ["measurement", "lower s", "compile s", "median s", "min s", "clips/s", "audio s/s",
              "GFLOP/dev", "TFLOP/s/dev"] + (["MFU"] if peak else []) + ["XLA mem/dev", "peak mem"]
    rows = []
    for m in report["measurements"]:
        flops = m["flops_per_device"]
        row = [m["name"], _fmt(m["lower_seconds"], ".2f"), _fmt(m["compile_seconds"], ".2f"),
               f"{m['median_seconds']:.4f}", f"{m['min_seconds']:.4f}", f"{m['items_per_second']:.3f}",
               f"{m['audio_seconds_per_second']:.3f}", _fmt(None if flops is None else flops / 1e9, ".2f"),
               _fmt(m["tflops_per_second_per_device"], ".4f")]
        if peak:
            row.append(_fmt_percent(m["mfu"]))
        row += [_fmt_bytes(m["compiled_bytes_per_device"]), _fmt_bytes(m["peak_bytes_in_use"])]
        rows.append(row)
    lines += format_table(header, rows)
    derived = report["derived"]
    if "train_alternating_seconds_per_step" in derived:
        lines.append(f"train alternating generator/discriminator: "
                     f"{derived['train_alternating_seconds_per_step']:.4f} s/step, "
                     f"{derived['train_alternating_items_per_second']:.3f} clips/s")
    for key, ratio in derived.items():
        if key.endswith(RATIO_SUFFIX):
            name = key[:-len(RATIO_SUFFIX)]
            lines.append(f"{name}: median ours / reference = {ratio:.3f} "
                         f"({'ours' if ratio < 1 else 'the reference'} is {max(ratio, 1 / ratio):.2f}x faster)")
    lines += ["", "rows:"] + [f"  {m['name']}: {m['description']}, inputs {m['input_shapes']}"
                              for m in report["measurements"]]
    lines += ["notes:"] + [f"  {n}" for n in report["notes"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- --compare
class CompareError(ValueError):
    """A --compare input that is missing or is not a benchmark report (reported in one line)."""


def load_report(path: str) -> dict[str, Any]:
    """A report written by `--output_json`, checked just enough for `format_comparison`."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as e:
        raise CompareError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise CompareError(f"{path} is not valid JSON: {e}") from None
    measurements = report.get("measurements") if isinstance(report, dict) else None
    if not isinstance(measurements, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) for m in measurements):
        raise CompareError(f"{path} is not a benchmark report (no 'measurements' list of named entries)")
    return report


# (row label, Measurement.to_json key, formatter) of the compared figures.
_COMPARED: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("median step s", "median_seconds", lambda v: _fmt(v, ".4f")),
    ("clips/s", "items_per_second", lambda v: _fmt(v, ".3f")),
    ("audio s/s", "audio_seconds_per_second", lambda v: _fmt(v, ".3f")),
    ("TFLOP/s/dev", "tflops_per_second_per_device", lambda v: _fmt(v, ".4f")),
    ("MFU", "mfu", _fmt_percent),
    ("peak mem", "peak_bytes_in_use", _fmt_bytes),
    ("compile s", "compile_seconds", lambda v: _fmt(v, ".2f")),
)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or a == 0 else f"{b / a:.3f}"


def format_comparison(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Headers of two reports, then their measurements side by side with the ratio B/A."""
    lines = [f"A: {name_a}"] + [f"  {line}" for line in header_lines(a)]
    lines += [f"B: {name_b}"] + [f"  {line}" for line in header_lines(b)] + [""]
    by_name_a = {m["name"]: m for m in a["measurements"]}
    by_name_b = {m["name"]: m for m in b["measurements"]}
    names = list(by_name_a) + [n for n in by_name_b if n not in by_name_a]  # A's order, then B's extras
    rows = []
    for name in names:
        ma, mb = by_name_a.get(name, {}), by_name_b.get(name, {})
        for i, (label, key, fmt) in enumerate(_COMPARED):
            va, vb = _number(ma.get(key)), _number(mb.get(key))
            rows.append([name if i == 0 else "", label, fmt(va), fmt(vb), _ratio(va, vb)])
    derived_a, derived_b = _section(a, "derived"), _section(b, "derived")
    for key in list(derived_a) + [k for k in derived_b if k not in derived_a]:
        va, vb = _number(derived_a.get(key)), _number(derived_b.get(key))
        rows.append(["derived", key, _fmt(va, ".4f"), _fmt(vb, ".4f"), _ratio(va, vb)])
    lines += format_table(["measurement", "figure", "A", "B", "B/A"], rows, left=2)
    lines += ["", "B/A: B's figure over A's; on the step time B/A < 1 means B is faster (A/B is B's speedup)",
              "n/a: not in that report (or no figure: e.g. no memory statistics on CPU, no MFU without a peak)"]
    return "\n".join(lines)


def compare_main(paths: Sequence[str]) -> None:
    """`--compare A.json B.json`: print the comparison; one error line and exit 2 on a bad file."""
    if len(paths) != 2:
        raise UserError(f"--compare takes two report files (A.json B.json), got {len(paths)}: {list(paths)}")
    try:
        a, b = (load_report(p) for p in paths)
    except CompareError as e:
        raise UserError(f"benchmark --compare: {e}") from None
    print(format_comparison(a, b, *paths), flush=True)


# --------------------------------------------------------------------------- --memory_estimate
def diffusion_memory_estimates(config: Any, mesh_shape: Sequence[int], global_batch: int,
                               policies: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`memory_estimate.train_memory_estimate` of the diffusion train step for each remat
    policy in `policies` (backbone's `remat_policy` overridden; none given: the config's),
    on an abstract mesh."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from stable_audio_jax import lora, memory_estimate
    from stable_audio_jax.models.remat import REMAT_CHOICES
    from stable_audio_jax.training.diffusion_task import ADAPTERS, DiffusionTask

    mesh = memory_estimate.abstract_mesh(mesh_shape)
    rules = mesh_rules(config)
    backbone = config.model.get("dit") and "dit" or "unet"
    results = []
    for policy in policies or [config.model[backbone].remat_policy]:
        if policy not in REMAT_CHOICES:
            raise BenchmarkUsageError(f"--remat_policies: unknown policy {policy!r}; choose from {list(REMAT_CHOICES)}")
        policy_config = config.copy_and_resolve_references()
        with policy_config.unlocked():
            policy_config.model[backbone].remat_policy = policy
            policy_config.data.batch_size = global_batch
        task = DiffusionTask(policy_config)
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)

        def make_inputs(batch_size: int, task=task):
            x, _, text, text_mask, start, total = task.example_inputs(batch_size)
            batch = {"latent_mean": x, "latent_std": x, "text_features": text, "text_mask": text_mask,
                     "seconds_start": start, "seconds_total": total}
            as_struct = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
            return jax.eval_shape(lambda b, k: task.noised_inputs(b, k, 0.1),
                                  jax.tree.map(as_struct, batch), key)

        with nn.logical_axis_rules(rules):
            state = jax.eval_shape(task.init_state, key)
            if task.lora.enabled:  # adapters train; the frozen base goes in as an input
                frozen = nn.meta.unbox(state.frozen["diffusion"])
                model, merged = ADAPTERS, lora.merged_kernels(state.frozen["diffusion"], task.lora_targets)

                def loss_fn(adapters, inputs, task=task):
                    return task.v_loss(lora.merge(inputs["frozen"], [(task.adapter(adapters), 1.0)]), inputs["x"])

                def inputs_fn(batch_size: int, make_inputs=make_inputs, frozen=frozen):
                    return {"frozen": frozen, "x": make_inputs(batch_size)}
            else:
                loss_fn, inputs_fn, model, merged = task.v_loss, make_inputs, "diffusion", None
            estimate = memory_estimate.train_memory_estimate(
                state=state, loss_fn=loss_fn, make_inputs=inputs_fn,
                mesh=mesh, rules=rules, global_batch=global_batch, grad_accum_steps=task.grad_accum_steps,
                remat_policy=policy, model=model, merged=merged)
        results.append(estimate.to_json())
    return results


def format_memory_estimates(estimates: Sequence[dict[str, Any]]) -> str:
    """One row per remat policy: the parts of the per-device estimate and their total."""
    first = estimates[0]
    parts = ("params", "optimizer", "ema", "gradients", "activations", "total")
    if any(e.get("frozen") for e in estimates):  # a LoRA run: its frozen base and merged kernels too
        parts = ("frozen", "merged", *parts)
    size = lambda b: f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"  # noqa: E731
    rows = [[e["remat_policy"]] + [size(e[k]) for k in parts] for e in estimates]
    lines = [f"per-device memory of one train step (estimate from shapes; mesh {first['mesh_shape']}, "
             f"global batch {first['global_batch']}, {first['micro_batch_per_device']} example(s) per device "
             f"per micro-batch, {first['grad_accum_steps']} micro-batch(es))"]
    lines += format_table(["remat policy", *parts], rows)
    lines += ["params/optimizer/ema/gradients: each device's shards under the logical rules (with LoRA: of the "
              "adapters; frozen: the base, merged: its adapted kernels in float32); activations: the "
              "residuals saved for the backward pass (jax.vjp under eval_shape) for one micro-batch. "
              "XLA temporaries (the block being recomputed, fusion scratch) come on top: a lower bound."]
    return "\n".join(lines)


def options_from_flags() -> Options:
    return Options(batch_size=_BATCH_SIZE.value, seconds=_SECONDS.value, steps=_STEPS.value,
                   warmup=_WARMUP.value, skip_train=_SKIP_TRAIN.value,
                   train_phases=tuple(_TRAIN_PHASES.value), num_devices=_NUM_DEVICES.value,
                   peak_tflops=_PEAK_TFLOPS.value, sample_steps=_SAMPLE_STEPS.value,
                   cfg_scale=_CFG_SCALE.value, vae_config=_VAE_CONFIG.value,
                   forward_seconds=tuple(_parse_seconds(s) for s in _FORWARD_SECONDS.value),
                   reference_python=_REFERENCE_PYTHON.value, reference_threads=_REFERENCE_THREADS.value)


def _parse_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BenchmarkUsageError(f"--forward_seconds takes numbers (e.g. 10,47), got {text!r}") from None


def memory_estimate_main(config: Any) -> None:
    """`--memory_estimate`: print (and with `--output_json` write) the per-device estimates."""
    if config.task != "diffusion":
        raise BenchmarkUsageError(f"--memory_estimate covers the diffusion train step; config.task={config.task!r}")
    try:
        mesh_shape = [int(v) for v in _MEMORY_MESH.value]
    except ValueError:
        raise BenchmarkUsageError(f"--memory_mesh takes three integers (data,fsdp,tensor), got {_MEMORY_MESH.value}") from None
    try:
        estimates = diffusion_memory_estimates(config, mesh_shape, _BATCH_SIZE.value, _REMAT_POLICIES.value)
    except ValueError as e:  # mesh shape or batch split
        raise BenchmarkUsageError(str(e)) from e
    print(f"config: {config_name()} (task={config.task}, dtype={config.get('dtype', 'float32')}, "
          f"param_dtype={config.get('param_dtype', 'float32')})")
    print(format_memory_estimates(estimates), flush=True)
    if _OUTPUT_JSON.value:
        with open(_OUTPUT_JSON.value, "w") as f:
            json.dump({"config": config_name(), "overrides": config_overrides(), "memory_estimates": estimates},
                      f, indent=2)
        print(f"wrote {_OUTPUT_JSON.value}")


def main(argv):
    if _COMPARE.value:
        if _CONFIG.value is not None:
            raise UserError("--compare reads two reports and measures nothing: drop --config")
        compare_main(argv[1:])
        return
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise UserError("--config=configs/<name>.py is required (or --compare A.json B.json)")
    try:
        if _MEMORY_ESTIMATE.value:
            memory_estimate_main(config)
            return
        if _PARAMS_ONLY.value:
            counts = param_counts(config)
            print(f"config: {config_name()} (task={config.task})")
            print("parameters (jax.eval_shape, nothing allocated):")
            print(format_params(counts), flush=True)
            return
        report = run_benchmark(config, options_from_flags())
    except ReferenceRunError as e:
        raise SystemExit(f"benchmark: {e}") from None
    import jax

    if jax.process_index() != 0:  # every process measures; process 0 reports
        return
    print()
    print(format_report(report), flush=True)
    if _OUTPUT_JSON.value:
        directory = os.path.dirname(os.path.abspath(_OUTPUT_JSON.value))
        os.makedirs(directory, exist_ok=True)
        with open(_OUTPUT_JSON.value, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
    cli.run(main)
