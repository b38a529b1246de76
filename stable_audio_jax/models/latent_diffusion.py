"""The conditioned diffusion backbone: timing embedders + text tokens -> cross-attention context -> U-Net.

    text_features [B, L, D_text] (frozen CLAP, penultimate layer), text_mask [B, L]
    seconds_start, seconds_total [B]  --TimingConditioner-->  2 tokens [B, 2, D]
    context = [text tokens (projected to D if D_text != D) ; timing tokens]  [B, L + 2, D]
    v = UNet1D(x_t [B, N, latent_dim], t [B], context, mask, use_null_context [B])

SA 1.0 appends the two timing tokens to the 77 text tokens (79 in all) and uses no global
conditioning (`global_timing=True` adds it: the tiny demo model needs it to learn timing in
a few CPU minutes); a sample whose conditioning is dropped (10% in training, the
unconditional half of CFG) sees the U-Net's learned null context instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.conditioning import TimingConditioner, build_context
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.unet import UNet1D, UNetConfig

Dtype = Any


@dataclasses.dataclass(frozen=True)
class LatentDiffusionConfig:
    """Attributes:
      unet: the backbone; its `context_features` is the token width and `context_length`
        must equal the text length + 2.
      timing_kind: 'table' (SA 1.0: one learned vector per second, 513 rows) or 'number'
        (SAO: learned Fourier features of the normalised value).
      max_seconds: timing values are clamped to [0, max_seconds].
      text_features_dim: width of the incoming text features; a linear projection to
        `unet.context_features` is added when it differs (e.g. 384-d MiniLM -> 768).
      global_timing: also feed the timing embeddings `[start || total]` to the U-Net as
        global conditioning (added into its time mapping, so every ResNet block sees them;
        the brief's "and as global conditioning", SAO's route). Needs
        `unet.global_features == 2 * unet.context_features`. Off in SA 1.0.
    """

    unet: UNetConfig
    timing_kind: Literal["table", "number"] = "table"
    max_seconds: int = 512
    text_features_dim: int | None = None
    global_timing: bool = False

    def __post_init__(self):
        want = 2 * self.unet.context_features if self.global_timing else 0
        if self.unet.global_features != want:
            raise ValueError(f"global_timing={self.global_timing} needs unet.global_features={want}, "
                             f"got {self.unet.global_features}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LatentDiffusionConfig":
        d = checked_fields(cls, d, "diffusion model")
        if "unet" not in d:
            raise ValueError("the diffusion model config needs a 'unet' section")
        return cls(unet=UNetConfig.from_dict(d.pop("unet")), **d)

    @property
    def text_length(self) -> int:
        return self.unet.context_length - 2


class LatentDiffusionModel(nn.Module):
    """v-prediction of the latent diffusion model, conditioned on text and timing."""

    config: LatentDiffusionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, text_features: jax.Array, text_mask: jax.Array,
                 seconds_start: jax.Array, seconds_total: jax.Array,
                 use_null_context: jax.Array | None = None) -> jax.Array:
        """x `[batch, frames, latent_dim]` (noisy latents), t `[batch]` in [0, 1],
        text_features `[batch, text_length, text_dim]`, text_mask `[batch, text_length]`,
        seconds `[batch]`, use_null_context `[batch]` bool -> v `[batch, frames, latent_dim]`,
        float32 whatever `dtype` (the loss, CFG and the sampler's updates then run in float32)."""
        c = self.config
        width = c.unet.context_features
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if text_features.shape[1] != c.text_length:
            raise ValueError(f"{text_features.shape[1]} text tokens, but the U-Net's context_length "
                             f"{c.unet.context_length} expects {c.text_length} (+ 2 timing tokens)")
        if text_features.shape[-1] != width:
            if c.text_features_dim != text_features.shape[-1]:
                raise ValueError(f"text features are {text_features.shape[-1]}-d but the U-Net attends to "
                                 f"{width}-d tokens; set model.text_features_dim={text_features.shape[-1]} "
                                 "to learn a projection")
            text_features = nn.Dense(
                width, name="text_projection",
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), **kw)(text_features)
        tokens, global_cond = TimingConditioner(width, c.timing_kind, c.max_seconds, name="timing", **kw)(
            seconds_start, seconds_total)
        context, mask = build_context(text_features, text_mask, tokens)
        v = UNet1D(c.unet, name="unet", **kw)(x, t, context, mask, use_null_context,
                                              global_cond if c.global_timing else None)
        return v.astype(jnp.float32)
