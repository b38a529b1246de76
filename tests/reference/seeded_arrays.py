"""Arrays drawn from a seed with NumPy alone, so a reference script (in the PyTorch environment)
and a test (in ours) make the same weights and inputs: only the reference's outputs are stored.

    weights = seeded_state_dict(seed, [(name, shape), ...])   # name -> float32 array
    weights = golden_state_dict(load_golden(path))            # the weights a golden file was made with
"""

from __future__ import annotations

import numpy as np


def seeded_state_dict(seed: int, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """float32 arrays for `(name, shape)` in order: batch-norm variances in [0.5, 1.5], gains
    around 1, biases and means around 0, kernels ~ N(0, 1 / fan_in)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes:
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("num_batches_tracked"):
            value = np.zeros(shape)
        elif len(shape) == 1:
            value = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.normal(size=shape)
        else:
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))
        out[name] = value.astype(np.int64 if name.endswith("num_batches_tracked") else np.float32)
    return out


def music_like(seed: int, samples: int, sample_rate: int) -> np.ndarray:
    """A mono test signal `[samples]` float32: a few decaying partials plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    x = sum(
        rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * np.exp(-rng.uniform(0, 3) * (t % 0.5))
        for f in rng.uniform(60, 8000, 6)
    )
    return (x + 0.01 * rng.normal(size=samples)).astype(np.float32)


def load_golden(path: str) -> dict[str, np.ndarray]:
    """Every array of a golden `.npz`."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def golden_state_dict(golden: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded weights of a golden file that stores its state dict's `names` and zero-padded
    `shapes` (the reference scripts write both)."""
    shapes = [(str(n), tuple(int(d) for d in s if d)) for n, s in zip(golden["names"], golden["shapes"])]
    return seeded_state_dict(seed, shapes)


def state_dict_layout(shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """`names` and zero-padded `shapes` of a state dict, what a golden file stores for `golden_state_dict`."""
    padded = np.array([list(s) + [0] * (4 - len(s)) for _, s in shapes], np.int64)
    return {"names": np.array([k for k, _ in shapes]), "shapes": padded}
