"""Random inpainting masks for training an inpainting-conditioned model, drawn inside jit.

The distribution is stable-audio-tools' `random_inpaint_mask` (models/inpainting.py); a mask
is 1 on a frame the model is given and 0 on a frame it must generate. Per example, with
`real` = the number of real (unpadded) latent frames:

    kind ~ Categorical(probabilities) over (RANDOM_SEGMENTS, FULL_MASK, CAUSAL_MASK),
           by default (0.1, 0.8, 0.1)
    FULL_MASK:       every frame 0, padding included (plain text-to-audio)
    real == 0:       every frame 1 (nothing to hide)
    CAUSAL_MASK:     prefix ~ U{0..real}; frames [prefix, real) are 0 (a continuation)
    RANDOM_SEGMENTS: n ~ U{1..max_segments}, longest = max(1, real // n); n spans, each of
                     length ~ U{1..longest} starting at ~ U{0..real - length}, are 0
                     (they may overlap)

Padding frames stay 1 unless the whole mask is FULL. The reference draws from Python's
global `random` per example on the host; here every example draws from its own key of a
`jax.random` key in one vectorised program, so a given seed does not reproduce the
reference's masks, only their distribution (`tests/test_inpaint_model.py` compares them).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

RANDOM_SEGMENTS, FULL_MASK, CAUSAL_MASK = 0, 1, 2  # the reference's `MaskType` values
DEFAULT_PROBABILITIES = (0.1, 0.8, 0.1)
DEFAULT_MAX_SEGMENTS = 10


def check_mask_options(probabilities: Sequence[float], max_segments: int) -> tuple[tuple[float, ...], int]:
    """The options as a tuple of three probabilities summing to 1 and a positive int;
    `ValueError` naming the bad one."""
    probabilities = tuple(float(p) for p in probabilities)
    if len(probabilities) != 3 or min(probabilities) < 0 or abs(sum(probabilities) - 1.0) > 1e-6:
        raise ValueError(
            "inpainting mask_type_probabilities must be three non-negative numbers summing to 1 "
            f"(random segments, full mask, causal), got {list(probabilities)}"
        )
    if int(max_segments) != max_segments or max_segments < 1:
        raise ValueError(f"inpainting max_mask_segments must be a positive integer, got {max_segments}")
    return probabilities, int(max_segments)


def random_inpaint_mask(
    rng: jax.Array,
    padding_mask: jax.Array,
    *,
    probabilities: Sequence[float] = DEFAULT_PROBABILITIES,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> tuple[jax.Array, jax.Array]:
    """Draw one mask per example.

    Args:
      rng: a PRNG key.
      padding_mask: `[batch, frames]`, true (or 1) on real frames; the real frames are a
        prefix (how the shards pad), so their count is what matters.
      probabilities: of (random segments, full mask, causal).
      max_segments: the most spans a random-segments mask hides.

    Returns:
      `(mask [batch, frames] float32, kind [batch] int32)`: 1 = given, 0 = generate; the
      kind drawn for each example (`RANDOM_SEGMENTS`, `FULL_MASK`, `CAUSAL_MASK`).
    """
    probabilities, max_segments = check_mask_options(probabilities, max_segments)
    batch, frames = padding_mask.shape
    real = jnp.sum(jnp.asarray(padding_mask) > 0, axis=1).astype(jnp.int32)  # [batch]
    kind_rng, count_rng, length_rng, start_rng, prefix_rng = jax.random.split(rng, 5)
    kind = jax.random.choice(kind_rng, 3, (batch,), p=jnp.asarray(probabilities)).astype(jnp.int32)
    position = jnp.arange(frames)[None, :]  # [1, frames]

    count = jax.random.randint(count_rng, (batch,), 1, max_segments + 1)
    longest = jnp.maximum(1, real // count)[:, None]  # [batch, 1]
    length = jax.random.randint(length_rng, (batch, max_segments), 1, longest + 1)
    start = jax.random.randint(start_rng, (batch, max_segments), 0, jnp.maximum(real[:, None] - length, 0) + 1)
    active = jnp.arange(max_segments)[None, :] < count[:, None]  # [batch, max_segments]
    in_span = (position[:, None, :] >= start[..., None]) & (position[:, None, :] < (start + length)[..., None])
    segments_hidden = jnp.any(in_span & active[..., None], axis=1)  # [batch, frames]

    prefix = jax.random.randint(prefix_rng, (batch, 1), 0, real[:, None] + 1)
    causal_hidden = (position >= prefix) & (position < real[:, None])

    hidden = jnp.where((kind == CAUSAL_MASK)[:, None], causal_hidden, segments_hidden)
    hidden = jnp.where((real == 0)[:, None], False, hidden)
    hidden = jnp.where((kind == FULL_MASK)[:, None], True, hidden)
    return jnp.where(hidden, 0.0, 1.0).astype(jnp.float32), kind
