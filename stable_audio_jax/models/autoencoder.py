"""The Oobleck audio autoencoder (VAE) of Stable Audio, in linen, channels last.

One set of modules covers both reference shapes by configuration:

- SAO / SA 2.0 ("Oobleck"): SnakeBeta, channels 128, multipliers (1, 1, 2, 4, 8, 16),
  strides (2, 4, 4, 8, 8) -> 2048x downsampling, last encoder conv straight to 128 =
  2 x 64 mean/scale channels, decoder without tanh and without final bias.
- SA 1.0 (DAC encoder/decoder without the quantiser): single-alpha Snake, encoder
  channels 128 x (1, 2, 4, 8, 16), strides (4, 4, 8, 8) -> 1024x, last encoder conv to
  2048 channels then a plain 1x1 projection to 128, decoder channels 96 x (1, 2, 4, 8, 16)
  (1536 -> 96), final bias and tanh.

Shapes: audio `[batch, time, io_channels]`; latents `[batch, time / ratio, latent_dim]`.

`AutoencoderConfig.remat_policy` rematerialises every encoder and decoder block (three
residual units and the strided conv) in the backward pass (`models/remat.py`); the
parameter tree is the same under every policy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.layers import Conv1d, Snake, WNConv, WNConvTranspose1d
from stable_audio_jax.models.remat import check_remat_policy, maybe_remat
from stable_audio_jax.models.sharding import BATCH_LENGTH_CHANNELS, constrain

Dtype = Any


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of the VAE; see the module docstring for the reference values.

    `remat_policy` (one of `remat.REMAT_CHOICES`, default "none") is a memory knob, not
    architecture: it rematerialises each `EncoderBlock` and `DecoderBlock` and leaves the
    parameters (names, shapes) and the outputs unchanged. "dots_saveable" keeps a block's
    convolution outputs and recomputes its Snake activations; "full" keeps only the block's
    input, as does "dots_with_no_batch_dims_saveable" (a convolution is not a dot).
    """

    io_channels: int = 2
    latent_dim: int = 64
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    encoder_channels: int = 128
    # One multiplier per stage boundary: len(strides) + 1 entries. Stage i runs at
    # encoder_channels * encoder_multipliers[i] and ends with a stride strides[i] conv.
    encoder_multipliers: tuple[int, ...] = (1, 1, 2, 4, 8, 16)
    decoder_channels: int = 128
    decoder_multipliers: tuple[int, ...] = (1, 1, 2, 4, 8, 16)
    # Channels of the encoder's last k=3 conv; None means 2 * latent_dim (mean and scale).
    encoder_out_channels: int | None = None
    # SA 1.0 / DAC: a plain (not weight-normed) 1x1 conv from encoder_out_channels to
    # 2 * latent_dim after the last conv.
    encoder_projection: bool = False
    snake_beta: bool = True  # SnakeBeta (two params, log scale) vs DAC Snake (one, linear)
    decoder_final_bias: bool = False
    final_tanh: bool = False
    dilations: tuple[int, ...] = (1, 3, 9)
    remat_policy: str = "none"

    def __post_init__(self):
        check_remat_policy(self.remat_policy)
        for name, mults in (
            ("encoder_multipliers", self.encoder_multipliers),
            ("decoder_multipliers", self.decoder_multipliers),
        ):
            if len(mults) != len(self.strides) + 1:
                raise ValueError(f"{name} needs len(strides) + 1 = {len(self.strides) + 1} entries, got {len(mults)}")
        if any(s < 2 or s % 2 for s in self.strides):
            raise ValueError(f"strides must be even (exact length arithmetic), got {self.strides}")

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self.strides)

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderConfig":
        return cls(**checked_fields(cls, d, "autoencoder"))


class ResidualUnit(nn.Module):
    """x + Conv1x1(Snake(Conv7_dilated(Snake(x)))); `[batch, time, C]` -> same."""

    dilation: int
    snake_beta: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = Snake(beta=self.snake_beta, log_scale=self.snake_beta, **kw)(x)
        h = WNConv(channels, (7,), kernel_dilation=(self.dilation,), padding=(3 * self.dilation,), **kw)(h)
        h = Snake(beta=self.snake_beta, log_scale=self.snake_beta, **kw)(h)
        h = WNConv(channels, (1,), padding=(0,), **kw)(h)
        return x + h


class EncoderBlock(nn.Module):
    """Three residual units then a strided conv: `[batch, T, C_in]` -> `[batch, T/stride, C_out]`."""

    features: int
    stride: int
    dilations: Sequence[int] = (1, 3, 9)
    snake_beta: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for d in self.dilations:
            x = ResidualUnit(d, self.snake_beta, **kw)(x)
        x = Snake(beta=self.snake_beta, log_scale=self.snake_beta, **kw)(x)
        x = WNConv(
            self.features, (2 * self.stride,), strides=(self.stride,), padding=(math.ceil(self.stride / 2),), **kw
        )(x)
        return constrain(x, BATCH_LENGTH_CHANNELS)


class DecoderBlock(nn.Module):
    """Transposed strided conv then three residual units: `[batch, T, C_in]` -> `[batch, T*stride, C_out]`."""

    features: int
    stride: int
    dilations: Sequence[int] = (1, 3, 9)
    snake_beta: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Snake(beta=self.snake_beta, log_scale=self.snake_beta, **kw)(x)
        x = WNConvTranspose1d(self.features, 2 * self.stride, self.stride, math.ceil(self.stride / 2), **kw)(x)
        for d in self.dilations:
            x = ResidualUnit(d, self.snake_beta, **kw)(x)
        return constrain(x, BATCH_LENGTH_CHANNELS)


class OobleckEncoder(nn.Module):
    """Audio `[batch, T, io_channels]` -> pre-bottleneck `[batch, T/ratio, 2*latent_dim]`."""

    config: AutoencoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        widths = [c.encoder_channels * m for m in c.encoder_multipliers]
        x = WNConv(widths[0], (7,), padding=(3,), **kw)(constrain(x, BATCH_LENGTH_CHANNELS))
        block = maybe_remat(EncoderBlock, c.remat_policy)
        for i, (width, stride) in enumerate(zip(widths[1:], c.strides)):
            # Named as the plain block would be auto-named, so every policy has one param tree.
            x = block(width, stride, c.dilations, c.snake_beta, name=f"EncoderBlock_{i}", **kw)(x)
        x = Snake(beta=c.snake_beta, log_scale=c.snake_beta, **kw)(x)
        x = WNConv(c.encoder_out_channels or 2 * c.latent_dim, (3,), padding=(1,), **kw)(x)
        if c.encoder_projection:
            x = Conv1d(2 * c.latent_dim, 1, padding=0, name="projection", **kw)(x)
        return x


class OobleckDecoder(nn.Module):
    """Latents `[batch, N, latent_dim]` -> audio `[batch, N*ratio, io_channels]`."""

    config: AutoencoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        widths = [c.decoder_channels * m for m in reversed(c.decoder_multipliers)]
        x = WNConv(widths[0], (7,), padding=(3,), **kw)(constrain(z, BATCH_LENGTH_CHANNELS))
        block = maybe_remat(DecoderBlock, c.remat_policy)
        for i, (width, stride) in enumerate(zip(widths[1:], reversed(c.strides))):
            x = block(width, stride, c.dilations, c.snake_beta, name=f"DecoderBlock_{i}", **kw)(x)
        x = Snake(beta=c.snake_beta, log_scale=c.snake_beta, **kw)(x)
        x = WNConv(c.io_channels, (7,), padding=(3,), use_bias=c.decoder_final_bias, **kw)(x)
        if c.final_tanh:
            x = jnp.tanh(x)
        return x


def posterior(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and std `[batch, N, latent_dim]` (float32) of the latent Gaussian from the encoder
    output `h` `[batch, N, 2*latent_dim]`: `std = softplus(scale) + 1e-4`."""
    mean, scale = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return mean, jax.nn.softplus(scale) + 1e-4


def vae_bottleneck(h: jax.Array, rng: jax.Array | None, noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The reference VAE bottleneck.

    `h` `[batch, N, 2*latent_dim]` is split into mean and scale on channels;
    `std = softplus(scale) + 1e-4`; the latent is `mean + std * eps`, with `eps` the given
    `noise` `[batch, N, latent_dim]` or else drawn from `rng` (`jax.random.normal(rng,
    mean.shape)`, so drawing that `noise` outside gives the same latent), or the mean when
    both are None (deterministic evaluation). The KL is the reference's: no 1/2 factor,
    summed over channels and averaged over batch and frames.

    Returns `(latents [batch, N, latent_dim], kl scalar)`.
    """
    mean, std = posterior(h)
    var = jnp.square(std)
    kl = jnp.mean(jnp.sum(jnp.square(mean) + var - jnp.log(var) - 1.0, axis=-1))
    if noise is not None:
        if rng is not None:
            raise ValueError("pass the posterior noise or an rng to draw it from, not both")
        if noise.shape != mean.shape:
            raise ValueError(f"posterior noise must be {mean.shape}, got {noise.shape}")
        return mean + std * noise.astype(mean.dtype), kl
    if rng is None:
        return mean, kl
    return mean + std * jax.random.normal(rng, mean.shape, mean.dtype), kl


class AudioAutoencoder(nn.Module):
    """Encoder + VAE bottleneck + decoder.

    `__call__(audio [batch, T, io], rng, noise=None)` returns `(reconstruction [batch, T, io],
    latents [batch, T/ratio, latent_dim], kl)`; `encode` and `decode` are available via
    `model.apply(params, x, method=...)`. T must be a multiple of the downsampling ratio.
    The latent sample's noise comes from `rng` or is given as `noise` (see `vae_bottleneck`),
    e.g. drawn once for a global batch that is then split into micro-batches.
    """

    config: AutoencoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.encoder = OobleckEncoder(self.config, self.dtype, self.param_dtype)
        self.decoder = OobleckDecoder(self.config, self.dtype, self.param_dtype)

    def encode(
        self, audio: jax.Array, rng: jax.Array | None = None, noise: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Audio `[batch, T, io]` -> (latents `[batch, T/ratio, latent_dim]`, kl). rng and noise
        None: the mean; else the posterior sample with `noise` or noise drawn from `rng`."""
        ratio = self.config.downsampling_ratio
        if audio.shape[1] % ratio:
            raise ValueError(f"audio length {audio.shape[1]} is not a multiple of the downsampling ratio {ratio}")
        return vae_bottleneck(self.encoder(audio), rng, noise)

    def encode_posterior(self, audio: jax.Array) -> tuple[jax.Array, jax.Array]:
        """audio `[batch, T, io]` -> latent mean and std, each `[batch, T/ratio, latent_dim]`
        (what pre-encoded diffusion shards store, so training still samples the latent)."""
        return posterior(self.encoder(audio))

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents `[batch, N, latent_dim]` -> audio `[batch, N*ratio, io]`."""
        return self.decoder(latents)

    def __call__(self, audio: jax.Array, rng: jax.Array | None = None, noise: jax.Array | None = None):
        latents, kl = self.encode(audio, rng, noise)
        return self.decode(latents), latents, kl
