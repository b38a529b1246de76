"""Import the timing conditioners (`seconds_start`, `seconds_total`) of a stable-audio-tools checkpoint.

Reference keys (`models/conditioners.py`), for `id` in `seconds_start`, `seconds_total`:

    SAO, `NumberConditioner` (kind 'number'):
    conditioner.conditioners.<id>.embedder.embedding.0.weights   [fourier_dim / 2]
    conditioner.conditioners.<id>.embedder.embedding.1.weight    [features, fourier_dim + 1]
    conditioner.conditioners.<id>.embedder.embedding.1.bias      [features]

    SA 1.0, `IntConditioner` (kind 'table'):
    conditioner.conditioners.<id>.int_embedder.weight            [max_seconds + 1, features]

`embedding.0` is the learned Fourier features and `embedding.1` the Linear, which map onto
`models.conditioning.TimingConditioner(kind='number')` as
`<id>/embedding/fourier/weights` and `<id>/embedding/proj/{kernel, bias}` (kernel
transposed); the integer table is `<id>/embedding` of `kind='table'`. The number clamp
range [0, 512] is not stored; it is the conditioner's `max_seconds`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.convert.state_dict import StateDictReader, check_tree, linear_kernel
from stable_audio_jax.models.conditioning import TIMING_IDS, TimingConditioner, check_timing_ids

Params = dict[str, Any]

CONDITIONER_PREFIX = "conditioner.conditioners."
FOURIER_DIM = 256  # the reference NumberEmbedder's fixed width, also ours (NumberEmbedder.fourier_dim)


def _number_embedder(reader: StateDictReader, features: int) -> Params:
    weights = reader.take("embedder.embedding.0.weights", (FOURIER_DIM // 2,))
    kernel = reader.take("embedder.embedding.1.weight", (features, FOURIER_DIM + 1))
    bias = reader.take("embedder.embedding.1.bias", (features,))
    return {
        "embedding": {
            "fourier": {"weights": np.asarray(weights, np.float32)},
            "proj": {"kernel": np.asarray(linear_kernel(kernel), np.float32), "bias": np.asarray(bias, np.float32)},
        }
    }


def _table_embedder(reader: StateDictReader, features: int, max_seconds: int) -> Params:
    return {"embedding": np.asarray(reader.take("int_embedder.weight", (max_seconds + 1, features)), np.float32)}


def timing_params_from_state_dict(
    reader: StateDictReader,
    features: int | None = None,
    *,
    kind: str = "number",
    max_seconds: int = 512,
    ids: tuple[str, ...] = TIMING_IDS,
) -> Params:
    """The `TimingConditioner(features, kind, max_seconds)` params, float32.

    Args:
      reader: scoped to the checkpoint root (the keys are looked up under
        `CONDITIONER_PREFIX`). Only the two timing conditioners' tensors are taken; the
        caller decides when to `finish()`.
      features: the embedding width (768 for SAO and SA 1.0); None reads it from the
        checkpoint.
      kind: 'number' (SAO's `NumberConditioner`) or 'table' (SA 1.0's `IntConditioner`).
      max_seconds: the table's last row (512); the number embedder's clamp is not stored.
      ids: the conditioners to read (both; SAO Small has `seconds_total` only).

    Raises:
      ConversionError naming the key for a missing tensor or a wrong shape.
    """
    scoped = reader.scoped(CONDITIONER_PREFIX)
    ids = check_timing_ids(ids)
    if kind not in ("number", "table"):
        raise ValueError(f"kind must be 'number' or 'table', got {kind!r}")
    if features is None:
        probe = "embedder.embedding.1.bias" if kind == "number" else "int_embedder.weight"
        features = int(np.shape(scoped.take(f"{ids[0]}.{probe}"))[-1])
    if kind == "number":
        params = {name: _number_embedder(scoped.scoped(f"{name}."), features) for name in ids}
    else:
        params = {name: _table_embedder(scoped.scoped(f"{name}."), features, max_seconds) for name in ids}
    seconds = jax.ShapeDtypeStruct((1,), jnp.float32)
    abstract = jax.eval_shape(
        TimingConditioner(features, kind=kind, max_seconds=max_seconds, ids=ids).init,
        jax.random.key(0),
        seconds,
        seconds,
    )
    check_tree(params, abstract["params"], "timing conditioner")
    return params
