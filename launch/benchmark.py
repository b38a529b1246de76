"""Benchmark a config on the current backend: compile time, step time, throughput, FLOPs, memory.

    python launch/benchmark.py --config=configs/vae_sao.py --params_only
    python launch/benchmark.py --config=configs/vae_sao.py --batch_size=1 --seconds=1.5 \
        --steps=5 --output_json=/tmp/bench_sao.json
    python launch/benchmark.py --compare /tmp/bench_gpu.json /tmp/bench_tpu.json

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
labelled as such.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from stable_audio_jax import peak_flops  # noqa: E402  (pure Python: no backend starts at import)

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


# --------------------------------------------------------------------------- options
class BenchmarkUsageError(ValueError):
    """A flag or config value that makes the requested benchmark impossible."""


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


# --------------------------------------------------------------------------- measurement
@dataclasses.dataclass
class Measurement:
    """One measured executable; everything derived is computed from these fields."""

    name: str
    description: str
    batch_size: int
    audio_seconds_per_item: float  # seconds of audio each batch item covers
    input_shapes: dict[str, list[int]]
    lower_seconds: float
    compile_seconds: float
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
    return parallel.create_mesh(tuple(config.mesh.shape), tuple(config.mesh.axis_names), devices=devices)


def mesh_rules(config: Any) -> tuple:
    from stable_audio_jax import parallel

    return tuple(tuple(r) for r in config.mesh.get("rules", parallel.DEFAULT_RULES))


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


def measure_vae_transform(name: str, description: str, fn: Callable, params: Any, param_shardings: Any,
                          inputs: Any, *, options: Options, mesh: Any, rules: tuple,
                          window_seconds: float) -> Measurement:
    """One jitted `fn(params, inputs)` (encode or decode) with the batch over the data axes."""
    import jax
    from stable_audio_jax import parallel
    from stable_audio_jax.training.trainer import with_rules

    jitted = jax.jit(with_rules(fn, rules),
                     in_shardings=(param_shardings, parallel.batch_sharding(mesh, inputs.ndim, rules)))
    result, _ = measure(name, description, jitted, (params, inputs),
                        options=options, mesh=mesh, batch_size=inputs.shape[0],
                        audio_seconds_per_item=window_seconds, input_shapes={name + "_input": list(inputs.shape)})
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

    common = dict(options=options, mesh=mesh, rules=rules, window_seconds=window_seconds)
    def encode(params, audio):  # audio [batch, T, 2] -> latents [batch, T/ratio, latent_dim] (the mean)
        return autoencoder.apply({"params": params}, audio, None, method=type(autoencoder).encode)[0]

    def decode(params, latents):  # latents [batch, N, latent_dim] -> audio [batch, N*ratio, 2]
        return autoencoder.apply({"params": params}, latents, method=type(autoencoder).decode)

    results = [
        measure_vae_transform("encode", "audio -> latents (mean, no sampling)", encode, ae_params,
                              ae_shardings, audio, **common),
        measure_vae_transform("decode", "latents -> audio", decode, ae_params, ae_shardings, latents, **common),
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
    import jax
    from stable_audio_jax import parallel
    from stable_audio_jax.models.clap import CLAP
    from stable_audio_jax.training.clap_task import CLAPTask
    from stable_audio_jax.training.trainer import with_rules

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
        in_shardings = (param_shardings,) + tuple(parallel.batch_sharding(mesh, x.ndim, rules) for x in inputs)
        jitted = jax.jit(with_rules(fn, rules), in_shardings=in_shardings)
        result, _ = measure(name, description, jitted, (params,) + inputs, options=options, mesh=mesh,
                            batch_size=options.batch_size, audio_seconds_per_item=seconds,
                            input_shapes={f"input_{i}": list(x.shape) for i, x in enumerate(inputs)})
        return result

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
    """Parameter counts of the conditioned U-Net from `jax.eval_shape` (nothing is allocated)."""
    import jax
    from stable_audio_jax.training.diffusion_task import DiffusionTask

    task = DiffusionTask(config)
    params = jax.eval_shape(task.model.init, jax.random.PRNGKey(0), *task.example_inputs())["params"]
    return {"diffusion": count_params(params), "unet": count_params(params["unet"]),
            "timing": count_params(params["timing"])}


def benchmark_diffusion(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """The v-objective train step and guided sampling (`--sample_steps` DPM-Solver++(3M) SDE steps,
    CFG as one 2B batch, then the `--vae_config` decoder if given) at the config's window."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from stable_audio_jax import parallel
    from stable_audio_jax.diffusion import guidance, samplers, schedule
    from stable_audio_jax.training.diffusion_task import DiffusionTask
    from stable_audio_jax.training.trainer import with_rules

    rules = mesh_rules(config)
    with config.unlocked():
        config.data.batch_size = options.batch_size
    task = DiffusionTask(config)
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

    decoder = None
    if options.vae_config:
        import importlib.util
        spec = importlib.util.spec_from_file_location("vae_config", options.vae_config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from stable_audio_jax.training.vae_task import build_autoencoder
        autoencoder = build_autoencoder(module.get_config())
        if autoencoder.config.latent_dim != task.model.config.unet.in_channels:
            raise BenchmarkUsageError(f"--vae_config latent_dim {autoencoder.config.latent_dim} differs from the "
                                      f"U-Net's in_channels {task.model.config.unet.in_channels}")
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
    sampling_inputs = (batch["text_features"], batch["text_mask"], batch["seconds_start"], batch["seconds_total"])
    jitted = jax.jit(with_rules(generate, rules),
                     in_shardings=(param_shardings, vs) + tuple(x.sharding for x in sampling_inputs) + (None,))
    cfg = "with CFG (2B batch)" if options.cfg_scale != 1 else "no CFG"
    result, _ = measure(
        f"sample/{options.sample_steps}_steps",
        f"DPM-Solver++(3M) SDE, {options.sample_steps} steps, {cfg}"
        + (", + VAE decode" if decoder else ", latents only (no --vae_config)"),
        jitted, (params, vp) + sampling_inputs + (jax.random.PRNGKey(0),), options=options, mesh=mesh,
        batch_size=b, audio_seconds_per_item=window_seconds, input_shapes={"latents": list(x.shape)})
    results = [result]
    if not options.skip_train:
        train, state = measure_train_phase(
            "train/diffusion", "v-objective step: VAE posterior sample, cosine schedule, 10% null context, "
            "AdamW, EMA", task.train_step, state, state_shardings, batch, options=options, mesh=mesh, rules=rules,
            audio_seconds_per_item=window_seconds)
        results.append(train)
    per_step = result.median_seconds / options.sample_steps
    info = {"window_samples": int(config.data.sample_size), "window_seconds": window_seconds,
            "latent_shape": list(x.shape), "text_shape": list(text.shape), "sample_steps": options.sample_steps,
            "cfg_scale": options.cfg_scale, "vae_config": options.vae_config, "init_seconds": init_seconds,
            # Labelled as an extrapolation: only meaningful when the sampling row ran few steps.
            "extrapolated_100_step_seconds": per_step * 100,
            "extrapolated_100_step_real_time_factor": window_seconds * b / (per_step * 100)}
    return info, results


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


def derived_figures(measurements: Sequence[Measurement]) -> dict[str, float]:
    """Alternating generator/discriminator training (as the trainer runs after warm-up)."""
    by_name = {m.name: m for m in measurements}
    gen, disc = by_name.get("train/generator"), by_name.get("train/discriminator")
    if gen is None or disc is None:
        return {}
    pair_seconds = gen.median_seconds + disc.median_seconds
    return {"train_alternating_seconds_per_step": pair_seconds / 2,
            "train_alternating_items_per_second": 2 * gen.batch_size / pair_seconds,
            "train_alternating_generator_updates_per_second": 1.0 / pair_seconds}


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
    return [
        f"hardware: backend={hw.get('backend')} device_kind={hw.get('device_kind')!r} "
        f"devices={hw.get('device_count')} (mesh {hw.get('mesh')}, {hw.get('process_count')} process(es)), "
        f"host CPUs={hw.get('host_cpu_count')}, host load average before/after "
        f"{hw.get('host_load_average_before')} / {hw.get('host_load_average_after')}",
        f"software: jax {hw.get('jax_version')}, jaxlib {hw.get('jaxlib_version')}, flax {hw.get('flax_version')}, "
        f"python {hw.get('python_version')}",
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
        row = [m["name"], f"{m['lower_seconds']:.2f}", f"{m['compile_seconds']:.2f}",
               f"{m['median_seconds']:.4f}", f"{m['min_seconds']:.4f}", f"{m['items_per_second']:.3f}",
               f"{m['audio_seconds_per_second']:.3f}", _fmt(None if flops is None else flops / 1e9, ".2f"),
               _fmt(m["tflops_per_second_per_device"], ".4f")]
        if peak:
            row.append(_fmt_percent(m["mfu"]))
        row += [_fmt_bytes(m["compiled_bytes_per_device"]), _fmt_bytes(m["peak_bytes_in_use"])]
        rows.append(row)
    lines += format_table(header, rows)
    derived = report["derived"]
    if derived:
        lines.append(f"train alternating generator/discriminator: "
                     f"{derived['train_alternating_seconds_per_step']:.4f} s/step, "
                     f"{derived['train_alternating_items_per_second']:.3f} clips/s")
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
    """`--compare A.json B.json`: print the comparison; one error line and exit 1 on a bad file."""
    if len(paths) != 2:
        raise app.UsageError(f"--compare takes two report files (A.json B.json), got {len(paths)}: {list(paths)}")
    try:
        a, b = (load_report(p) for p in paths)
    except CompareError as e:
        raise SystemExit(f"benchmark --compare: {e}") from None
    print(format_comparison(a, b, *paths), flush=True)


def options_from_flags() -> Options:
    return Options(batch_size=_BATCH_SIZE.value, seconds=_SECONDS.value, steps=_STEPS.value,
                   warmup=_WARMUP.value, skip_train=_SKIP_TRAIN.value,
                   train_phases=tuple(_TRAIN_PHASES.value), num_devices=_NUM_DEVICES.value,
                   peak_tflops=_PEAK_TFLOPS.value, sample_steps=_SAMPLE_STEPS.value,
                   cfg_scale=_CFG_SCALE.value, vae_config=_VAE_CONFIG.value)


def main(argv):
    if _COMPARE.value:
        if _CONFIG.value is not None:
            raise app.UsageError("--compare reads two reports and measures nothing: drop --config")
        compare_main(argv[1:])
        return
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config=configs/<name>.py is required (or --compare A.json B.json)")
    try:
        if _PARAMS_ONLY.value:
            counts = param_counts(config)
            print(f"config: {config_name()} (task={config.task})")
            print("parameters (jax.eval_shape, nothing allocated):")
            print(format_params(counts), flush=True)
            return
        report = run_benchmark(config, options_from_flags())
    except BenchmarkUsageError as e:
        raise app.UsageError(str(e)) from e
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
    app.run(main)
