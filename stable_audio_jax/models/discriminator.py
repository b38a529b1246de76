"""Multi-scale complex-STFT discriminator (EnCodec's MS-STFT-D), as used by the Stable
Audio VAEs (`type: encodec` in stable-audio-tools' autoencoder configs).

Each scale takes a normalised, uncentred complex STFT of every audio channel, stacks the
real and imaginary parts as input planes `[batch, frames, freq_bins, 2 * channels]`
(channels last; plane order: real of each channel, then imaginary of each channel) and
runs a small 2-D conv net over (time, frequency):

    conv (3, 9)                                  2C -> F
    3 x conv (3, 9), time dilation d, stride s   F  -> F   (d = 1, 2, 4; s = (1, 2))
    conv (3, 3)                                  F  -> F
    (each followed by LeakyReLU(0.2) and kept as a feature map)
    post conv (3, 3)                             F  -> 1   (the logits map)

All convs are weight-normalised (`WNConv`) with symmetric 'same'-style padding, so the
time axis keeps its length and the frequency axis shrinks by the stride per strided conv.
The STFT is computed in float32; the convs run in `dtype`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.layers import WNConv
from stable_audio_jax.models.sharding import constrain
from stable_audio_jax.spectral import stft

Dtype = Any

# One list of feature maps `[batch, frames, bins', filters]` per scale.
FeatureMaps = list[jax.Array]
# Logical axes of `[batch, frames, bins, channels]` maps: split over the batch only.
_MAPS = ("batch", None, None, "channels")


def _symmetric_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Symmetric padding keeping an odd, dilated kernel's output length (unstrided)."""
    return tuple((k - 1) * d // 2 for k, d in zip(kernel_size, dilation))


def stft_planes(audio: jax.Array, n_fft: int, hop_length: int, win_length: int) -> jax.Array:
    """Normalised complex STFT planes of `audio` `[batch, time, channels]`.

    Returns float32 `[batch, frames, n_fft // 2 + 1, 2 * channels]`, with
    `frames = 1 + (time - n_fft) // hop_length` (no centring) and the planes ordered
    `[re_0, ..., re_{C-1}, im_0, ..., im_{C-1}]`.
    """
    batch, time, channels = audio.shape
    # Batch-major merge so a batch sharding carries over to the STFT batch.
    mono = jnp.transpose(audio, (0, 2, 1)).reshape(batch * channels, time)
    spec = stft(mono, n_fft, hop_length, win_length, center=False, normalized=True)
    spec = spec.reshape(batch, channels, *spec.shape[1:])  # [batch, C, frames, bins]
    planes = jnp.concatenate([spec.real, spec.imag], axis=1)
    return jnp.transpose(planes, (0, 2, 3, 1))


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator.

    Input `[batch, time, channels]` audio. Returns `(logits, features)`: logits
    `[batch, frames, bins', 1]` and the 1 + len(dilations) + 1 feature maps
    `[batch, frames, bins_i, filters]` (post-activation).
    """

    filters: int
    n_fft: int
    hop_length: int
    win_length: int
    kernel_size: tuple[int, int] = (3, 9)
    dilations: Sequence[int] = (1, 2, 4)
    stride: tuple[int, int] = (1, 2)
    negative_slope: float = 0.2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, FeatureMaps]:
        x = stft_planes(audio, self.n_fft, self.hop_length, self.win_length).astype(self.dtype)
        x = constrain(x, _MAPS)
        kernel = tuple(self.kernel_size)
        square = (kernel[0], kernel[0])
        # (kernel, stride, time dilation) of each hidden conv.
        specs = (
            [(kernel, (1, 1), 1)] + [(kernel, tuple(self.stride), d) for d in self.dilations] + [(square, (1, 1), 1)]
        )
        features: FeatureMaps = []
        for i, (kernel_size, strides, dilation) in enumerate(specs):
            x = WNConv(
                self.filters,
                kernel_size,
                strides=strides,
                kernel_dilation=(dilation, 1),
                padding=_symmetric_padding(kernel_size, (dilation, 1)),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"convs_{i}",
            )(x)
            x = nn.leaky_relu(x, self.negative_slope)
            features.append(x)
        logits = WNConv(
            1,
            square,
            padding=_symmetric_padding(square, (1, 1)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv_post",
        )(x)
        return constrain(logits, _MAPS), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Independent `STFTDiscriminator`s at several STFT resolutions.

    Defaults are the SA2/SAO VAE configuration except `filters` (64 there). `freq_stride`
    is the frequency stride of the dilated convs: 2 in the `encodec` package and
    stable-audio-tools <= 0.0.17, 1 from 0.0.19 on.

    Input `[batch, time, channels]` audio, `time >= max(n_ffts)`. Returns `(logits,
    features)`: one logits map `[batch, frames_s, bins_s', 1]` per scale and, per scale,
    the list of its feature maps.
    """

    filters: int
    n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128)
    hop_lengths: Sequence[int] = (512, 256, 128, 64, 32)
    win_lengths: Sequence[int] = (2048, 1024, 512, 256, 128)
    freq_stride: int = 2
    dilations: Sequence[int] = (1, 2, 4)
    kernel_size: tuple[int, int] = (3, 9)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[list[jax.Array], list[FeatureMaps]]:
        if not len(self.n_ffts) == len(self.hop_lengths) == len(self.win_lengths):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        logits, features = [], []
        for i, (n_fft, hop, win) in enumerate(zip(self.n_ffts, self.hop_lengths, self.win_lengths)):
            scale_logits, scale_features = STFTDiscriminator(
                filters=self.filters,
                n_fft=n_fft,
                hop_length=hop,
                win_length=win,
                kernel_size=tuple(self.kernel_size),
                dilations=tuple(self.dilations),
                stride=(1, self.freq_stride),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"discriminators_{i}",
            )(audio)
            logits.append(scale_logits)
            features.append(scale_features)
        return logits, features
