"""The Stable Audio 1.0 diffusion backbone: ADP's 1-D U-Net with cross-attention (`UNetCFG1d`).

Channels last throughout: latents `[batch, frames, channels]`, context tokens
`[batch, context_length, context_features]`. Structure (stable-audio-tools
`models/adp.py`, `UNet1d` / `UNetCFG1d`), with C the width of a level and M =
`channels * mapping_multiplier` the mapping width:

- time mapping: learned Fourier features of t (`channels + 1` dims) -> Dense(M) -> GELU,
  [+ Dense(M) -> GELU of the global conditioning, when `global_features` > 0,]
  then Dense(M) -> GELU -> Dense(M) -> GELU. Every ResNet block receives it as FiLM.
- `to_in`: ResNet block `in_channels -> channels * multipliers[0]`, GroupNorm with 1 group
  [+ Dense of sinusoidal frame-index features, when `position_features` > 0].
- down level i: strided conv (kernel `factor * kernel_multiplier_downsample + 1`, stride
  `factor`, ADP "same" padding) to `channels * multipliers[i + 1]`, `num_blocks[i]` ResNet
  blocks, a `Transformer1d` of `attentions[i]` blocks; every block output is a skip.
- bottleneck: ResNet -> Transformer1d (`attentions[-1]` blocks) -> ResNet.
- up level i (mirrored): `num_blocks[i] + 1` ResNet blocks, each on `[x, skip * 2**-0.5]`,
  a Transformer1d, then the upsample (transposed conv k=2f stride f, or a k=3 conv for f=1).
- `x += first skip` (the `to_in` output), then `to_out`: ResNet block back to `in_channels`.

ResNet block: GroupNorm -> SiLU -> Conv3 ; GroupNorm -> `x * (scale + 1) + shift` -> SiLU ->
Conv3, with (scale, shift) = Dense(SiLU(mapping)); plus a 1x1 conv on the residual when the
width changes. Transformer1d: GroupNorm(32, eps 1e-6) -> 1x1 conv -> blocks of
[self-attention, cross-attention to the context, MLP] each pre-LayerNorm and residual ->
1x1 conv (no outer residual). Every attention goes through `attention.MultiHeadAttention`
(bias-free q/k/v, output bias; head dim = width / heads).

For classifier-free guidance a learned null context `fixed_embedding`
`[context_length, context_features]` replaces the context of the rows flagged by
`use_null_context` (training dropout and the unconditional branch at sampling).

How the context mask enters cross-attention is `UNetConfig.mask_semantics`:

- "strict" (the default for models trained here: trained on the demo data it reaches the
  same loss as "reference" and places the end of a clip more accurately): padded tokens are
  removed from the softmax (a key mask), so padding changes nothing; a null row attends to
  all of its learned tokens; a negative prompt attends with its own mask.
- "reference" (imported stable-audio-tools checkpoints; `adp.py` `Attention.forward` and
  `UNetCFG1d.forward`): the keys and values of padded tokens are multiplied by 0, so they
  stay in the softmax with logit 0 and value 0; every row, null and negative ones
  included, attends with the mask of the prompt it guides (`prompt_mask`), and a
  negative prompt's own padded tokens are replaced by the null embedding.

The `sa1()` preset has exactly 906,679,744 parameters, as the reference.

Memory knobs (no effect on the parameters or their names): `dtype` is the compute dtype
(e.g. bfloat16 with float32 `param_dtype`: params are cast at each use, GroupNorm and
LayerNorm statistics, the softmax and the Fourier time features stay in float32), and
`UNetConfig.remat_policy` rematerialises every ResNet block and transformer block in the
backward pass (`models/remat.py`). The transformer blocks are not scanned: a stack is at
most 3 blocks deep in SA 1.0, so `nn.scan` would save little compile time and would stack
their parameters (`blocks_0..2` -> one `[layers, ...]` tree), breaking checkpoint and
weight-import compatibility.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.attention import FeedForward, MultiHeadAttention
from stable_audio_jax.models.conditioning import TimePositionalEmbedding
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.layers import Conv1d, ConvTranspose1d, torch_conv_init, torch_dense
from stable_audio_jax.models.remat import check_remat_policy, maybe_remat
from stable_audio_jax.models.sharding import BATCH_LENGTH_CHANNELS, BATCH_LENGTH_EMBED, constrain

Dtype = Any

MASK_SEMANTICS = ("strict", "reference")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net; `sa1()` is the reference (`stable_audio_1_0.json`)."""

    in_channels: int = 64
    channels: int = 256
    multipliers: tuple[int, ...] = (4, 4, 4, 5, 5)
    factors: tuple[int, ...] = (1, 2, 2, 4)
    num_blocks: tuple[int, ...] = (2, 2, 2, 2)
    # One entry per down level plus one for the bottleneck; 0 means no transformer there.
    attentions: tuple[int, ...] = (1, 3, 3, 3, 3)
    attention_heads: int = 16
    attention_multiplier: int = 4  # MLP hidden = width * attention_multiplier
    resnet_groups: int = 16
    transformer_groups: int = 32  # the Transformer1d's input GroupNorm (fixed to 32 in ADP)
    kernel_multiplier_downsample: int = 2
    mapping_multiplier: int = 4  # mapping features = channels * mapping_multiplier (ADP's context_features_multiplier)
    use_skip_scale: bool = True
    context_features: int = 768
    context_length: int = 79  # text tokens + 2 timing tokens; rows of the null embedding
    # Width of an optional global conditioning vector added into the time mapping (ADP's
    # `context_features`); 0 (SA 1.0) means none. SAO-style timing uses 2 * token width.
    global_features: int = 0
    # Sinusoidal features of the absolute frame index, projected and added after `to_in`;
    # 0 (SA 1.0) means none. Timing needs "is this frame before seconds_total?", and a
    # shallow U-Net cannot infer absolute position from the window's edges (the demo model).
    position_features: int = 0
    # Width of an optional per-frame conditioning input `frame_cond` `[batch, frames, k]`,
    # projected and added after `to_in` like the positions (the latent model feeds it the
    # seconds left before `seconds_total` at each frame); 0 (SA 1.0) means none.
    frame_features: int = 0
    # Rematerialisation of the ResNet and transformer blocks, one of `REMAT_CHOICES`
    # ("none": keep every activation). Changes memory and speed, never the parameters.
    remat_policy: str = "none"
    # Cross-attention masking, one of MASK_SEMANTICS (see the module docstring): "strict"
    # removes padded tokens from the softmax; "reference" reproduces stable-audio-tools
    # (padded k/v zeroed but kept in the softmax, the prompt's mask on the null and
    # negative rows). Same parameters either way.
    mask_semantics: str = "strict"

    def __post_init__(self):
        levels = len(self.factors)
        if len(self.multipliers) != levels + 1:
            raise ValueError(f"multipliers needs len(factors) + 1 = {levels + 1} entries, got {len(self.multipliers)}")
        if len(self.num_blocks) != levels:
            raise ValueError(f"num_blocks needs len(factors) = {levels} entries, got {len(self.num_blocks)}")
        if len(self.attentions) != levels + 1:
            raise ValueError(
                f"attentions needs len(factors) + 1 = {levels + 1} entries (one per level and "
                f"the bottleneck), got {len(self.attentions)}"
            )
        if any(f < 1 for f in self.factors):
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if any(n < 0 for n in self.num_blocks) or any(a < 0 for a in self.attentions):
            raise ValueError("num_blocks and attentions must be >= 0")
        if self.kernel_multiplier_downsample < 2 or self.kernel_multiplier_downsample % 2:
            raise ValueError(
                f"kernel_multiplier_downsample must be even and >= 2, got {self.kernel_multiplier_downsample}"
            )
        if self.channels % 2:
            raise ValueError(f"channels must be even (Fourier time features), got {self.channels}")
        for i, width in enumerate(self.widths):
            if width % self.resnet_groups:
                raise ValueError(
                    f"level width {width} (multipliers[{i}]) is not divisible by resnet_groups {self.resnet_groups}"
                )
            if self.attentions[i] and width % self.attention_heads:
                raise ValueError(f"level width {width} is not divisible by attention_heads {self.attention_heads}")
            if self.attentions[i] and width % self.transformer_groups:
                raise ValueError(
                    f"level width {width} is not divisible by transformer_groups {self.transformer_groups}"
                )
        if self.global_features < 0:
            raise ValueError(f"global_features must be >= 0, got {self.global_features}")
        if self.position_features < 0 or self.position_features % 2:
            raise ValueError(f"position_features must be even and >= 0, got {self.position_features}")
        if self.frame_features < 0:
            raise ValueError(f"frame_features must be >= 0, got {self.frame_features}")
        if min(self.in_channels, self.context_features, self.context_length) < 1:
            raise ValueError("in_channels, context_features and context_length must be positive")
        check_remat_policy(self.remat_policy)
        if self.mask_semantics not in MASK_SEMANTICS:
            raise ValueError(f"mask_semantics must be one of {MASK_SEMANTICS}, got {self.mask_semantics!r}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level: `channels * multipliers[i]`."""
        return tuple(self.channels * m for m in self.multipliers)

    @property
    def mapping_features(self) -> int:
        return self.channels * self.mapping_multiplier

    @property
    def downsampling_factor(self) -> int:
        """Total time downsampling; the input length must be a multiple of it (16 for SA 1.0)."""
        return math.prod(self.factors)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**checked_fields(cls, d, "U-Net"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def sa1(cls) -> "UNetConfig":
        """Stable Audio 1.0 (906,679,744 parameters)."""
        return cls()

    @classmethod
    def tiny(cls, in_channels: int = 32, text_length: int = 77, context_features: int = 128) -> "UNetConfig":
        """A small U-Net for CPU tests and demos: widths 32/32/64, 4x downsampling."""
        return cls(
            in_channels=in_channels,
            channels=32,
            multipliers=(1, 1, 2),
            factors=(2, 2),
            num_blocks=(1, 1),
            attentions=(0, 1, 1),
            attention_heads=2,
            attention_multiplier=2,
            resnet_groups=8,
            transformer_groups=32,
            kernel_multiplier_downsample=2,
            mapping_multiplier=2,
            use_skip_scale=True,
            context_features=context_features,
            context_length=text_length + 2,
        )


def _group_norm(groups: int, eps: float, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.GroupNorm:
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=eps,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("channels",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("channels",)),
    )


def _layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    # PyTorch's LayerNorm eps (1e-5), not Flax's default 1e-6.
    return nn.LayerNorm(
        epsilon=1e-5,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    )


class ConvBlock1d(nn.Module):
    """GroupNorm -> optional FiLM `x * (scale + 1) + shift` -> SiLU -> Conv1d(k3).

    `[batch, L, in]` -> `[batch, L, features]`; scale/shift `[batch, 1, in]`.
    """

    features: int
    num_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, scale_shift: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        x = _group_norm(self.num_groups, 1e-5, "groupnorm", self.dtype, self.param_dtype)(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1.0) + shift
        return Conv1d(self.features, 3, name="project", dtype=self.dtype, param_dtype=self.param_dtype)(nn.silu(x))


class ResnetBlock1d(nn.Module):
    """Two conv blocks with FiLM from the mapping and a residual.

    x `[batch, L, in]`, mapping `[batch, mapping_features]` -> `[batch, L, features]`.
    """

    features: int
    num_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mapping: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = ConvBlock1d(self.features, self.num_groups, name="block1", **kw)(x)
        scale_shift = torch_dense(2 * self.features, mapping.shape[-1], ("embed", "channels"), "to_scale_shift", **kw)(
            nn.silu(mapping)
        )
        scale, shift = jnp.split(scale_shift[:, None, :], 2, axis=-1)
        h = ConvBlock1d(self.features, self.num_groups, name="block2", **kw)(h, (scale, shift))
        if x.shape[-1] != self.features:
            x = Conv1d(self.features, 1, name="to_out", **kw)(x)
        return constrain(h + x.astype(h.dtype), BATCH_LENGTH_CHANNELS)


class Attention(nn.Module):
    """ADP's pre-norm attention: LayerNorm on x (queries) and LayerNorm `norm_context` on the
    context (keys/values; on x itself for self-attention), then `MultiHeadAttention`.

    x `[batch, L, C]`, context `[batch, M, D]` or None, context_mask `[batch, M]` -> `[batch, L, C]`.
    `mask_semantics` "strict": masked tokens are left out of the softmax (an all-masked row
    attends uniformly); "reference": their keys and values are zeroed, so they stay in the
    softmax with logit 0 and value 0 (stable-audio-tools `adp.py`, `Attention.forward`).
    """

    num_heads: int
    mask_semantics: str = "strict"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array | None = None, context_mask: jax.Array | None = None
    ) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        context = x if context is None else context
        q_in = _layer_norm("norm", **kw)(x)
        kv_in = _layer_norm("norm_context", **kw)(context)
        key_mask = context_mask
        if context_mask is not None and self.mask_semantics == "reference":
            # k and v are bias-free projections of kv_in, so zeroing kv_in zeroes them.
            kv_in = kv_in * context_mask[..., None].astype(kv_in.dtype)
            key_mask = None
        return MultiHeadAttention(self.num_heads, use_bias=False, out_bias=True, name="attention", **kw)(
            q_in, kv_in, key_mask=key_mask
        )


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention, MLP; each residual. `[batch, L, C]` -> same."""

    num_heads: int
    multiplier: int
    mask_semantics: str = "strict"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x + Attention(self.num_heads, name="attention", **kw)(x)
        x = x + Attention(self.num_heads, self.mask_semantics, name="cross_attention", **kw)(x, context, context_mask)
        # ADP's MLP has no pre-norm: Dense(C -> C * multiplier) -> GELU -> Dense(C).
        return x + FeedForward(
            x.shape[-1] * self.multiplier, activation="gelu", kernel_init=torch_conv_init, name="feed_forward", **kw
        )(x)


class Transformer1d(nn.Module):
    """GroupNorm -> 1x1 conv -> transformer blocks -> 1x1 conv (no outer residual).

    x `[batch, L, C]`, context `[batch, M, D]`, context_mask `[batch, M]` -> `[batch, L, C]`.
    """

    num_layers: int
    num_heads: int
    multiplier: int
    num_groups: int = 32
    remat_policy: str = "none"  # applied to each TransformerBlock (see `models/remat.py`)
    mask_semantics: str = "strict"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = x.shape[-1]
        x = _group_norm(self.num_groups, 1e-6, "to_in_norm", **kw)(x)
        x = Conv1d(channels, 1, name="to_in", **kw)(x)
        block = maybe_remat(TransformerBlock, self.remat_policy)
        for j in range(self.num_layers):
            x = block(self.num_heads, self.multiplier, self.mask_semantics, name=f"blocks_{j}", **kw)(
                x, context, context_mask
            )
        return constrain(Conv1d(channels, 1, name="to_out", **kw)(x), BATCH_LENGTH_CHANNELS)


class UNet1D(nn.Module):
    """The SA 1.0 U-Net predicting v.

    `__call__(x, t, context, context_mask, use_null_context=None, global_cond=None, frame_cond=None)`:
      x: `[batch, frames, in_channels]` noisy latents; `frames` a multiple of
        `config.downsampling_factor`.
      t: `[batch]` continuous diffusion time in [0, 1].
      context: `[batch, context_length, context_features]` text tokens + timing tokens.
      context_mask: `[batch, context_length]` bool, True for real tokens (None: all True).
      use_null_context: `[batch]` bool or None; True rows get the learned null context
        (`fixed_embedding`). Strict semantics attend to all of its rows; reference
        semantics keep `prompt_mask` on it, as stable-audio-tools does.
      global_cond: `[batch, global_features]`, required iff `config.global_features` > 0;
        zeroed on the `use_null_context` rows, so the unconditional branch sees none.
      frame_cond: `[batch, frames, frame_features]`, required iff `config.frame_features` > 0;
        zeroed on the `use_null_context` rows as well.
      prompt_mask: `[batch, context_length]` bool or None (= `context_mask`): the mask of
        the prompt a row belongs to in classifier-free guidance, which differs from
        `context_mask` on a negative-prompt row. Only reference semantics use it: every
        row attends with it, and tokens that are False in the row's own `context_mask`
        take the null embedding (visible where `prompt_mask` is True: a negative prompt
        shorter than the prompt). Strict semantics attend with `context_mask` alone.
    Returns v: `[batch, frames, in_channels]`.
    """

    config: UNetConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        context: jax.Array,
        context_mask: jax.Array | None = None,
        use_null_context: jax.Array | None = None,
        global_cond: jax.Array | None = None,
        frame_cond: jax.Array | None = None,
        prompt_mask: jax.Array | None = None,
    ) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, frames, in_channels = x.shape
        if frames % c.downsampling_factor:
            raise ValueError(
                f"input length {frames} is not a multiple of the U-Net's downsampling "
                f"factor {c.downsampling_factor} (factors {c.factors})"
            )
        if in_channels != c.in_channels:
            raise ValueError(f"x has {in_channels} channels, the config expects {c.in_channels}")
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != c.context_features:
            raise ValueError(f"context must be [batch={batch}, length, {c.context_features}], got {context.shape}")
        length = context.shape[1]
        if length > c.context_length:
            raise ValueError(f"context length {length} exceeds config.context_length {c.context_length}")
        context_mask = (
            jnp.ones((batch, length), bool) if context_mask is None else jnp.asarray(context_mask).astype(bool)
        )
        if context_mask.shape != (batch, length):
            raise ValueError(f"context_mask must be {(batch, length)}, got {context_mask.shape}")

        null = self.param(
            "fixed_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
            (c.context_length, c.context_features),
            self.param_dtype,
        )
        null = null[None, :length].astype(self.dtype)
        context = context.astype(self.dtype)
        if c.mask_semantics == "reference":
            # stable-audio-tools' UNetCFG1d.forward: a negative prompt's padded tokens become
            # the null embedding, and every row (null rows too) keeps the prompt's mask. On a
            # prompt's own row the swapped tokens are masked, so nothing changes there.
            context = jnp.where(context_mask[..., None], context, null)
            if prompt_mask is not None:
                prompt_mask = jnp.asarray(prompt_mask).astype(bool)
                if prompt_mask.shape != (batch, length):
                    raise ValueError(f"prompt_mask must be {(batch, length)}, got {prompt_mask.shape}")
                context_mask = prompt_mask
        if use_null_context is not None:
            drop = jnp.asarray(use_null_context).astype(bool).reshape(batch)
            context = jnp.where(drop[:, None, None], null, context)
            if c.mask_semantics == "strict":
                context_mask = jnp.where(drop[:, None], True, context_mask)
        context = constrain(context, BATCH_LENGTH_EMBED)
        if (global_cond is None) != (c.global_features == 0):
            raise ValueError(
                f"global_cond must be given exactly when config.global_features > 0 "
                f"(global_features={c.global_features}, global_cond given: {global_cond is not None})"
            )
        if (frame_cond is None) != (c.frame_features == 0):
            raise ValueError(
                f"frame_cond must be given exactly when config.frame_features > 0 "
                f"(frame_features={c.frame_features}, frame_cond given: {frame_cond is not None})"
            )
        if frame_cond is not None and frame_cond.shape != (batch, frames, c.frame_features):
            raise ValueError(f"frame_cond must be {(batch, frames, c.frame_features)}, got {frame_cond.shape}")

        # Time mapping, shared by every ResNet block.
        mapping = nn.gelu(
            TimePositionalEmbedding(c.mapping_features, c.channels, name="to_time", **kw)(t), approximate=False
        )
        if global_cond is not None:
            if global_cond.shape != (batch, c.global_features):
                raise ValueError(f"global_cond must be {(batch, c.global_features)}, got {global_cond.shape}")
            global_cond = global_cond.astype(self.dtype)
            if use_null_context is not None:
                global_cond = jnp.where(drop[:, None], 0, global_cond)
            mapping = mapping + nn.gelu(
                torch_dense(c.mapping_features, c.global_features, ("embed", "mlp"), "to_features", **kw)(global_cond),
                approximate=False,
            )
        for j in range(2):
            mapping = torch_dense(c.mapping_features, c.mapping_features, ("embed", "mlp"), f"to_mapping_{j}", **kw)(
                mapping
            )
            mapping = nn.gelu(mapping, approximate=False)

        widths = c.widths
        attend = dict(context=context, context_mask=context_mask)

        def transformer(num_layers: int, name: str) -> Transformer1d:
            return Transformer1d(
                num_layers,
                c.attention_heads,
                c.attention_multiplier,
                c.transformer_groups,
                c.remat_policy,
                c.mask_semantics,
                name=name,
                **kw,
            )

        resnet_block = maybe_remat(ResnetBlock1d, c.remat_policy)

        h = resnet_block(widths[0], 1, name="to_in", **kw)(constrain(x, BATCH_LENGTH_CHANNELS), mapping)
        if c.position_features:
            h = (
                h
                + torch_dense(widths[0], c.position_features, (None, "channels"), "to_position", **kw)(
                    frame_position_features(frames, c.position_features).astype(self.dtype)
                )[None]
            )
        if frame_cond is not None:
            frame_cond = frame_cond.astype(self.dtype)
            if use_null_context is not None:
                frame_cond = jnp.where(drop[:, None, None], 0, frame_cond)
            h = h + torch_dense(widths[0], c.frame_features, (None, "channels"), "to_frame_cond", **kw)(frame_cond)
        skips = [h]
        for i, factor in enumerate(c.factors):
            prefix = f"downsamples_{i}"
            h = Conv1d(
                widths[i + 1], factor * c.kernel_multiplier_downsample + 1, factor, name=f"{prefix}_downsample", **kw
            )(h)
            for j in range(c.num_blocks[i]):
                h = resnet_block(widths[i + 1], c.resnet_groups, name=f"{prefix}_blocks_{j}", **kw)(h, mapping)
                skips.append(h)
            if c.attentions[i]:
                h = transformer(c.attentions[i], f"{prefix}_transformer")(h, **attend)
                skips.append(h)

        h = resnet_block(widths[-1], c.resnet_groups, name="bottleneck_pre_block", **kw)(h, mapping)
        if c.attentions[-1]:
            h = transformer(c.attentions[-1], "bottleneck_transformer")(h, **attend)
        h = resnet_block(widths[-1], c.resnet_groups, name="bottleneck_post_block", **kw)(h, mapping)

        skip_scale = 2.0**-0.5 if c.use_skip_scale else 1.0
        for n, i in enumerate(reversed(range(len(c.factors)))):
            prefix = f"upsamples_{n}"
            for j in range(c.num_blocks[i] + (1 if c.attentions[i] else 0)):
                skip = skips.pop()
                h = jnp.concatenate([h, skip * skip_scale], axis=-1)
                h = resnet_block(widths[i + 1], c.resnet_groups, name=f"{prefix}_blocks_{j}", **kw)(h, mapping)
            if c.attentions[i]:
                h = transformer(c.attentions[i], f"{prefix}_transformer")(h, **attend)
            factor = c.factors[i]
            if factor == 1:
                h = Conv1d(widths[i], 3, name=f"{prefix}_upsample", **kw)(h)
            else:
                h = ConvTranspose1d(widths[i], 2 * factor, factor, name=f"{prefix}_upsample", **kw)(h)
            h = constrain(h, BATCH_LENGTH_CHANNELS)

        h = h + skips.pop()
        assert not skips
        return resnet_block(c.in_channels, 1, name="to_out", **kw)(h, mapping)


def frame_position_features(frames: int, features: int, max_period: float = 10_000.0) -> jax.Array:
    """Transformer-style sinusoids of the frame index: `[frames, features]` (sin half, cos half)."""
    freqs = max_period ** (-jnp.arange(features // 2, dtype=jnp.float32) / (features // 2))
    angles = jnp.arange(frames, dtype=jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def expected_num_params(config: UNetConfig) -> int:
    """Closed-form parameter count (906,679,744 for `UNetConfig.sa1()`)."""
    c = config
    m, d = c.mapping_features, c.context_features

    def resnet(cin: int, cout: int) -> int:
        return (
            2 * cin
            + 3 * cin * cout
            + cout  # block1: GroupNorm(in), conv k3
            + m * 2 * cout
            + 2 * cout  # FiLM Dense
            + 2 * cout
            + 3 * cout * cout
            + cout  # block2
            + (cin * cout + cout if cin != cout else 0)
        )

    def transformer(width: int, layers: int) -> int:
        hidden = width * c.attention_multiplier
        self_attn = 4 * width + 4 * width * width + width  # 2 LayerNorms, q k v out, out bias
        cross_attn = 2 * width + 2 * d + 2 * width * width + 2 * d * width + width
        mlp = 2 * width * hidden + hidden + width
        return 2 * width + 2 * (width * width + width) + layers * (self_attn + cross_attn + mlp)

    w = c.widths
    total = (
        c.channels // 2
        + (c.channels + 1) * m
        + m
        + 2 * (m * m + m)  # time mapping
        + c.context_length * d  # null embedding
        + (c.global_features * m + m if c.global_features else 0)  # global conditioning
        + (c.position_features * w[0] + w[0] if c.position_features else 0)  # frame positions
        + (c.frame_features * w[0] + w[0] if c.frame_features else 0)  # per-frame conditioning
        + resnet(c.in_channels, w[0])
        + resnet(w[0], c.in_channels)
    )
    for i, f in enumerate(c.factors):
        k = f * c.kernel_multiplier_downsample + 1
        total += k * w[i] * w[i + 1] + w[i + 1]
        total += sum(resnet(w[i + 1], w[i + 1]) for _ in range(c.num_blocks[i]))
        up_blocks = c.num_blocks[i] + (1 if c.attentions[i] else 0)
        total += sum(resnet(2 * w[i + 1], w[i + 1]) for _ in range(up_blocks))
        if c.attentions[i]:
            total += 2 * transformer(w[i + 1], c.attentions[i])
        k_up = 3 if f == 1 else 2 * f
        total += k_up * w[i + 1] * w[i] + w[i]
    total += 2 * resnet(w[-1], w[-1]) + (transformer(w[-1], c.attentions[-1]) if c.attentions[-1] else 0)
    return total
