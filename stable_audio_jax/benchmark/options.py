"""What a benchmark measures and how often (`Options`), and its usage error.

Pure Python (no JAX import): the script builds and checks an `Options` before any backend starts.
"""

from __future__ import annotations

import dataclasses
import os

from stable_audio_jax.errors import UserError


class BenchmarkUsageError(UserError, ValueError):
    """A flag or config value that makes the requested benchmark impossible (one line, exit 2)."""


def forward_row_name(seconds: float) -> str:
    """The name of the diffusion forward row at `seconds` of audio: `forward/<s>s_cfg`."""
    return f"forward/{seconds:g}s_cfg"


@dataclasses.dataclass(frozen=True)
class Options:
    """What to measure and how often (the non-config flags); the report's `options` section."""

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
    flow_steps: int = 0  # diffusion: pingpong steps of the few-step row, no CFG (0: no such row)
    vae_config: str | None = None
    forward_seconds: tuple[float, ...] = ()  # diffusion: one forward/<s>s_cfg row per length
    attention_share: bool = False  # diffusion: time the forward / train rows' attention calls alone too
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
        if self.flow_steps < 0:
            raise BenchmarkUsageError(f"--flow_steps must be >= 0 (0: no few-step row), got {self.flow_steps}")
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
