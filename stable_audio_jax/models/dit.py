"""The Stable Audio Open diffusion backbone: a pre-norm transformer over latent frames.

It mirrors stable-audio-tools `models/dit.py` `DiffusionTransformer` (its blocks are
`models/transformer.py`'s) as configured by SAO's `model_config.json`.

Channels last throughout: latents `[batch, frames, io_channels]`, cross-attention tokens
`[batch, tokens, cond_token_dim]`. With E = `embed_dim`, H heads of D = E / H dims:

- global token: `to_global_embed(global_cond)` (Dense -> SiLU -> Dense, no bias)
  + `to_timestep_embed(fourier(t))` (learned Fourier features `[cos, sin]` of t, then
  Dense -> SiLU -> Dense with bias); one `[batch, 1, E]` token.
- context: `to_cond_embed` (Dense -> SiLU -> Dense, no bias), width kept at `cond_token_dim`
  (SAO 1.0) or projected to E (`project_cond_tokens`, SAO Small).
- `x = x + preprocess_conv(x)` (1x1, no bias), `project_in` to E, the global token
  prepended (sequence length frames + 1; the token is RoPE position 0).
- `depth` blocks, each `x += SelfAttn(LN(x))`, `x += CrossAttn(LN(x), context)`,
  `x += SwiGLU(LN(x))`, LayerNorms bias-free with eps 1e-5.
- `project_out` to `io_channels`, the prepended position dropped,
  `v = out + postprocess_conv(out)` (1x1, no bias).

Attention: self-attention with partial GPT-NeoX rotary embeddings (the first
`rotary_dim` of each head's D dims, rotate-half, angles in float32); cross-attention
with `context width / D` key/value heads (grouped-query attention: query head h reads
key/value head `h // (H / kv_heads)`), no key mask (zero context tokens stay in the
softmax, as the reference). `qk_norm="ln"` (SAO Small's `attn_kwargs`) puts a LayerNorm
over each head's D dims (gain and bias, eps 1e-6) on q and k, before RoPE, in both. All projections are bias-free; the attention output
projections, the second SwiGLU Dense and both 1x1 convs start at zero.

Parameters mirror the reference's state dict (`model.model.*`, see
`convert/sao_dit.py`): `layers_{i}/{pre_norm,self_attn,cross_attend_norm,cross_attn,
ff_norm,ff}`. The fused PyTorch projections are split: `to_qkv` -> `self_attn/{query,
key,value}`, `to_kv` -> `cross_attn/{key,value}`; the SwiGLU input kernel is
`[E, 2, inner]` (value half, gate half), so a `tensor`-sharded `mlp` axis splits both
halves alike. The blocks are not scanned (stacking their parameters would break that
mapping); `DiTConfig.remat_policy` rematerialises each block as in the U-Net.

Precision: params in `param_dtype`, compute in `dtype`; the Fourier time features, the
RoPE rotation, the LayerNorm statistics and the softmax run in float32; v is float32.
`DiTConfig.sao()` has exactly 1,056,828,544 parameters and `DiTConfig.sao_small()`
340,879,488, as the reference.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.attention import HeadProjection, dot_product_attention
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.layers import torch_bias_init, torch_dense
from stable_audio_jax.models.remat import check_remat_policy, maybe_remat
from stable_audio_jax.models.sharding import BATCH_LENGTH_CHANNELS, constrain

Dtype = Any

_HEADS = ("batch", "length", "heads", "kv")  # per-head q/k/v: heads over `tensor`
QK_NORMS = ("none", "ln")  # the reference's "l2" and "dyt" are not ported


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Architecture of the DiT; `sao()` is Stable Audio Open's.

    Attributes:
      io_channels: latent channels in and out (the VAE's latent_dim).
      embed_dim: transformer width E.
      depth: number of transformer blocks.
      num_heads: self- and cross-attention query heads; head dim = E / num_heads.
      cond_token_dim: width of the incoming cross-attention tokens.
      project_cond_tokens: `to_cond_embed` maps the tokens to E (SAO Small) instead of
        keeping `cond_token_dim` (SAO 1.0's `project_cond_tokens=false`); key/value heads =
        that width / head dim.
      global_cond_dim: width of the global conditioning vector (0: only the timestep
        forms the prepended token).
      ff_mult: SwiGLU inner width = E * ff_mult.
      timestep_features_dim: learned Fourier features of t (cos half, sin half).
      rotary_dim: head dims rotated by RoPE; None is the reference's `max(head_dim // 2, 32)`.
      rotary_base: RoPE wavelength base.
      qk_norm: "none", or "ln": LayerNorm of q and k per head (SAO Small).
      input_concat_dim: channels concatenated to the latents on the channel axis before
        `preprocess_conv` (the reference's `input_concat_dim`; an inpainting model's mask
        and masked latents, `latent_diffusion.INPAINT_INPUTS`). 0: none.
      remat_policy: one of `remat.REMAT_CHOICES`, applied to every block.
    """

    io_channels: int = 64
    embed_dim: int = 1536
    depth: int = 24
    num_heads: int = 24
    cond_token_dim: int = 768
    global_cond_dim: int = 1536
    ff_mult: int = 4
    timestep_features_dim: int = 256
    rotary_dim: int | None = None
    rotary_base: float = 10_000.0
    project_cond_tokens: bool = False
    qk_norm: str = "none"
    input_concat_dim: int = 0
    remat_policy: str = "none"

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.cond_token_dim <= 0 or self.cond_embed_dim % self.head_dim:
            raise ValueError(
                f"cond_token_dim {self.cond_token_dim} must be positive and the context width "
                f"{self.cond_embed_dim} a multiple of the head dim {self.head_dim} (it sets the "
                "cross-attention key/value heads)"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of the {self.kv_heads} cross-attention "
                f"key/value heads (context width / head dim)"
            )
        if self.qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm must be one of {list(QK_NORMS)}, got {self.qk_norm!r}")
        if self.global_cond_dim < 0 or self.depth < 0 or self.ff_mult < 1 or self.input_concat_dim < 0:
            raise ValueError("global_cond_dim, depth and input_concat_dim must be >= 0 and ff_mult >= 1")
        if self.timestep_features_dim % 2:
            raise ValueError(f"timestep_features_dim must be even, got {self.timestep_features_dim}")
        if self.rotary_dims % 2 or not 0 < self.rotary_dims <= self.head_dim:
            raise ValueError(
                f"the rotary dim {self.rotary_dims} must be even and in [2, head dim {self.head_dim}] "
                "(the reference's default max(head_dim // 2, 32) needs head dim >= 32)"
            )
        check_remat_policy(self.remat_policy)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def input_dim(self) -> int:
        """Channels the transformer's input projection reads: the latents and the concatenated ones."""
        return self.io_channels + self.input_concat_dim

    @property
    def cond_embed_dim(self) -> int:
        """Width of the context the cross-attention reads (after `to_cond_embed`)."""
        return self.embed_dim if self.project_cond_tokens else self.cond_token_dim

    @property
    def kv_heads(self) -> int:
        """Key/value heads of the cross-attention (12 for SAO's 24 query heads)."""
        return self.cond_embed_dim // self.head_dim

    @property
    def rotary_dims(self) -> int:
        """Head dims that RoPE rotates (32 of 64 for SAO)."""
        return self.rotary_dim if self.rotary_dim is not None else max(self.head_dim // 2, 32)

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        return cls(**checked_fields(cls, d, "DiT"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def sao(cls) -> "DiTConfig":
        """Stable Audio Open 1.0 (1,056,828,544 parameters)."""
        return cls()

    @classmethod
    def sao_small(cls) -> "DiTConfig":
        """Stable Audio Open Small (340,879,488 parameters, as the reference's
        `DiffusionTransformer` with its model config): width 1024, 16 blocks of 8 heads,
        prompt tokens projected to the width, q/k LayerNorms, `seconds_total` alone as the
        768-d global conditioning."""
        return cls(
            embed_dim=1024,
            depth=16,
            num_heads=8,
            global_cond_dim=768,
            project_cond_tokens=True,
            qk_norm="ln",
        )

    @classmethod
    def tiny(cls, io_channels: int = 32, cond_token_dim: int = 64) -> "DiTConfig":
        """A small DiT for CPU tests and demos: width 128, 2 blocks, 2 heads of 64 dims
        (RoPE on 32 of them, as SAO), 1 cross-attention key/value head for 64-d tokens."""
        return cls(
            io_channels=io_channels,
            embed_dim=128,
            depth=2,
            num_heads=2,
            cond_token_dim=cond_token_dim,
            global_cond_dim=2 * cond_token_dim,
        )


def rotary_angles(length: int, rotary_dim: int, base: float = 10_000.0) -> tuple[jax.Array, jax.Array]:
    """cos and sin of the RoPE angles of positions `0..length-1`: each `[length, rotary_dim]`
    float32, the `rotary_dim / 2` frequencies `base^(-2i / rotary_dim)` repeated (first half
    and second half alike, the GPT-NeoX layout)."""
    inv_freq = base ** (-jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Partial rotate-half RoPE: `x` `[batch, length, heads, head_dim]`, cos/sin
    `[length, rotary_dim]`. The first `rotary_dim` dims are rotated in float32
    (`x cos + rotate_half(x) sin`, `rotate_half([a, b]) = [-b, a]`); the rest pass through."""
    rotary_dim = cos.shape[-1]
    rotated, passed = x[..., :rotary_dim].astype(jnp.float32), x[..., rotary_dim:]
    first, second = jnp.split(rotated, 2, axis=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = rotated * cos + jnp.concatenate([-second, first], axis=-1) * sin
    return jnp.concatenate([rotated.astype(x.dtype), passed], axis=-1)


class FourierFeatures(nn.Module):
    """Learned Fourier features of t: `[batch]` -> `[batch, features]` = `[cos f, sin f]`
    with `f = 2 pi t W`, `W` = `kernel` `[1, features // 2]` (standard normal init; the
    reference's `weight` `(features // 2, 1)` transposed). Computed in float32."""

    features: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, None)),
            (1, self.features // 2),
            self.param_dtype,
        )
        f = 2.0 * math.pi * t.astype(jnp.float32)[:, None] @ kernel.astype(jnp.float32)
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


def _layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    # The reference's LayerNorm: learned gain, a zero bias buffer (none here), PyTorch's eps.
    return nn.LayerNorm(
        epsilon=1e-5,
        use_bias=False,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    )


def _head_layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    # The reference's `q_norm` / `k_norm`: PyTorch LayerNorm(head_dim, eps 1e-6) with gain and bias.
    axes = ("kv",)
    return nn.LayerNorm(
        epsilon=1e-6,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes),
    )


def _mlp(features: tuple[int, int], fan_in: int, use_bias: bool, name: str, dtype: Dtype, param_dtype: Dtype):
    """Dense -> SiLU -> Dense, `name_0` and `name_2` as the reference's `nn.Sequential`."""
    kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype)
    first = torch_dense(features[0], fan_in, ("embed", "mlp"), f"{name}_0", **kw)
    second = torch_dense(features[1], features[0], ("mlp", "embed"), f"{name}_2", **kw)
    return lambda x: second(nn.silu(first(x)))


class Attention(nn.Module):
    """Bias-free multi-head attention: self-attention with RoPE when `context` is None,
    grouped-query cross-attention to `context` otherwise.

    x `[batch, L, E]`, context `[batch, M, C]` (C = kv_heads * head_dim), cos/sin
    `[L, rotary_dim]` -> `[batch, L, E]`. Submodules `query`, `key`, `value` (kernels
    `[in, heads, head_dim]`) and `out` (`[heads, head_dim, E]`, zero init).
    """

    num_heads: int
    head_dim: int
    qk_norm: str = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array | None = None, rope: tuple[jax.Array, jax.Array] | None = None
    ) -> jax.Array:
        kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        kv_input = x if context is None else context
        kv_heads = kv_input.shape[-1] // self.head_dim
        query = HeadProjection((self.num_heads, self.head_dim), True, name="query", **kw)(x)
        key = HeadProjection((kv_heads, self.head_dim), True, name="key", **kw)(kv_input)
        value = HeadProjection((kv_heads, self.head_dim), True, name="value", **kw)(kv_input)
        if self.qk_norm == "ln":
            query = _head_layer_norm("q_norm", self.dtype, self.param_dtype)(query).astype(query.dtype)
            key = _head_layer_norm("k_norm", self.dtype, self.param_dtype)(key).astype(key.dtype)
        if rope is not None:
            query, key = apply_rotary(query, *rope), apply_rotary(key, *rope)
        query, key, value = (constrain(a, _HEADS) for a in (query, key, value))
        out = dot_product_attention(query, key, value)
        return HeadProjection((x.shape[-1],), False, kernel_init=nn.initializers.zeros, name="out", **kw)(out)


class SwiGLU(nn.Module):
    """`value * SiLU(gate)` -> Dense back to the input width, both Denses with bias.

    `[batch, L, E]` -> `[batch, L, E]`. The input projection's `kernel` `[E, 2, inner]` and
    `bias` `[2, inner]` hold the value half (index 0) and the gate half (index 1), the
    reference's `ff.ff.0.proj` split in its chunk order; `out` (`ff.ff.2`) starts at zero.
    """

    inner_features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        # PyTorch's `nn.Linear` init (uniform in +-1/sqrt(fan_in)) for both halves.
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(torch_bias_init(features), ("embed", None, "mlp")),
            (features, 2, self.inner_features),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(torch_bias_init(features), (None, "mlp")),
            (2, self.inner_features),
            self.param_dtype,
        )
        h = jnp.einsum("...e,egf->...gf", x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)
        h = constrain(h[..., 0, :] * nn.silu(h[..., 1, :]), ("batch", "length", "mlp"))
        return nn.Dense(
            features,
            name="out",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )(h)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention (RoPE), cross-attention, SwiGLU; each residual.

    x `[batch, L, E]`, context `[batch, M, C]`, cos/sin `[L, rotary_dim]` -> `[batch, L, E]`.
    """

    num_heads: int
    ff_mult: int
    qk_norm: str = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features = x.shape[-1]
        head_dim = features // self.num_heads
        x = x + Attention(self.num_heads, head_dim, self.qk_norm, name="self_attn", **kw)(
            _layer_norm("pre_norm", **kw)(x), rope=(cos, sin)
        )
        x = x + Attention(self.num_heads, head_dim, self.qk_norm, name="cross_attn", **kw)(
            _layer_norm("cross_attend_norm", **kw)(x), context
        )
        x = x + SwiGLU(features * self.ff_mult, name="ff", **kw)(_layer_norm("ff_norm", **kw)(x))
        return constrain(x, BATCH_LENGTH_CHANNELS)


class DiffusionTransformer(nn.Module):
    """SAO's DiT predicting v.

    `__call__(x, t, context, global_cond=None, return_hidden=False, input_concat=None)`:
      x: `[batch, frames, io_channels]` noisy latents (any number of frames: RoPE only).
      t: `[batch]` continuous diffusion time in [0, 1].
      context: `[batch, tokens, cond_token_dim]` cross-attention tokens, all attended to
        (zero tokens included; the unconditional branch is an all-zero context).
      global_cond: `[batch, global_cond_dim]`, required iff `config.global_cond_dim` > 0.
      return_hidden: return the last block's hidden states `[batch, 1 + frames, embed_dim]`
        (the prepended global token first) instead of v; `project_out` and
        `postprocess_conv` are then neither created nor run. With `depth = k + 1` this is the
        reference's `exit_layer_ix=k`, what ARC's discriminator reads.
      input_concat: `[batch, frames, input_concat_dim]`, required iff
        `config.input_concat_dim` > 0: joined to x on the channel axis (the reference's
        `input_concat_cond`); the output keeps `io_channels`.
    Returns v: `[batch, frames, io_channels]` float32.
    """

    config: DiTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        context: jax.Array,
        global_cond: jax.Array | None = None,
        return_hidden: bool = False,
        input_concat: jax.Array | None = None,
    ) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, frames, channels = x.shape
        if channels != c.io_channels:
            raise ValueError(f"x has {channels} channels, the config expects {c.io_channels}")
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != c.cond_token_dim:
            raise ValueError(f"context must be [batch={batch}, tokens, {c.cond_token_dim}], got {context.shape}")
        if (global_cond is None) != (c.global_cond_dim == 0):
            raise ValueError(
                f"global_cond must be given exactly when config.global_cond_dim > 0 "
                f"(global_cond_dim={c.global_cond_dim}, global_cond given: {global_cond is not None})"
            )

        context = _mlp((c.cond_embed_dim,) * 2, c.cond_token_dim, False, "to_cond_embed", **kw)(
            constrain(context.astype(self.dtype), BATCH_LENGTH_CHANNELS)
        )

        fourier = FourierFeatures(c.timestep_features_dim, self.param_dtype, name="timestep_features")(t)
        token = _mlp((c.embed_dim,) * 2, c.timestep_features_dim, True, "to_timestep_embed", **kw)(
            fourier.astype(self.dtype)
        )
        if global_cond is not None:
            if global_cond.shape != (batch, c.global_cond_dim):
                raise ValueError(f"global_cond must be {(batch, c.global_cond_dim)}, got {global_cond.shape}")
            token = token + _mlp((c.embed_dim,) * 2, c.global_cond_dim, False, "to_global_embed", **kw)(
                global_cond.astype(self.dtype)
            )

        if (input_concat is None) != (c.input_concat_dim == 0):
            raise ValueError(
                f"input_concat must be given exactly when config.input_concat_dim > 0 "
                f"(input_concat_dim={c.input_concat_dim}, input_concat given: {input_concat is not None})"
            )
        if input_concat is not None:
            if input_concat.shape != (batch, frames, c.input_concat_dim):
                raise ValueError(
                    f"input_concat must be {(batch, frames, c.input_concat_dim)}, got {input_concat.shape}"
                )
            x = jnp.concatenate([x, input_concat.astype(x.dtype)], axis=-1)
        x = constrain(x.astype(self.dtype), BATCH_LENGTH_CHANNELS)
        x = x + _conv1x1(c.input_dim, "preprocess_conv", **kw)(x)
        h = torch_dense(c.embed_dim, c.input_dim, ("channels", "embed"), "project_in", use_bias=False, **kw)(x)
        h = constrain(jnp.concatenate([token[:, None, :], h], axis=1), BATCH_LENGTH_CHANNELS)

        cos, sin = rotary_angles(frames + 1, c.rotary_dims, c.rotary_base)
        block = maybe_remat(TransformerBlock, c.remat_policy)
        for i in range(c.depth):
            h = block(c.num_heads, c.ff_mult, c.qk_norm, name=f"layers_{i}", **kw)(h, context, cos, sin)
        if return_hidden:
            return constrain(h.astype(jnp.float32), BATCH_LENGTH_CHANNELS)

        out = torch_dense(c.io_channels, c.embed_dim, ("embed", "channels"), "project_out", use_bias=False, **kw)(
            h[:, 1:]
        )
        out = out + _conv1x1(c.io_channels, "postprocess_conv", **kw)(out)
        return constrain(out.astype(jnp.float32), BATCH_LENGTH_CHANNELS)


def _conv1x1(features: int, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.Dense:
    """The reference's zero-initialised, bias-free 1x1 Conv1d, as a Dense (kernel `[in, out]`)."""
    return nn.Dense(
        features,
        use_bias=False,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, (None, None)),
    )


def expected_num_params(config: DiTConfig) -> int:
    """Closed-form parameter count (1,056,828,544 for `DiTConfig.sao()`)."""
    c = config
    e, d, w, inner = c.embed_dim, c.cond_token_dim, c.cond_embed_dim, c.embed_dim * c.ff_mult
    qk_norm = 2 * 2 * 2 * c.head_dim if c.qk_norm == "ln" else 0  # q and k, gain and bias, two attentions
    block = (
        3 * e  # three LayerNorm gains
        + 4 * e * e  # self-attention q, k, v, out
        + 2 * e * e
        + 2 * w * w  # cross-attention q, out; k, v: context width to kv_heads * head_dim
        + qk_norm
        + e * 2 * inner
        + 2 * inner
        + inner * e
        + e
    )  # SwiGLU in (value and gate), out
    timestep = c.timestep_features_dim // 2 + c.timestep_features_dim * e + e + e * e + e
    global_embed = c.global_cond_dim * e + e * e if c.global_cond_dim else 0
    return (
        c.depth * block
        + timestep
        + global_embed
        + d * w
        + w * w  # to_cond_embed
        + (c.input_dim + c.io_channels) * e
        + c.input_dim**2
        + c.io_channels**2
    )  # project in/out, the 1x1 convs
