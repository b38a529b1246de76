"""Benchmark a config on the current backend: compile time, step time, throughput, FLOPs, memory.

    python launch/benchmark.py --config=configs/vae_sao.py --params_only
    python launch/benchmark.py --config=configs/vae_sao.py --batch_size=1 --seconds=1.5 \
        --steps=5 --output_json=/tmp/bench_sao.json
    python launch/benchmark.py --config=configs/dit_sao.py --config.dtype=float32 --skip_train \
        --sample_steps=0 --forward_seconds=10,47 --reference_python=$REFERENCE_PYTHON
    python launch/benchmark.py --compare /tmp/bench_gpu.json /tmp/bench_tpu.json
    python launch/benchmark.py --suite=paper --output_json=paper.json   # the paper-scale table
    python launch/benchmark.py --suite=paper --smoke                    # the same rows, tiny (CPU)
    python launch/benchmark.py --suite=scaling --per_device_batch=1     # cost vs audio length, attention share
    python launch/benchmark.py --config=configs/diffusion_sa1.py --memory_estimate --batch_size=256 \
        --memory_mesh=8,8,1 --remat_policies=none,full,dots_with_no_batch_dims_saveable

Config overrides work as in `launch/train.py` (`--config.dtype=bfloat16`).

What is measured, for every entry of the task's benchmark (`BENCHMARKS[config.task]` of
`stable_audio_jax/benchmark/runner.py`):

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
  `stable_audio_jax/benchmark/peak_flops.py` looked up from `jax.devices()[0].device_kind`
  (H100, H200, A100, TPU v4, v5e, v5p, v6e), else n/a (e.g. CPU). The table holds dense (no sparsity) bf16
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
labelled as such; `--sample_steps=0` drops the sampling row. `--flow_steps=8` adds
`sample/8_steps_pingpong`: 8 pingpong steps without CFG on the same backbone (how a few-step
rectified-flow model samples), and the shapes section then gives the measured speed-up over the
`--sample_steps` row beside the ratio of network evaluations.

Diffusion forward rows (`--forward_seconds=10,47`): `forward/<s>s_cfg` is one jitted
`task.model.apply` (timing embedders and any text projection included) on the CFG batch
`2B` (`B` = `--batch_size`; the first B rows conditional, the last B the same inputs with
`use_null_context`) of seeded random latents `[2B, frames, latent_dim]`, with
`frames = ceil(s * sample_rate / pretransform.downsampling_ratio)` rounded up to the
backbone's downsampling factor (the U-Net's; the DiT takes any length). `clips/s` = B /
median and `audio s/s` = B x frames' seconds / median: seconds of guided (conditional)
audio per forward-second. The frames per row are in the shapes section (`forward_frames`).
With `--skip_train` only the model's parameters are created (no optimizer state or EMA).
`--attention_share` adds `attention/forward/<s>s_cfg` and `attention/train/diffusion`: the
row's attention calls (their shapes recorded while tracing it) timed alone, forward only or
forward + backward, with the same kernel setting; the shapes section's `attention_share` gives
their share of the row's median time and of its XLA FLOPs (`benchmark/attention_rows.py`).

Memory estimate (`--memory_estimate`, diffusion configs): measures nothing and needs no
accelerator. For a (data, fsdp, tensor) `--memory_mesh` (devices need not exist) and the global
`--batch_size`, it prints one device's share of a train step for each `--remat_policies`
entry (default: the config's): parameter, Adam-state, EMA and gradient shards under the
logical rules, plus the activations the backward pass keeps for one micro-batch (the
residuals of `jax.vjp`, traced with `jax.eval_shape`, so the remat policy and compute dtype
count exactly). XLA's temporaries come on top; see
`stable_audio_jax/benchmark/memory_estimate.py`.

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

import json
import os
import sys
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# Pure Python at import (no backend starts): --help and --compare stay fast.
from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.benchmark import diffusion_memory, report, runner  # noqa: E402
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options  # noqa: E402
from stable_audio_jax.benchmark.reference import ReferenceRunError  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_PARAMS_ONLY = flags.DEFINE_bool("params_only", False, "Print the parameter counts (no allocation) and exit.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Global batch size (split over the data-parallel mesh axes).")
_SECONDS = flags.DEFINE_float("seconds", 1.5, "Audio window in seconds; rounded up to a valid sample count.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls per measurement (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls per measurement after compilation.")
_SKIP_TRAIN = flags.DEFINE_bool("skip_train", False, "Measure inference only (VAE: encode and decode).")
_TRAIN_PHASES = flags.DEFINE_list(
    "train_phases",
    ["generator", "discriminator"],
    "VAE training phases to measure: generator, discriminator, generator_warmup.",
)
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 0, "Use the first N devices for the mesh (0: all).")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops",
    0.0,
    "Peak TFLOP/s of one device for MFU; > 0 overrides the dense bf16 table of "
    "stable_audio_jax/benchmark/peak_flops.py (0: the table; devices not in it get "
    "no MFU).",
)
flags.DEFINE_alias("peak_tflops_per_device", "peak_tflops")  # the flag's earlier name
_COMPARE = flags.DEFINE_bool(
    "compare",
    False,
    "Compare two --output_json reports given as arguments (A.json B.json); measures nothing and needs no --config.",
)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the results to this JSON file.")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 100, "Diffusion: sampler steps in the sampling row.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", 6.0, "Diffusion: guidance scale of the sampling row (1: no CFG).")
_FLOW_STEPS = flags.DEFINE_integer(
    "flow_steps",
    0,
    "Diffusion: also a sample/<N>_steps_pingpong row: N pingpong "
    "steps without CFG on the same backbone, as a few-step rectified-flow model "
    "samples (0: no such row).",
)
_VAE_CONFIG = flags.DEFINE_string(
    "vae_config",
    None,
    "Diffusion: a configs/vae_*.py whose decoder (random weights) ends the "
    "sampling row; without it the row stops at the latents.",
)
_FORWARD_SECONDS = flags.DEFINE_list(
    "forward_seconds",
    [],
    "Diffusion: audio lengths in seconds (e.g. 10,47); one row forward/<s>s_cfg "
    "each: one model forward on the CFG batch (2 x --batch_size) at that many "
    "latent frames.",
)
_ATTENTION_SHARE = flags.DEFINE_bool(
    "attention_share",
    False,
    "Diffusion: also time the attention calls of each forward/<s>s_cfg row and of the train step "
    "alone at the model's shapes (rows attention/...; their share in the shapes section).",
)
_REFERENCE_PYTHON = flags.DEFINE_string(
    "reference_python",
    None,
    "Diffusion with a DiT and --forward_seconds: a Python with torch and "
    "stable-audio-tools (README: the reference environment) that times the "
    "reference DiT's forward at the same lengths (rows reference/forward/...).",
)
_MEMORY_ESTIMATE = flags.DEFINE_bool(
    "memory_estimate",
    False,
    "Diffusion: print the per-device memory of a train step on --memory_mesh, estimated "
    "from shapes for each --remat_policies entry (nothing compiled or allocated), and exit.",
)
_MEMORY_MESH = flags.DEFINE_list(
    "memory_mesh", ["1", "8", "1"], "--memory_estimate: the (data, fsdp, tensor) mesh shape to estimate for."
)
_REMAT_POLICIES = flags.DEFINE_list(
    "remat_policies", [], "--memory_estimate: remat policies to compare (default: the config's)."
)
_SUITE = flags.DEFINE_string(
    "suite", None, "Measure a suite of configs (stable_audio_jax/benchmark/suites.py): 'paper' or 'scaling'."
)
_SMOKE = flags.DEFINE_bool("smoke", False, "--suite: the same rows on the tiny configs at small shapes (CPU, CI).")
_PER_DEVICE_BATCH = flags.DEFINE_integer(
    "per_device_batch", 4, "--suite: examples per data-parallel device of the train-step rows."
)
_REFERENCE_THREADS = flags.DEFINE_integer(
    "reference_threads",
    0,
    "torch threads of the --reference_python run (0: the CPUs this process may run on, as XLA's CPU thread pool).",
)


def options_from_flags() -> Options:
    """The benchmark's `Options` from the non-config flags."""
    return Options(
        batch_size=_BATCH_SIZE.value,
        seconds=_SECONDS.value,
        steps=_STEPS.value,
        warmup=_WARMUP.value,
        skip_train=_SKIP_TRAIN.value,
        train_phases=tuple(_TRAIN_PHASES.value),
        num_devices=_NUM_DEVICES.value,
        peak_tflops=_PEAK_TFLOPS.value,
        sample_steps=_SAMPLE_STEPS.value,
        cfg_scale=_CFG_SCALE.value,
        flow_steps=_FLOW_STEPS.value,
        vae_config=_VAE_CONFIG.value,
        forward_seconds=tuple(_parse_seconds(s) for s in _FORWARD_SECONDS.value),
        attention_share=_ATTENTION_SHARE.value,
        reference_python=_REFERENCE_PYTHON.value,
        reference_threads=_REFERENCE_THREADS.value,
    )


def _parse_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BenchmarkUsageError(f"--forward_seconds takes numbers (e.g. 10,47), got {text!r}") from None


def config_name() -> str | None:
    """The `--config` file as given (None without one)."""
    try:
        return config_flags.get_config_filename(flags.FLAGS["config"])
    except Exception:
        return None


def config_overrides() -> dict[str, Any]:
    """The `--config.<key>=` overrides, tuples as lists (as the JSON report holds them)."""
    try:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in config_flags.get_override_values(flags.FLAGS["config"]).items()
        }
    except Exception:
        return {}


def memory_estimate_main(config: Any) -> None:
    """`--memory_estimate`: print (and with `--output_json` write) the per-device estimates."""
    estimates = diffusion_memory.diffusion_memory_estimates(
        config, _MEMORY_MESH.value, _BATCH_SIZE.value, _REMAT_POLICIES.value
    )
    print(
        f"config: {config_name()} (task={config.task}, dtype={config.get('dtype', 'float32')}, "
        f"param_dtype={config.get('param_dtype', 'float32')})"
    )
    print(diffusion_memory.format_memory_estimates(estimates), flush=True)
    if _OUTPUT_JSON.value:
        with open(_OUTPUT_JSON.value, "w") as f:
            json.dump(
                {"config": config_name(), "overrides": config_overrides(), "memory_estimates": estimates}, f, indent=2
            )
        print(f"wrote {_OUTPUT_JSON.value}")


def suite_main() -> None:
    """`--suite`: every row of the suite measured in turn, one table, one JSON."""
    from stable_audio_jax.benchmark import suites

    if _CONFIG.value is not None:
        raise UserError("--suite measures its own configs: drop --config")
    if _PER_DEVICE_BATCH.value < 1:
        raise UserError(f"--per_device_batch must be >= 1, got {_PER_DEVICE_BATCH.value}")
    rows = suites.suite_rows(_SUITE.value, _SMOKE.value)
    base = options_from_flags()
    runs = []
    for i, row in enumerate(rows):
        config = suites.load_config(row.config, row.overrides)
        options = suites.row_options(row, config, base, _PER_DEVICE_BATCH.value)
        print(f"[{i + 1}/{len(rows)}] {row.name}: {row.config} {row.overrides} batch {options.batch_size}", flush=True)
        runs.append((row, runner.run_benchmark(config, options, config_name=row.config, overrides=row.overrides)))
    import jax

    if jax.process_index() != 0:
        return
    result = suites.suite_report(_SUITE.value, _SMOKE.value, runs)
    print()
    print(suites.format_suite(result), flush=True)
    if _OUTPUT_JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT_JSON.value)), exist_ok=True)
        with open(_OUTPUT_JSON.value, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {_OUTPUT_JSON.value}")


def main(argv):
    if _SUITE.value:
        if len(argv) > 1:
            raise UserError(f"unexpected arguments: {argv[1:]}")
        try:
            return suite_main()
        except ReferenceRunError as e:
            raise SystemExit(f"benchmark: {e}") from None
    if _COMPARE.value:
        if _CONFIG.value is not None:
            raise UserError("--compare reads two reports and measures nothing: drop --config")
        report.compare_main(argv[1:])
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
            counts = runner.param_counts(config)
            print(f"config: {config_name()} (task={config.task})")
            print("parameters (jax.eval_shape, nothing allocated):")
            print(report.format_params(counts), flush=True)
            return
        result = runner.run_benchmark(
            config, options_from_flags(), config_name=config_name(), overrides=config_overrides()
        )
    except ReferenceRunError as e:
        raise SystemExit(f"benchmark: {e}") from None
    import jax

    if jax.process_index() != 0:  # every process measures; process 0 reports
        return
    print()
    print(report.format_report(result), flush=True)
    if _OUTPUT_JSON.value:
        directory = os.path.dirname(os.path.abspath(_OUTPUT_JSON.value))
        os.makedirs(directory, exist_ok=True)
        with open(_OUTPUT_JSON.value, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
    cli.run(main)
