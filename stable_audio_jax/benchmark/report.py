"""The benchmark report: its JSON (`build_report`), its printed tables, and `--compare` of two reports.

Pure Python (no JAX import), so `--compare` reads reports written on other machines without
starting a backend. The formatters read reports defensively: a section missing from a report
of an older version, or a garbled figure, reads n/a rather than raising.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Sequence

from stable_audio_jax.benchmark import peak_flops
from stable_audio_jax.benchmark.harness import Measurement
from stable_audio_jax.benchmark.options import Options
from stable_audio_jax.errors import UserError


def build_report(
    hardware: dict[str, Any],
    config: dict[str, Any],
    options: Options,
    shapes: dict[str, Any],
    counts: dict[str, int],
    measurements: Sequence[Measurement],
) -> dict[str, Any]:
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
        derived.update(
            train_alternating_seconds_per_step=pair_seconds / 2,
            train_alternating_items_per_second=2 * gen.batch_size / pair_seconds,
            train_alternating_generator_updates_per_second=1.0 / pair_seconds,
        )
    for name, reference in by_name.items():
        ours = by_name.get(name[len(REFERENCE_PREFIX) :]) if name.startswith(REFERENCE_PREFIX) else None
        if ours is not None:
            derived[ours.name + RATIO_SUFFIX] = ours.median_seconds / reference.median_seconds
    return derived


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
    reference = (
        [
            f"reference: PyTorch stable-audio-tools {reference.get('stable_audio_tools_version')}, torch "
            f"{reference.get('torch_version')}, {reference.get('threads')} threads, {reference.get('dtype')}, "
            f"{_fmt_count(reference.get('params'))} DiT parameters ({reference.get('python')}), host load average "
            f"before/after {reference.get('host_load_average_before')} / {reference.get('host_load_average_after')}"
        ]
        if isinstance(reference, dict)
        else []
    )
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
    header = (
        ["measurement", "lower s", "compile s", "median s", "min s", "clips/s", "audio s/s", "GFLOP/dev", "TFLOP/s/dev"]
        + (["MFU"] if peak else [])
        + ["XLA mem/dev", "peak mem"]
    )
    rows = []
    for m in report["measurements"]:
        flops = m["flops_per_device"]
        row = [
            m["name"],
            _fmt(m["lower_seconds"], ".2f"),
            _fmt(m["compile_seconds"], ".2f"),
            f"{m['median_seconds']:.4f}",
            f"{m['min_seconds']:.4f}",
            f"{m['items_per_second']:.3f}",
            f"{m['audio_seconds_per_second']:.3f}",
            _fmt(None if flops is None else flops / 1e9, ".2f"),
            _fmt(m["tflops_per_second_per_device"], ".4f"),
        ]
        if peak:
            row.append(_fmt_percent(m["mfu"]))
        row += [_fmt_bytes(m["compiled_bytes_per_device"]), _fmt_bytes(m["peak_bytes_in_use"])]
        rows.append(row)
    lines += format_table(header, rows)
    derived = report["derived"]
    if "train_alternating_seconds_per_step" in derived:
        lines.append(
            f"train alternating generator/discriminator: "
            f"{derived['train_alternating_seconds_per_step']:.4f} s/step, "
            f"{derived['train_alternating_items_per_second']:.3f} clips/s"
        )
    for key, ratio in derived.items():
        if key.endswith(RATIO_SUFFIX):
            name = key[: -len(RATIO_SUFFIX)]
            lines.append(
                f"{name}: median ours / reference = {ratio:.3f} "
                f"({'ours' if ratio < 1 else 'the reference'} is {max(ratio, 1 / ratio):.2f}x faster)"
            )
    lines += ["", "rows:"] + [
        f"  {m['name']}: {m['description']}, inputs {m['input_shapes']}" for m in report["measurements"]
    ]
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
        isinstance(m, dict) and isinstance(m.get("name"), str) for m in measurements
    ):
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
    lines += [
        "",
        "B/A: B's figure over A's; on the step time B/A < 1 means B is faster (A/B is B's speedup)",
        "n/a: not in that report (or no figure: e.g. no memory statistics on CPU, no MFU without a peak)",
    ]
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
