"""Peak dense bf16 TFLOP/s per device, looked up from `jax.Device.device_kind`, for MFU.

The figures are the vendors' dense (no 2:4 sparsity) bf16 matrix-unit peaks of one device
(one GPU; one TPU chip as JAX exposes it). They are used whatever the run's dtype, so the
MFU of an fp32 run is measured against the bf16 peak. Pure Python (no JAX import), so the
benchmark's `--compare` mode and the tests read it without starting a backend.
"""

from __future__ import annotations

import re

# (pattern on the lower-cased device kind, label, TFLOP/s); the first match wins, so the
# more specific variants come before the bare model name.
PEAK_TFLOPS_TABLE: tuple[tuple[str, str, float], ...] = (
    # A PCIe or NVL H100/H200 runs at lower clocks and power than the SXM part: matching
    # them as "H100" would overstate the peak and understate MFU.
    (r"\bh100\b.*\bpcie\b", "H100 PCIe", 756.0),
    (r"\bh100\b.*\bnvl\b", "H100 NVL", 835.0),
    (r"\bh100\b", "H100", 989.0),  # SXM, e.g. "NVIDIA H100 80GB HBM3"; 1979 assumes sparsity
    (r"\bh200\b.*\bnvl\b", "H200 NVL", 835.0),
    (r"\bh200\b", "H200", 989.0),
    (r"\ba100\b", "A100", 312.0),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB": same peak
    # "TPU v4 lite" (v4i) is a different, smaller chip: not matched.
    (r"\btpu\s*v4\b(?!\s*lite)", "TPU v4", 275.0),
    # v5e reports itself as "TPU v5 lite"; v5p as "TPU v5" (or "TPU v5p").
    (r"\btpu\s*v5\s*(?:lite|e)\b", "TPU v5e", 197.0),
    (r"\btpu\s*v5p?\b", "TPU v5p", 459.0),
    (r"\btpu\s*v6\s*(?:lite|e)\b|\btrillium\b", "TPU v6e", 918.0),
)


def table_peak(device_kind: str | None) -> tuple[str, float] | None:
    """`(label, peak dense bf16 TFLOP/s)` of a device kind, or None when it is not in the table (e.g. CPU)."""
    kind = (device_kind or "").strip().lower()
    for pattern, label, tflops in PEAK_TFLOPS_TABLE:
        if re.search(pattern, kind):
            return label, tflops
    return None


def resolve_peak(flag_tflops: float | None, device_kind: str | None) -> tuple[float | None, str | None]:
    """The peak TFLOP/s per device that MFU is computed against, and where it came from.

    A positive `flag_tflops` (`--peak_tflops`) wins over the table; otherwise the table
    entry of `device_kind` (source "table: <label> bf16 dense"); otherwise `(None, None)`:
    no MFU.
    """
    if flag_tflops is not None and flag_tflops > 0:
        return float(flag_tflops), "flag"
    found = table_peak(device_kind)
    if found is None:
        return None, None
    label, tflops = found
    return tflops, f"table: {label} bf16 dense"
