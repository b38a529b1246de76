"""Import SAO's timing conditioners (`NumberConditioner` x 2) from a stable-audio-tools checkpoint.

Reference keys (SPEC.md 6.1), for `id` in `seconds_start`, `seconds_total`:

    conditioner.conditioners.<id>.embedder.embedding.0.weights   [fourier_dim / 2]
    conditioner.conditioners.<id>.embedder.embedding.1.weight    [features, fourier_dim + 1]
    conditioner.conditioners.<id>.embedder.embedding.1.bias      [features]

`embedding.0` is the learned Fourier features and `embedding.1` the Linear, which map onto
`models.conditioning.TimingConditioner(kind='number')` as
`<id>/embedding/fourier/weights` and `<id>/embedding/proj/{kernel, bias}` (kernel
transposed). The clamp range [0, 512] is not stored; it is the conditioner's `max_seconds`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.convert.state_dict import StateDictReader, check_tree, linear_kernel
from stable_audio_jax.models.conditioning import TimingConditioner

Params = dict[str, Any]

CONDITIONER_PREFIX = "conditioner.conditioners."
TIMING_IDS = ("seconds_start", "seconds_total")
FOURIER_DIM = 256  # the reference NumberEmbedder's fixed width, also ours (NumberEmbedder.fourier_dim)


def _number_embedder(reader: StateDictReader, features: int) -> Params:
    weights = reader.take("embedder.embedding.0.weights", (FOURIER_DIM // 2,))
    kernel = reader.take("embedder.embedding.1.weight", (features, FOURIER_DIM + 1))
    bias = reader.take("embedder.embedding.1.bias", (features,))
    return {"embedding": {"fourier": {"weights": np.asarray(weights, np.float32)},
                          "proj": {"kernel": np.asarray(linear_kernel(kernel), np.float32),
                                   "bias": np.asarray(bias, np.float32)}}}


def timing_params_from_state_dict(reader: StateDictReader, features: int | None = None) -> Params:
    """The `TimingConditioner(features, kind='number')` params, float32.

    Args:
      reader: scoped to the checkpoint root (the keys are looked up under
        `CONDITIONER_PREFIX`). Only the two timing conditioners' tensors are taken; the
        caller decides when to `finish()`.
      features: the embedding width (768 for SAO); None reads it from the checkpoint.

    Raises:
      ConversionError naming the key for a missing tensor or a wrong shape.
    """
    scoped = reader.scoped(CONDITIONER_PREFIX)
    if features is None:
        features = int(np.shape(scoped.take(f"{TIMING_IDS[0]}.embedder.embedding.1.bias"))[0])
    params = {name: _number_embedder(scoped.scoped(f"{name}."), features) for name in TIMING_IDS}
    seconds = jax.ShapeDtypeStruct((1,), jnp.float32)
    abstract = jax.eval_shape(TimingConditioner(features, kind="number").init, jax.random.key(0), seconds, seconds)
    check_tree(params, abstract["params"], "timing conditioner")
    return params
