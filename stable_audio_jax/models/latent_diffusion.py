"""The conditioned diffusion backbone: timing embedders + text tokens -> cross-attention context -> U-Net or DiT.

    text_features [B, L, D_text] (frozen text encoder), text_mask [B, L]
    seconds_start, seconds_total [B]  --TimingConditioner-->  n tokens [B, n, D]
    context = [text tokens (projected to D if D_text != D) ; timing tokens]  [B, L + n, D]
    v = UNet1D(x_t [B, N, latent_dim], t [B], context, mask, use_null_context [B])    (SA 1.0)
    v = DiffusionTransformer(x_t, t, context, global_cond = [start || total])        (SAO)

n = len(`timing_ids`): 2 (start and total) for SA 1.0 and SAO, 1 (`seconds_total`) for
Stable Audio Open Small, whose global conditioning is that one embedding.

SA 1.0 appends the two timing tokens to the 77 text tokens (79 in all) and uses no global
conditioning (`global_timing=True` adds it, as `configs/diffusion_tiny.py` does so that a
small model learns timing quickly); a sample whose conditioning is dropped (10% in
training, the unconditional half of CFG) sees the U-Net's learned null context instead. How the U-Net
masks padded text tokens, on the null and negative-prompt rows too, is its
`mask_semantics` ("reference" for imported checkpoints, "strict" by default).

SAO (the DiT) appends them to 128 T5 tokens (130) and also feeds `[start || total]` as
global conditioning (`global_timing=True`). It attends to every context token, so padded
text tokens are zeroed (as the reference's T5 conditioner does), and a dropped sample's
whole context (text and timing tokens) is zero while its global timing is kept
(stable-audio-tools `models/dit.py`, `DiffusionTransformer.forward`).
A negative prompt in the unconditional branch is its features with padding zeroed.

An inpainting-conditioned DiT (stable-audio-tools' `diffusion_cond_inpaint`,
`input_concat_ids`) also reads, joined to x on the channel axis in the config's order,
`inpaint_mask` `[B, N, 1]` (1 = a frame given, 0 = a frame to generate) and
`inpaint_masked_input` `[B, N, latent_dim]` (the given latents, zero elsewhere); both
default to zeros, plain text-to-audio. Both CFG branches see the same ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.conditioning import (
    TIMING_IDS,
    TimingConditioner,
    build_context,
    check_timing_ids,
    context_mask,
    seconds_left_features,
)
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.dit import DiffusionTransformer, DiTConfig
from stable_audio_jax.models.unet import UNet1D, UNetConfig

Dtype = Any

# The inputs an inpainting-conditioned model joins to its latents, and their widths
# (`None`: the latent width), by the reference's conditioning ids.
INPAINT_INPUTS: dict[str, int | None] = {"inpaint_masked_input": None, "inpaint_mask": 1}


@dataclasses.dataclass(frozen=True)
class LatentDiffusionConfig:
    """Attributes:
    unet, dit: the backbone, exactly one of them set. The U-Net's `context_features` is
      the token width and its `context_length` must equal the text length + the timing
      tokens; the DiT's `cond_token_dim` is the token width.
    timing_kind: 'table' (SA 1.0: one learned vector per second, 513 rows) or 'number'
      (SAO: learned Fourier features of the normalised value).
    max_seconds: timing values are clamped to [0, max_seconds].
    text_features_dim: width of the incoming text features; a linear projection to the
      token width is added when it differs (e.g. 384-d MiniLM -> 768).
    global_timing: also feed the timing embeddings (`[start || total]`) to the backbone as
      global conditioning: added into the U-Net's time mapping (so every ResNet block
      sees them), or the DiT's prepended global token (SAO). Needs
      `unet.global_features` / `dit.global_cond_dim` == len(timing_ids) * the token
      width. Off in SA 1.0.
    timing_ids: which timing numbers condition the model, in the reference's order:
      ("seconds_start", "seconds_total"), or ("seconds_total",) (SAO Small).
    text_tokens: the number of text tokens (128 for SAO's T5). Required with `dit`; the
      U-Net's is `context_length - 2` (None, or that value).
    frame_seconds: seconds of audio per latent frame (the VAE's downsampling ratio / the
      sample rate). Needed by `unet.frame_features` > 0, which then gets
      `conditioning.seconds_left_features` at every frame (not in SA 1.0: the tiny demo
      model learns where to stop within its CPU budget with it).
    objective: what the output means: "v" (the paper's v-prediction) or "rectified_flow" /
      "rf_denoiser" (the velocity `noise - x0`). The network is the same; training and
      sampling read it (`diffusion/sampling_config.py` checks the name).
    input_concat_ids: () for a plain model; both `INPAINT_INPUTS` keys, in the order they
      are joined after the latents, for an inpainting-conditioned DiT (needs
      `dit.input_concat_dim` = latent_dim + 1). Training then draws random masks
      (`diffusion/inpaint_masks.py`).
    """

    unet: UNetConfig | None = None
    timing_kind: Literal["table", "number"] = "table"
    max_seconds: int = 512
    text_features_dim: int | None = None
    global_timing: bool = False
    dit: DiTConfig | None = None
    text_tokens: int | None = None
    frame_seconds: float = 0.0
    objective: str = "v"
    timing_ids: tuple[str, ...] = TIMING_IDS
    input_concat_ids: tuple[str, ...] = ()

    def __post_init__(self):
        if (self.unet is None) == (self.dit is None):
            raise ValueError("set exactly one backbone: 'unet' (SA 1.0 U-Net) or 'dit' (SAO DiT)")
        # Configs read back from JSON or ml_collections hold lists.
        object.__setattr__(self, "timing_ids", check_timing_ids(self.timing_ids))
        object.__setattr__(self, "input_concat_ids", tuple(self.input_concat_ids))
        self._check_input_concat()
        want = self.timing_tokens * self.context_features if self.global_timing else 0
        got, field = (
            (self.unet.global_features, "unet.global_features")
            if self.unet is not None
            else (self.dit.global_cond_dim, "dit.global_cond_dim")
        )
        if got != want:
            raise ValueError(f"global_timing={self.global_timing} needs {field}={want}, got {got}")
        if self.unet is not None and self.text_tokens not in (None, self.text_length):
            raise ValueError(
                f"text_tokens={self.text_tokens} but the U-Net's context_length "
                f"{self.unet.context_length} holds {self.text_length} text tokens"
            )
        if self.unet is not None and self.unet.frame_features and not self.frame_seconds > 0:
            raise ValueError(
                f"unet.frame_features={self.unet.frame_features} needs frame_seconds > 0 "
                f"(VAE downsampling ratio / sample rate), got {self.frame_seconds}"
            )
        if self.dit is not None and (self.text_tokens is None or self.text_tokens < 1):
            raise ValueError(f"the DiT needs text_tokens >= 1 (128 for SAO), got {self.text_tokens}")

    def _check_input_concat(self) -> None:
        ids = self.input_concat_ids
        if ids and sorted(ids) != sorted(INPAINT_INPUTS):
            raise ValueError(f"input_concat_ids must be () or an order of {list(INPAINT_INPUTS)}, got {list(ids)}")
        if ids and self.dit is None:
            raise ValueError("input_concat_ids (an inpainting-conditioned model) needs a DiT backbone")
        have = self.dit.input_concat_dim if self.dit is not None else 0
        want = sum(self.input_concat_width(name) for name in ids)
        if have != want:
            raise ValueError(f"input_concat_ids={list(ids)} needs dit.input_concat_dim={want}, got {have}")

    def input_concat_width(self, name: str) -> int:
        """Channels of the input-concat input `name` (an `INPAINT_INPUTS` key)."""
        width = INPAINT_INPUTS[name]
        return self.latent_dim if width is None else width

    @property
    def inpainting(self) -> bool:
        """Whether the backbone reads an inpainting mask and masked latents."""
        return bool(self.input_concat_ids)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LatentDiffusionConfig":
        d = checked_fields(cls, d, "diffusion model")
        unet, dit = d.pop("unet", None), d.pop("dit", None)
        if (unet is None) == (dit is None):
            raise ValueError("the diffusion model config needs exactly one of a 'unet' and a 'dit' section")
        return cls(
            unet=None if unet is None else UNetConfig.from_dict(unet),
            dit=None if dit is None else DiTConfig.from_dict(dit),
            **d,
        )

    def to_dict(self) -> dict:
        """The fields as plain values, without the unset backbone (for `config.model`)."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if not (k in ("unet", "dit") and v is None)}

    @property
    def backbone(self) -> str:
        """The backbone's name, also its parameter subtree: 'unet' or 'dit'."""
        return "unet" if self.unet is not None else "dit"

    @property
    def timing_tokens(self) -> int:
        """Cross-attention tokens of the timing conditioning (one per id)."""
        return len(self.timing_ids)

    @property
    def text_length(self) -> int:
        return self.unet.context_length - self.timing_tokens if self.unet is not None else self.text_tokens

    @property
    def context_features(self) -> int:
        """Width of the cross-attention tokens (text and timing)."""
        return self.unet.context_features if self.unet is not None else self.dit.cond_token_dim

    @property
    def latent_dim(self) -> int:
        """Channels of the latents the backbone denoises."""
        return self.unet.in_channels if self.unet is not None else self.dit.io_channels

    @property
    def downsampling_factor(self) -> int:
        """The latent frames must be a multiple of this (the U-Net's; 1 for the DiT)."""
        return self.unet.downsampling_factor if self.unet is not None else 1


def example_inputs(config: LatentDiffusionConfig, frames: int, batch_size: int = 1) -> tuple[jax.Array, ...]:
    """Zero inputs of `LatentDiffusionModel(config)`'s shapes: x `[batch, frames, latent_dim]`,
    t `[batch]`, text features `[batch, text_length, text width]` (the incoming width, so a
    `text_projection` is created when it differs), text mask, seconds_start, seconds_total."""
    text_dim = config.text_features_dim or config.context_features
    return (
        jnp.zeros((batch_size, frames, config.latent_dim), jnp.float32),
        jnp.zeros((batch_size,), jnp.float32),
        jnp.zeros((batch_size, config.text_length, text_dim), jnp.float32),
        jnp.ones((batch_size, config.text_length), bool),
        jnp.zeros((batch_size,), jnp.int32),
        jnp.zeros((batch_size,), jnp.int32),
    )


class LatentDiffusionModel(nn.Module):
    """v-prediction of the latent diffusion model, conditioned on text and timing."""

    config: LatentDiffusionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        text_features: jax.Array,
        text_mask: jax.Array,
        seconds_start: jax.Array,
        seconds_total: jax.Array,
        use_null_context: jax.Array | None = None,
        prompt_mask: jax.Array | None = None,
        return_hidden: bool = False,
        inpaint_mask: jax.Array | None = None,
        inpaint_masked_input: jax.Array | None = None,
    ) -> jax.Array:
        """x `[batch, frames, latent_dim]` (noisy latents), t `[batch]` in [0, 1],
        text_features `[batch, text_length, text_dim]`, text_mask `[batch, text_length]`,
        seconds `[batch]`, use_null_context `[batch]` bool (rows whose cross-attention context
        is the null one: the U-Net's learned embedding, the DiT's zeros), prompt_mask
        `[batch, text_length]` or None (the text mask of the prompt a guidance row belongs
        to, e.g. the prompt's on a negative-prompt row; used by the U-Net's "reference"
        mask semantics, see `models/unet.py`; the DiT has no key mask) -> v
        `[batch, frames, latent_dim]`, float32 whatever `dtype` (the loss, CFG and the
        sampler's updates then run in float32). `return_hidden` (DiT only): the last block's
        hidden states `[batch, 1 + frames, embed_dim]` instead (`DiffusionTransformer`).
        inpaint_mask `[batch, frames]` (1 = given, 0 = generate) and inpaint_masked_input
        `[batch, frames, latent_dim]`: an inpainting-conditioned model's extra inputs (zeros
        when None); refused by any other model."""
        c = self.config
        if return_hidden and c.dit is None:
            raise ValueError("return_hidden needs a DiT backbone (the ARC discriminator reads its hidden states)")
        if not c.inpainting and (inpaint_mask is not None or inpaint_masked_input is not None):
            raise ValueError(
                "inpaint_mask / inpaint_masked_input given, but the model is not inpainting-conditioned "
                "(config input_concat_ids is empty)"
            )
        width = c.context_features
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if text_features.shape[1] != c.text_length:
            where = (
                f"the U-Net's context_length {c.unet.context_length}"
                if c.unet is not None
                else f"model.text_tokens={c.text_tokens}"
            )
            raise ValueError(
                f"{text_features.shape[1]} text tokens, but {where} expects {c.text_length} "
                f"(+ {c.timing_tokens} timing tokens)"
            )
        if text_features.shape[-1] != width:
            if c.text_features_dim != text_features.shape[-1]:
                raise ValueError(
                    f"text features are {text_features.shape[-1]}-d but the {c.backbone} attends to "
                    f"{width}-d tokens; set model.text_features_dim={text_features.shape[-1]} "
                    "to learn a projection"
                )
            text_features = nn.Dense(
                width,
                name="text_projection",
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                **kw,
            )(text_features)
        tokens, global_cond = TimingConditioner(width, c.timing_kind, c.max_seconds, c.timing_ids, name="timing", **kw)(
            seconds_start, seconds_total
        )
        global_cond = global_cond if c.global_timing else None
        if c.unet is not None:
            context, mask = build_context(text_features, text_mask, tokens)
            frame_cond = None
            if c.unet.frame_features:
                frame_cond = seconds_left_features(
                    seconds_start, seconds_total, x.shape[1], c.frame_seconds, c.unet.frame_features
                )
            prompt_context_mask = None if prompt_mask is None else context_mask(prompt_mask, tokens.shape[1])
            v = UNet1D(c.unet, name="unet", **kw)(
                x, t, context, mask, use_null_context, global_cond, frame_cond, prompt_context_mask
            )
        else:
            # The DiT has no key mask: padded text tokens must be zero vectors, as T5's are.
            text_features = jnp.where(jnp.asarray(text_mask, bool)[..., None], text_features, 0)
            context, _ = build_context(text_features, text_mask, tokens)
            if use_null_context is not None:
                # The unconditional context is all zeros, not learned; the global timing stays.
                drop = jnp.asarray(use_null_context).astype(bool).reshape(x.shape[0])
                context = jnp.where(drop[:, None, None], 0, context)
            input_concat = self._input_concat(x, inpaint_mask, inpaint_masked_input)
            v = DiffusionTransformer(c.dit, name="dit", **kw)(x, t, context, global_cond, return_hidden, input_concat)
        return v.astype(jnp.float32)

    def _input_concat(
        self, x: jax.Array, inpaint_mask: jax.Array | None, inpaint_masked_input: jax.Array | None
    ) -> jax.Array | None:
        """The channels joined to x `[batch, frames, latent_dim]`, in `input_concat_ids` order, or None."""
        c = self.config
        if not c.inpainting:
            return None
        batch, frames, _ = x.shape
        given = {"inpaint_mask": inpaint_mask, "inpaint_masked_input": inpaint_masked_input}
        parts = []
        for name in c.input_concat_ids:
            shape = (batch, frames, c.input_concat_width(name))
            want = shape[:2] if name == "inpaint_mask" else shape  # the mask comes without its channel axis
            value = jnp.zeros(want, jnp.float32) if given[name] is None else given[name]
            if value.shape != want:
                raise ValueError(f"{name} must be {want}, got {value.shape}")
            parts.append(jnp.asarray(value, jnp.float32).reshape(shape))
        return jnp.concatenate(parts, axis=-1)
