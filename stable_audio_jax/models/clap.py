"""CLAP: a text tower and an audio tower projected into one joint embedding space.

As in LAION-CLAP (which Stable Audio 1.0 trained from scratch on its own data): a
RoBERTa-shaped text encoder (`text_encoder.TextEncoder`) and an HTSAT audio encoder
(`htsat.HTSATEncoder`), each followed by a two-layer MLP projection (Linear, ReLU,
Linear) into `embed_dim`, L2-normalised, and a learned temperature for the contrastive
loss. After training, the text tower alone is kept: its penultimate-layer token
features condition the diffusion model (`inference/clap.py`).

`CLAPConfig.remat_policy` rematerialises the transformer layers of the text tower and
the Swin blocks of the audio tower (`models/remat.py`); the parameters do not change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.attention import FeedForward
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.htsat import HTSATConfig, HTSATEncoder
from stable_audio_jax.models.remat import check_remat_policy
from stable_audio_jax.models.text_encoder import TextEncoder, TextEncoderConfig, TextEncoderOutput

Dtype = Any


@dataclasses.dataclass(frozen=True)
class CLAPConfig:
    """Both towers and the joint space.

    Attributes:
      text: the text tower (`TextEncoderConfig`).
      audio: the audio tower (`HTSATConfig`).
      embed_dim: size of the joint embedding space (LAION-CLAP: 512).
      logit_scale_init: initial log inverse temperature, log(1/0.07) as CLIP.
      logit_scale_max: the learned log inverse temperature is clipped to this (log 100,
        as CLIP) so the loss cannot collapse into ever sharper logits.
      feature_layer: which text hidden state conditions the diffusion model (-2: the
        penultimate layer, arXiv 2402.04825).
      remat_policy: one of `remat.REMAT_CHOICES` ("none", "full", "dots_saveable",
        "dots_with_no_batch_dims_saveable"), applied to every text layer and every Swin
        block: activation memory traded for recomputation in the backward pass, with the
        same parameter tree whatever the policy.
    """

    text: TextEncoderConfig
    audio: HTSATConfig
    embed_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    feature_layer: int = -2
    remat_policy: str = "none"

    def __post_init__(self):
        check_remat_policy(self.remat_policy, "CLAP")
        layers = self.text.num_layers + 1  # hidden states include the embedding output
        if not -layers <= self.feature_layer < layers:
            raise ValueError(
                f"feature_layer={self.feature_layer} is out of range for a text tower "
                f"with {self.text.num_layers} layers ({layers} hidden states)"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLAPConfig":
        d = checked_fields(cls, d, "CLAP")
        for key in ("text", "audio"):
            if key not in d:
                raise ValueError(f"CLAP config needs a '{key}' section")
        return cls(text=TextEncoderConfig.from_dict(d.pop("text")), audio=HTSATConfig.from_dict(d.pop("audio")), **d)


class CLAP(nn.Module):
    """Contrastive language-audio model.

    `__call__` (used for init and training) returns normalised audio and text
    embeddings and the clipped log temperature; `encode_audio`, `encode_text`,
    `log_temperature` and `text_features` are the pieces, usable with
    `apply(..., method=...)`.
    """

    config: CLAPConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        remat = self.config.remat_policy
        self.text_encoder = TextEncoder(self.config.text, remat_policy=remat, **kw)
        self.audio_encoder = HTSATEncoder(self.config.audio, remat_policy=remat, **kw)
        dim = self.config.embed_dim
        self.text_projection = FeedForward(dim, dim, activation="relu", **kw)
        self.audio_projection = FeedForward(dim, dim, activation="relu", **kw)
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(self.config.logit_scale_init), (), jnp.float32
        )

    def encode_audio(self, audio: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """audio `[batch, time, channels]` (or `[batch, time]`) at `config.audio.sample_rate`, or
        `htsat.FusionViews` for a fusion tower -> unit-norm embeddings `[batch, embed_dim]` (float32)."""
        pooled, _ = self.audio_encoder(audio, deterministic=deterministic)
        return _normalize(self.audio_projection(pooled))

    def encode_text(
        self, token_ids: jax.Array, mask: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, TextEncoderOutput]:
        """token_ids, mask `[batch, length]` -> (unit-norm embeddings `[batch, embed_dim]`,
        the text tower's outputs)."""
        outputs = self.text_encoder(token_ids, mask, deterministic=deterministic)
        return _normalize(self.text_projection(outputs.pooled)), outputs

    def log_temperature(self) -> jax.Array:
        """The log inverse temperature of the contrastive logits: the learned `logit_scale`
        clipped at `config.logit_scale_max` (float32 scalar)."""
        return jnp.minimum(self.logit_scale, self.config.logit_scale_max)

    def text_features(self, token_ids: jax.Array, mask: jax.Array) -> jax.Array:
        """The conditioning tokens: hidden state `config.feature_layer`, `[batch, length, hidden]`."""
        return self.text_encoder(token_ids, mask).hidden_states[self.config.feature_layer]

    def __call__(
        self, audio: jax.Array, token_ids: jax.Array, mask: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns `(audio_embeddings [batch, embed_dim], text_embeddings [batch, embed_dim],
        log inverse temperature scalar)`."""
        audio_embeddings = self.encode_audio(audio, deterministic=deterministic)
        text_embeddings, _ = self.encode_text(token_ids, mask, deterministic=deterministic)
        return audio_embeddings, text_embeddings, self.log_temperature()


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-12)
