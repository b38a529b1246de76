"""The tolerance every PyTorch-parity test in this folder uses (golden files in fixtures/)."""

import numpy as np


def assert_parity(got, want, what: str, rel: float = 1e-4) -> float:
    """max |got - want| <= rel * max(1, max |want|), in float64; returns the error (shown with -s)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs reference {want.shape}"
    err = float(np.max(np.abs(got - want)))
    tol = rel * max(1.0, float(np.max(np.abs(want))))
    print(f"{what}: max abs error {err:.3e} (tolerance {tol:.1e})")
    assert err <= tol, f"{what}: max abs error {err:.3e} > {tol:.1e}"
    return err
