"""The score head of ARC's discriminator (stable-audio-tools 0.0.19 `models/arc.py`,
`ConvDiscriminator`): a small conv net over a DiT's hidden states.

ARC (adversarial relativistic-contrastive post-training, arXiv 2505.08175) scores noised
latents with a copy of the diffusion backbone cut after one block (`return_hidden`) and this
head: four times (conv k4 s2 p1, GroupNorm(32), SiLU), each halving the sequence, then a conv
k4 to one channel, so a score per stretch of 16 tokens rather than one per clip.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.layers import Conv1d

Dtype = Any

DOWNSAMPLING_LAYERS = 4


class ConvScoreHead(nn.Module):
    """`[batch, tokens, channels]` hidden states -> scores `[batch, tokens', 1]` float32, with
    `tokens' = tokens // 16 - 3` (for `tokens` a multiple of 16; the reference's length
    arithmetic in general). `soft_clip_scale` bounds the scores smoothly,
    `s -> scale * tanh(s / scale)`. `channels` must be a multiple of the 32 groups."""

    soft_clip_scale: float | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        channels = hidden.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = hidden.astype(self.dtype)
        for i in range(DOWNSAMPLING_LAYERS):
            h = Conv1d(channels, 4, stride=2, padding=1, name=f"conv_{i}", **kw)(h)
            h = nn.GroupNorm(num_groups=32, epsilon=1e-5, name=f"norm_{i}", **kw)(h)
            h = nn.silu(h)
        scores = Conv1d(1, 4, stride=1, padding=0, name="to_score", **kw)(h).astype(jnp.float32)
        if self.soft_clip_scale is not None:
            scores = self.soft_clip_scale * jnp.tanh(scores / self.soft_clip_scale)
        return scores
