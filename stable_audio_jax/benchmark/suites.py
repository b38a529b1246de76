"""Benchmark suites: several configs measured in one command, one table and one JSON.

    python launch/benchmark.py --suite=paper --output_json=paper_h100.json
    python launch/benchmark.py --suite=paper --smoke            # tiny shapes, seconds (CPU, CI)
    python launch/benchmark.py --suite=scaling --per_device_batch=1 --output_json=scaling.json
    python launch/benchmark.py --compare paper_h100.json paper_v5p.json

The `paper` suite holds the figures a team compares GPU and TPU with: the train step of the
SA 1.0 U-Net (95 s window) and of the SAO DiT (47 s) at `--per_device_batch` examples per
data-parallel device, with MFU; generation of 95 s with SA 1.0 and of 47 s with SAO (100
DPM-Solver++(3M) SDE steps with CFG, VAE decode included, batch 1; the SAO row also runs 8
pingpong steps without CFG, the few-step path); SAO VAE encode and decode throughput. Every
run is `runner.run_benchmark` of one config, as `--config` would measure it (random weights,
seeded inputs, bfloat16). `--smoke` runs the same rows on the tiny configs at small shapes,
so CI keeps the command working; its figures say nothing about an accelerator.

The `scaling` suite is the growth of cost with audio length: for the SA 1.0 U-Net and the
SAO DiT at 10, 30, 47 and 95 s, the train step and one CFG-batch forward (one guided sampler
step; N steps cost N of them), each with its attention calls timed alone, so the table shows
how much of each step attention takes as the sequence grows (`--suite=scaling --smoke`: the
tiny configs at 1.5 and 3 s).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Callable, Sequence

from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Stable Audio 1.0's and SAO's training windows: 4,194,304 and 2,097,152 samples at 44.1 kHz.
SA1_SECONDS, SAO_SECONDS = 95.1, 47.55


@dataclasses.dataclass(frozen=True)
class SuiteRow:
    """One run of a suite: `config` (a path under the repository, `path:argument` allowed) with
    `overrides` (dotted keys, as `--config.<key>=`) and the benchmark `options` (the fields of
    `Options`); `batch_size` is `batch_per_device` x the data-parallel devices (None: the
    command's `--per_device_batch`)."""

    name: str
    config: str
    overrides: dict[str, Any]
    options: dict[str, Any]
    batch_per_device: int | None = None


def _rows(
    *,
    unet: str,
    dit: str,
    unet_vae: str,
    dit_vae: str,
    unet_seconds: float,
    dit_seconds: float,
    sample_steps: int,
    flow_steps: int,
    dtype: str,
) -> tuple[SuiteRow, ...]:
    """The paper suite's rows for these configs and shapes (the smoke suite is the same with tiny ones)."""
    bf = {"dtype": dtype}
    train = dict(sample_steps=0, flow_steps=0)
    generate = dict(skip_train=True, sample_steps=sample_steps, cfg_scale=6.0)
    return (
        SuiteRow("sa1_unet_train", unet, bf, dict(train, seconds=unet_seconds)),
        SuiteRow("sao_dit_train", dit, bf, dict(train, seconds=dit_seconds)),
        SuiteRow("sa1_generate", unet, bf, dict(generate, seconds=unet_seconds, vae_config=unet_vae), 1),
        SuiteRow(
            "sao_generate",
            dit,
            bf,
            dict(generate, seconds=dit_seconds, vae_config=dit_vae, cfg_scale=7.0, flow_steps=flow_steps),
            1,
        ),
        SuiteRow("sao_vae_codec", dit_vae, bf, dict(skip_train=True, seconds=dit_seconds), 1),
    )


SCALING_SECONDS = (10.0, 30.0, 47.0, 95.0)


def _scaling_rows(*, unet: str, dit: str, seconds: Sequence[float], dtype: str) -> tuple[SuiteRow, ...]:
    """One row per backbone and length: the train step and one CFG-batch forward (a sampler
    step: N-step guided sampling costs N of them) at that many seconds of audio, each with its
    attention calls timed alone (`--attention_share`)."""
    rows = []
    for backbone, config in (("unet", unet), ("dit", dit)):
        for s in seconds:
            options = dict(seconds=s, forward_seconds=(s,), sample_steps=0, flow_steps=0, attention_share=True)
            rows.append(SuiteRow(f"{backbone}_{s:g}s", config, {"dtype": dtype}, options))
    return tuple(rows)


SUITES: dict[str, Callable[[], tuple[SuiteRow, ...]]] = {
    "paper": lambda: _rows(
        unet="configs/diffusion_sa1.py",
        dit="configs/dit_sao.py",
        unet_vae="configs/vae_sa1.py",
        dit_vae="configs/vae_sao.py",
        unet_seconds=SA1_SECONDS,
        dit_seconds=SAO_SECONDS,
        sample_steps=100,
        flow_steps=8,
        dtype="bfloat16",
    ),
    "paper_smoke": lambda: _rows(
        unet="configs/diffusion_tiny.py",
        dit="configs/dit_tiny.py",
        unet_vae="configs/vae_tiny.py",
        dit_vae="configs/vae_tiny.py",
        unet_seconds=1.5,
        dit_seconds=1.5,
        sample_steps=2,
        flow_steps=2,
        dtype="float32",
    ),
    "scaling": lambda: _scaling_rows(
        unet="configs/diffusion_sa1.py", dit="configs/dit_sao.py", seconds=SCALING_SECONDS, dtype="bfloat16"
    ),
    "scaling_smoke": lambda: _scaling_rows(
        unet="configs/diffusion_tiny.py", dit="configs/dit_tiny.py", seconds=(1.5, 3.0), dtype="float32"
    ),
}


def suite_rows(name: str, smoke: bool) -> tuple[SuiteRow, ...]:
    key = f"{name}_smoke" if smoke else name
    if name not in SUITES or key not in SUITES:
        raise BenchmarkUsageError(
            f"--suite: unknown suite {name!r}; known: {sorted(k for k in SUITES if '_' not in k)}"
        )
    return SUITES[key]()


def load_config(spec: str, overrides: dict[str, Any]) -> Any:
    """`get_config(argument)` of the repository's config file `spec` (`path` or `path:argument`),
    with `overrides` applied."""
    path, _, argument = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("suite_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(argument) if argument else module.get_config()
    with config.unlocked():
        config.update_from_flattened_dict(overrides)
    return config


def row_options(row: SuiteRow, config: Any, base: Options, per_device_batch: int) -> Options:
    """The row's `Options`: the command's (steps, warm-up, devices, peak) with the row's fields,
    the batch from the data-parallel devices of the config's mesh."""
    from stable_audio_jax import parallel
    from stable_audio_jax.benchmark.harness import make_mesh, mesh_rules

    data_parallel = parallel.data_parallel_size(make_mesh(config, base.num_devices), mesh_rules(config))
    per_device = per_device_batch if row.batch_per_device is None else row.batch_per_device
    return dataclasses.replace(base, **row.options, batch_size=per_device * data_parallel)


def suite_report(name: str, smoke: bool, runs: Sequence[tuple[SuiteRow, dict[str, Any]]]) -> dict[str, Any]:
    """One JSON for the suite: each run's report, and every measurement named `<row>/<name>`
    (so `--compare` reads two suite reports like two single ones)."""
    measurements = [
        dict(m, name=f"{row.name}/{m['name']}", row=row.name) for row, result in runs for m in result["measurements"]
    ]
    return {
        "suite": name,
        "smoke": smoke,
        "hardware": runs[0][1]["hardware"] if runs else {},
        "config": {"suite": name, "smoke": smoke, "rows": [dataclasses.asdict(row) for row, _ in runs]},
        "runs": [{"row": row.name, "report": result} for row, result in runs],
        "measurements": measurements,
    }


def format_suite(report: dict[str, Any]) -> str:
    """A compact table of every measurement of the suite."""

    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    lines = [
        f"suite {report['suite']}{' (smoke: tiny configs, not a measurement of the hardware)' if report['smoke'] else ''}"
        f" on {report['hardware'].get('device_kind', '?')} x{report['hardware'].get('device_count', '?')}",
        f"{'measurement':<44} {'median s':>10} {'audio s/s':>10} {'MFU':>7} {'peak mem GiB':>13}",
    ]
    for m in report["measurements"]:
        peak = m.get("peak_bytes_in_use")
        lines.append(
            f"{m['name']:<44} {fmt(m.get('median_seconds'), '10.4f')} "
            f"{fmt(m.get('audio_seconds_per_second'), '10.2f')} "
            f"{'n/a' if m.get('mfu') is None else format(100 * m['mfu'], '6.1f') + '%':>7} "
            f"{'n/a' if peak is None else format(peak / 2**30, '13.2f')}"
        )
    shares = [(run["row"], run["report"]["shapes"].get("attention_share", {})) for run in report["runs"]]
    if any(share for _, share in shares):
        lines.append("attention alone (attention/<measurement>), share of the measurement's time / XLA FLOPs:")
        for row, share in shares:
            for measurement, figures in share.items():
                flops = "n/a" if figures.get("flops") is None else f"{100 * figures['flops']:.1f}%"
                lines.append(f"  {row}/{measurement:<36} {100 * figures['seconds']:6.1f}% {flops:>7}")
    return "\n".join(lines)
