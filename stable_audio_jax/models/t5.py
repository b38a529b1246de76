"""The T5 encoder (the text conditioner of Stable Audio Open), in linen.

Reference: SAO conditions its DiT on the `last_hidden_state` of Hugging Face's `t5-base`
`T5EncoderModel` for prompts tokenized to exactly 128 tokens (EOS appended, padded with
id 0), padded positions zeroed (as stable-audio-tools' T5Conditioner). Real T5 weights are not available offline
(no registry ships them); `stable_audio_jax.convert.t5_checkpoint` imports any HF T5 folder and the
module also runs with random weights.

Architecture (pre-norm; RMSNorm without mean subtraction or bias; no biases anywhere):

    h = embed[ids]                                                  # no scaling, no positions
    bias = rel_bias[bucket(key_pos - query_pos)]  [1, heads, L, L]  # made once, shared by all layers
    per layer:  h = h + Out(Attn(Q(n), K(n), V(n), bias, key_mask)),  n = RMSNorm(h)
                h = h + FFN(RMSNorm(h))
    out = RMSNorm(h)

- Attention logits are `q . k` (no `1/sqrt(d_kv)`: T5 folds it into the initialisation).
- FFN: `wo(relu(wi x))` (original T5, `feed_forward_proj="relu"`) or
  `wo(gelu_tanh(wi_0 x) * wi_1 x)` (T5 v1.1 / Flan-T5, `"gated-gelu"`).
- Dropout is not implemented: the conditioner is frozen (SAO runs it in eval mode).

Shapes: ids and mask `[batch, length]`; hidden states `[batch, length, d_model]`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.attention import MultiHeadAttention
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.sharding import BATCH_LENGTH_HIDDEN, constrain

Dtype = Any

_FEED_FORWARDS = ("relu", "gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Encoder hyper-parameters, named as in HF `T5Config` (defaults: `t5-base`)."""

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: Literal["relu", "gated-gelu"] = "relu"

    def __post_init__(self):
        if self.feed_forward_proj not in _FEED_FORWARDS:
            raise ValueError(f"feed_forward_proj must be one of {_FEED_FORWARDS}, got {self.feed_forward_proj!r}")
        if self.relative_attention_num_buckets < 4 or self.relative_attention_num_buckets % 2:
            # Bidirectional buckets: half per direction, half of those exact, the rest logarithmic.
            raise ValueError(
                f"relative_attention_num_buckets must be even and >= 4, got {self.relative_attention_num_buckets}"
            )
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
            raise ValueError(
                f"relative_attention_max_distance {self.relative_attention_max_distance} must exceed "
                f"the {self.relative_attention_num_buckets // 4} exact buckets per direction"
            )

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "T5Config":
        return cls(**checked_fields(cls, d, "T5"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "T5Config":
        """From a HF `config.json` dict of a T5 model; decoder-only fields are ignored.

        Raises ValueError for a missing size field or an unsupported `feed_forward_proj`.
        """
        model_type = hf.get("model_type", "t5")
        if model_type != "t5":
            raise ValueError(f"config.json has model_type {model_type!r}, expected 't5'")
        try:
            return cls(
                vocab_size=int(hf["vocab_size"]),
                d_model=int(hf["d_model"]),
                d_kv=int(hf["d_kv"]),
                d_ff=int(hf["d_ff"]),
                num_layers=int(hf["num_layers"]),
                num_heads=int(hf["num_heads"]),
                relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
                relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
                layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
                feed_forward_proj=hf.get("feed_forward_proj", "relu"),
            )
        except KeyError as e:
            raise ValueError(f"T5 config.json lacks the field {e.args[0]!r}") from e

    @classmethod
    def t5_base(cls) -> "T5Config":
        """HF `t5-base`, the SAO conditioner: encoder 109,628,544 params."""
        return cls()

    @classmethod
    def tiny(cls, vocab_size: int = 512) -> "T5Config":
        """A small T5 encoder for tests."""
        return cls(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
        )


def expected_num_params(config: T5Config) -> int:
    """Closed form, with V vocab, D d_model, I = heads * d_kv, F d_ff, B buckets, N heads:

        V*D (embedding) + B*N (relative bias) + D (final norm)
        + layers * (4*D*I + (2 or 3)*D*F + 2*D)

    t5-base: 24,674,304 + 384 + 768 + 12 * 7,079,424 = 109,628,544.
    """
    c = config
    inner = c.num_heads * c.d_kv
    per_layer = 4 * c.d_model * inner + (3 if c.is_gated else 2) * c.d_model * c.d_ff + 2 * c.d_model
    return (
        c.vocab_size * c.d_model + c.relative_attention_num_buckets * c.num_heads + c.d_model + c.num_layers * per_layer
    )


def relative_position_bucket(relative_position: jax.Array, num_buckets: int = 32, max_distance: int = 128) -> jax.Array:
    """Bidirectional T5 bucket of `relative_position = key_pos - query_pos` (any int shape).

    Half the buckets are for keys after the query, half for keys at or before it. Within
    a half, distances below `num_buckets // 4` get a bucket each; larger ones share
    logarithmically wider buckets, and every distance >= `max_distance` the last one.
    Returns int32 of the same shape, in `[0, num_buckets)`.
    """
    half = num_buckets // 2
    exact = half // 2
    bucket = jnp.where(relative_position > 0, half, 0)
    distance = jnp.abs(relative_position)
    # Clamp before the log so distance 0 gives no -inf (those positions take the exact branch).
    scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / math.log(max_distance / exact)
    far = jnp.minimum(exact + (scaled * (half - exact)).astype(jnp.int32), half - 1)
    return (bucket + jnp.where(distance < exact, distance, far)).astype(jnp.int32)


class RMSNorm(nn.Module):
    """T5's layer norm: `x / sqrt(mean(x^2) + eps) * scale`, statistics in float32.

    `[..., features] -> [..., features]` in `dtype`.
    """

    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return x32.astype(self.dtype) * scale.astype(self.dtype)


def _dense(features: int, name: str, axes: tuple[str, str], dtype: Dtype, param_dtype: Dtype) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=False,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
    )


class T5FeedForward(nn.Module):
    """`wo(relu(wi x))` or `wo(gelu_tanh(wi_0 x) * wi_1 x)`: `[..., d_model]` -> same."""

    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if c.is_gated:
            h = jax.nn.gelu(_dense(c.d_ff, "wi_0", ("embed", "mlp"), **kw)(x), approximate=True)
            h = h * _dense(c.d_ff, "wi_1", ("embed", "mlp"), **kw)(x)
        else:
            h = jax.nn.relu(_dense(c.d_ff, "wi", ("embed", "mlp"), **kw)(x))
        return _dense(c.d_model, "wo", ("mlp", "embed"), **kw)(h)


def _clamp_half(x: jax.Array) -> jax.Array:
    """As HF T5 in float16: keep the residual stream finite (t5 activations can overflow)."""
    if x.dtype != jnp.float16:
        return x
    limit = jnp.finfo(jnp.float16).max - 1000
    return jnp.clip(x, -limit, limit)


class T5Layer(nn.Module):
    """One pre-norm encoder block: `[batch, length, d_model]` -> same."""

    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(c.layer_norm_epsilon, name="attention_norm", **kw)(x)
        h = MultiHeadAttention(
            c.num_heads, head_dim=c.d_kv, use_bias=False, out_bias=False, scale=1.0, name="attention", **kw
        )(h, key_mask=mask, bias=position_bias)
        x = _clamp_half(x + h)
        h = RMSNorm(c.layer_norm_epsilon, name="mlp_norm", **kw)(x)
        x = _clamp_half(x + T5FeedForward(c, name="mlp", **kw)(h))
        return constrain(x, BATCH_LENGTH_HIDDEN)


class T5Encoder(nn.Module):
    """T5 encoder stack: token ids and mask -> last hidden state.

    Parameters: `token_embedding/embedding [vocab, d_model]`,
    `relative_attention_bias/embedding [buckets, heads]`,
    `layer_{i}/{attention_norm, attention/{query,key,value,out}, mlp_norm, mlp/{wi | wi_0, wi_1, wo}}`,
    `final_norm/scale`.
    """

    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids: jax.Array, mask: jax.Array) -> jax.Array:
        """token_ids: int `[batch, length]`, below `vocab_size` (not checked on device);
        mask: bool `[batch, length]`, True on real tokens (keys elsewhere are ignored).

        Returns `[batch, length, d_model]` after the final norm. Padded positions hold
        whatever they compute to; callers zero them (see `inference.t5`).
        """
        c = self.config
        if token_ids.ndim != 2 or token_ids.shape != mask.shape:
            raise ValueError(f"token_ids and mask must both be [batch, length], got {token_ids.shape} and {mask.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        embed_init = nn.initializers.normal(1.0)  # HF's T5 init: N(0, factor * 1.0)
        x = nn.Embed(
            c.vocab_size,
            c.d_model,
            name="token_embedding",
            embedding_init=nn.with_logical_partitioning(embed_init, ("vocab", "embed")),
            **kw,
        )(token_ids)
        x = constrain(x, BATCH_LENGTH_HIDDEN)
        length = token_ids.shape[1]
        positions = jnp.arange(length)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None], c.relative_attention_num_buckets, c.relative_attention_max_distance
        )
        bias = nn.Embed(
            c.relative_attention_num_buckets,
            c.num_heads,
            name="relative_attention_bias",
            embedding_init=nn.with_logical_partitioning(embed_init, (None, "heads")),
            **kw,
        )(buckets)  # [query, key, heads]
        bias = jnp.transpose(bias, (2, 0, 1))[None]  # [1, heads, query, key]
        mask = mask.astype(bool)
        for i in range(c.num_layers):
            x = T5Layer(c, name=f"layer_{i}", **kw)(x, mask, bias)
        return RMSNorm(c.layer_norm_epsilon, name="final_norm", **kw)(x)
