"""The PyTorch reference rows (`--reference_python`): the stable-audio-tools DiT timed at our forward lengths.

`tests/reference/time_reference_dit.py` runs under the given interpreter (torch and
stable-audio-tools; `PYTHONPATH` starts with the import shims next to it) with the config's
DiT shape and the frames, batch, steps and warm-up of the `forward/<s>s_cfg` rows, and
prints one JSON line of step times; each length becomes a row `reference/forward/<s>s_cfg`
(median and throughput only: nothing is compiled or cost-analysed).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from stable_audio_jax.benchmark.diffusion_rows import forward_lengths
from stable_audio_jax.benchmark.harness import Measurement, load_average
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options

# The repository checkout this package sits in: the reference script lives in its tests/.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
        raise BenchmarkUsageError(
            "--reference_python times the reference DiT: it needs a DiT config "
            f"(configs/dit_*.py), not a {model.backbone} one"
        )
    dit = model.dit
    return {
        "io_channels": dit.io_channels,
        "embed_dim": dit.embed_dim,
        "depth": dit.depth,
        "num_heads": dit.num_heads,
        "cond_token_dim": dit.cond_token_dim,
        "global_cond_dim": dit.global_cond_dim,
        "ff_mult": dit.ff_mult,
        "text_tokens": model.text_length + 2,
    }


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
        raise ReferenceRunError(
            f"reference timing with {python} failed (exit {proc.returncode}): "
            f"{_last_line(proc.stderr) or '(no stderr)'}"
        )
    try:
        result = json.loads(_last_line(proc.stdout))
        rows = result["rows"]
    except (ValueError, KeyError, TypeError):
        raise ReferenceRunError(
            f"reference timing with {python} printed no JSON result; last stdout line: "
            f"{_last_line(proc.stdout)!r}, last stderr line: {_last_line(proc.stderr)!r}"
        ) from None
    if len(rows) != len(arguments["frames"].split(",")):
        raise ReferenceRunError(
            f"reference timing with {python} returned {len(rows)} rows for frames {arguments['frames']}"
        )
    return result


def reference_forward(config: Any, options: Options) -> tuple[dict[str, Any], list[Measurement]]:
    """Time the PyTorch reference DiT at the `--forward_seconds` lengths (same frames and batch as
    the `forward/...` rows): its section of the hardware report and rows `reference/forward/...`
    (median and throughput only: nothing is compiled or cost-analysed)."""
    arguments = reference_dit_arguments(config)
    lengths = forward_lengths(config, options)
    b = options.batch_size
    arguments.update(
        frames=",".join(str(length.frames) for length in lengths),
        batch_size=b,
        steps=options.steps,
        warmup=options.warmup,
        threads=reference_threads(options.reference_threads),
        seed=config.seed,
    )
    load_before = load_average()
    result = run_reference_script(options.reference_python, arguments)
    section = {
        "python": options.reference_python,
        "dtype": "float32",
        "host_load_average_before": load_before,
        "host_load_average_after": load_average(),
        **{
            k: result.get(k)
            for k in ("torch_version", "stable_audio_tools_version", "threads", "params", "build_seconds")
        },
    }
    rows = []
    for length, row in zip(lengths, result["rows"]):
        rows.append(
            Measurement(
                name="reference/" + length.name,
                description=f"PyTorch stable_audio_tools DiffusionTransformer forward, float32 eval, no_grad, "
                f"torch {result.get('torch_version')} with {result.get('threads')} threads, on the "
                f"CFG batch 2B={2 * b} at {length.frames} frames (conditioners not included)",
                batch_size=b,
                audio_seconds_per_item=length.window_seconds,
                input_shapes={
                    "x": [2 * b, arguments["io_channels"], length.frames],
                    "cross_attn_cond": [2 * b, arguments["text_tokens"], arguments["cond_token_dim"]],
                    "global_embed": [2 * b, arguments["global_cond_dim"]],
                },
                lower_seconds=None,
                compile_seconds=None,
                step_seconds=[float(s) for s in row["step_seconds"]],
                flops_per_device=None,
                peak_bytes_in_use=None,
                compiled_memory=None,
            )
        )
        print(f"  measured {rows[-1].name}: median {rows[-1].median_seconds:.4f} s", flush=True)
    return section, rows
