"""Timing conditioning: `seconds_start` / `seconds_total` embeddings and the context they join.

Both reference models condition on two numbers per clip, the crop's start second and the
whole file's length in seconds (stable-audio-tools `models/conditioners.py`):

- SAO (`NumberConditioner`): clamp to [0, 512], normalise to u in [0, 1], learned Fourier
  features `[u, sin(2 pi u w), cos(2 pi u w)]` (257 dims for 256), Dense to 768 with bias.
- SA 1.0 (`IntConditioner`): an `Embedding(513, 768)` indexed by the clamped integer second.

Each number has its own embedder. The two embeddings are appended to the text tokens as
two extra cross-attention tokens (SA 1.0 and SAO) and, concatenated, form SAO's global
conditioning vector. Stable Audio Open Small conditions on `seconds_total` alone (one
token, a single embedding as the global vector): `TimingConditioner.ids` says which.

Shapes are channels last: numbers `[batch]`, tokens `[batch, length, features]`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.layers import torch_dense

Dtype = Any

TIMING_IDS = ("seconds_start", "seconds_total")  # the reference's conditioner ids, in its order


def check_timing_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    """`ids` as a tuple: a non-empty, ordered subset of `TIMING_IDS`; ValueError otherwise."""
    ids = tuple(ids)
    if not ids or len(set(ids)) != len(ids) or [i for i in TIMING_IDS if i in ids] != list(ids):
        raise ValueError(f"timing ids must be a non-empty ordered subset of {list(TIMING_IDS)}, got {list(ids)}")
    return ids


class LearnedFourierFeatures(nn.Module):
    """ADP's `LearnedPositionalEmbedding`: `[batch]` -> `[batch, dim + 1]`.

    Learned frequencies `weights` `[dim // 2]` (standard normal init); with
    `f = 2 pi x w` the output is `[x, sin f, cos f]`, in that order (raw value first).
    """

    dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.dim % 2:
            raise ValueError(f"LearnedFourierFeatures needs an even dim, got {self.dim}")
        weights = self.param(
            "weights",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None,)),
            (self.dim // 2,),
            self.param_dtype,
        )
        x = x.astype(jnp.float32)[:, None]  # Fourier features in float32: phases need the precision
        freqs = 2.0 * math.pi * x * weights.astype(jnp.float32)[None, :]
        return jnp.concatenate([x, jnp.sin(freqs), jnp.cos(freqs)], axis=-1).astype(self.dtype)


class TimePositionalEmbedding(nn.Module):
    """ADP's `TimePositionalEmbedding`: learned Fourier features then Dense with bias.

    `[batch]` -> `[batch, features]`. Submodules `fourier` (`weights` `[dim // 2]`) and
    `proj` (kernel `[dim + 1, features]`), as the reference's `embedding.0` / `embedding.1`.
    """

    features: int
    dim: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = LearnedFourierFeatures(self.dim, self.dtype, self.param_dtype, name="fourier")(x)
        return torch_dense(
            self.features, self.dim + 1, (None, "embed"), "proj", dtype=self.dtype, param_dtype=self.param_dtype
        )(h)


class NumberEmbedder(nn.Module):
    """SAO's number conditioner: clamp, normalise, learned Fourier features, Dense.

    `x` `[batch]` (seconds) is clamped to `[min_value, max_value]`, mapped to
    `u = (x - min) / (max - min)`, then embedded as `[u, sin 2 pi u w, cos 2 pi u w]`
    (`fourier_dim + 1` dims) and projected with bias -> `[batch, features]`.
    """

    features: int
    min_value: float = 0.0
    max_value: float = 512.0
    fourier_dim: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.max_value > self.min_value:
            raise ValueError(f"max_value {self.max_value} must exceed min_value {self.min_value}")
        x = jnp.clip(jnp.asarray(x, jnp.float32), self.min_value, self.max_value)
        u = (x - self.min_value) / (self.max_value - self.min_value)
        return TimePositionalEmbedding(self.features, self.fourier_dim, self.dtype, self.param_dtype, name="embedding")(
            u
        )


class SecondsTableEmbedder(nn.Module):
    """SA 1.0's per-second discrete embedding: `[batch]` seconds -> `[batch, features]`.

    The value is truncated to an integer and clamped to `[0, num_embeddings - 1]` (512 for
    the reference's 513 rows), then looked up in `embedding` `[num_embeddings, features]`
    (standard normal init, as `nn.Embedding`).
    """

    features: int
    num_embeddings: int = 513
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )
        index = jnp.clip(jnp.asarray(x).astype(jnp.int32), 0, self.num_embeddings - 1)
        return jnp.take(table, index, axis=0).astype(self.dtype)


class TimingConditioner(nn.Module):
    """Embeds `seconds_start` and `seconds_total` with separate parameters.

    `kind='number'`: SAO's `NumberEmbedder` (range [0, max_seconds]); `kind='table'`:
    SA 1.0's `SecondsTableEmbedder` (max_seconds + 1 rows). Submodules are named after
    the reference conditioner ids; `ids` picks which numbers are embedded (both, or
    `("seconds_total",)` for Stable Audio Open Small).

    `__call__(seconds_start [batch], seconds_total [batch])` returns
    `(tokens [batch, len(ids), features], global_cond [batch, len(ids) * features])`: the
    tokens appended to the text tokens for cross-attention, and their concatenation
    (`[start || total]` for SAO), the global conditioning.
    """

    features: int
    kind: Literal["number", "table"] = "number"
    max_seconds: int = 512
    ids: tuple[str, ...] = TIMING_IDS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, seconds_start: jax.Array, seconds_total: jax.Array) -> tuple[jax.Array, jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.kind not in ("number", "table"):
            raise ValueError(f"kind must be 'number' or 'table', got {self.kind!r}")

        def make(name: str) -> nn.Module:
            if self.kind == "number":
                return NumberEmbedder(self.features, 0.0, float(self.max_seconds), name=name, **kw)
            return SecondsTableEmbedder(self.features, self.max_seconds + 1, name=name, **kw)

        values = {"seconds_start": seconds_start, "seconds_total": seconds_total}
        embeddings = [make(name)(values[name]) for name in check_timing_ids(self.ids)]
        return jnp.stack(embeddings, axis=1), jnp.concatenate(embeddings, axis=-1)


def seconds_left_features(
    seconds_start: jax.Array,
    seconds_total: jax.Array,
    frames: int,
    frame_seconds: float,
    features: int,
    min_scale: float = 0.25,
    max_scale: float = 16.0,
) -> jax.Array:
    """Per-frame timing: how many seconds of the file are left at each latent frame.

    Frame `f` of a window starting at `seconds_start` lies at `seconds_start + (f + 1/2) *
    frame_seconds` in the file, so `left = seconds_total - that` is positive before the
    requested end and negative after it. The features are `tanh(left / scale)` at
    `features` scales spaced geometrically in `[min_scale, max_scale]` seconds: the small
    scales are a soft "before / after the end" switch, the large ones say how far away it is.

    Args:
      seconds_start, seconds_total: `[batch]`.
    Returns:
      `[batch, frames, features]` float32 in (-1, 1).
    """
    if features < 1 or frame_seconds <= 0:
        raise ValueError(f"need features >= 1 and frame_seconds > 0, got {features}, {frame_seconds}")
    centres = (jnp.arange(frames, dtype=jnp.float32) + 0.5) * frame_seconds  # [frames]
    start = jnp.asarray(seconds_start, jnp.float32)[:, None]
    left = jnp.asarray(seconds_total, jnp.float32)[:, None] - (start + centres[None, :])  # [batch, frames]
    scales = jnp.geomspace(min_scale, max_scale, features) if features > 1 else jnp.array([min_scale])
    return jnp.tanh(left[..., None] / scales.astype(jnp.float32))


def build_context(
    text_features: jax.Array, text_mask: jax.Array, timing_tokens: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Appends the timing tokens to the text tokens (the reference's cross-attention input).

    Args:
      text_features: `[batch, text_length, features]`.
      text_mask: `[batch, text_length]`, True (or 1) for real tokens.
      timing_tokens: `[batch, n, features]` from `TimingConditioner`; always unmasked.

    Returns:
      `(context [batch, text_length + n, features], mask [batch, text_length + n] bool)`.
    """
    if text_features.shape[-1] != timing_tokens.shape[-1]:
        raise ValueError(
            f"text features ({text_features.shape[-1]}) and timing tokens ({timing_tokens.shape[-1]}) differ in size"
        )
    if text_mask.shape != text_features.shape[:2]:
        raise ValueError(f"text_mask {text_mask.shape} does not match text_features {text_features.shape}")
    dtype = jnp.result_type(text_features, timing_tokens)
    context = jnp.concatenate([text_features.astype(dtype), timing_tokens.astype(dtype)], axis=1)
    return context, context_mask(text_mask, timing_tokens.shape[1])


def context_mask(text_mask: jax.Array, timing_tokens: int = 2) -> jax.Array:
    """The mask of `build_context`'s context: `[batch, text_length]` -> `[batch, text_length
    + timing_tokens]` bool, the timing tokens always real."""
    timing_mask = jnp.ones((text_mask.shape[0], timing_tokens), bool)
    return jnp.concatenate([jnp.asarray(text_mask).astype(bool), timing_mask], axis=1)
