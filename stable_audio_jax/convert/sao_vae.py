"""Import the Oobleck VAE of a stable-audio-tools checkpoint (SAO / SA 2.0 layout).

The reference keys (stable-audio-tools models/autoencoders.py, OobleckEncoder/Decoder) are `encoder.layers.*` / `decoder.layers.*` under the
prefix of the checkpoint kind: none in a standalone autoencoder checkpoint,
`pretransform.model.` in a diffusion checkpoint. `autoencoder_params_from_state_dict` reads
them from a `StateDictReader` scoped to that prefix and returns the param tree of
`models.autoencoder.AudioAutoencoder`.

Every Oobleck conv is weight-normed in the reference and in our layers, so the (g, v) pair
is kept, not folded: the converted model computes the same kernels and fine-tunes with the
same parameterisation. Layouts:

- Conv1d: `weight_v` `[out, in, k]` -> `[k, in, out]`; `weight_g` `[out, 1, 1]` -> `[out]`.
- ConvTranspose1d: `weight_v` `[in, out, k]` -> `[k, in, out]`; `weight_g` `[in, 1, 1]` ->
  `[in]` (PyTorch's weight-norm dim 0 is the *input* channel here).
- SnakeBeta: `alpha`, `beta` `[C]` as they are (both are log scale in both models).

The reference `nn.Sequential` indices map onto linen's auto-names:

    encoder.layers.0 -> WNConv_0;  .{1+i} -> EncoderBlock_i;  .{n+1} -> Snake_0;  .{n+2} -> WNConv_1
    EncoderBlock.layers.{0,1,2} -> ResidualUnit_{0,1,2};  .3 -> Snake_0;  .4 -> WNConv_0
    decoder.layers.0 -> WNConv_0;  .{1+i} -> DecoderBlock_i;  .{n+1} -> Snake_0;  .{n+2} -> WNConv_1
    DecoderBlock.layers.0 -> Snake_0;  .1 -> WNConvTranspose1d_0;  .{2,3,4} -> ResidualUnit_{0,1,2}
    ResidualUnit.layers.0 -> Snake_0;  .1 -> WNConv_0;  .2 -> Snake_1;  .3 -> WNConv_1
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import (
    ConversionError,
    StateDictReader,
    check_tree,
    conv1d_kernel,
    load_state_dict,
)
from stable_audio_jax.models.autoencoder import AudioAutoencoder, AutoencoderConfig

Params = dict[str, Any]

DIFFUSION_PREFIX = "pretransform.model."


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32)


def _snake(reader: StateDictReader, key: str, channels: int) -> Params:
    return {name: _f32(reader.take(f"{key}.{name}", (channels,))) for name in ("alpha", "beta")}


def _wn_conv(reader: StateDictReader, key: str, c_in: int, c_out: int, kernel: int, use_bias: bool = True) -> Params:
    """A weight-normed Conv1d `key` -> `WNConv` params."""
    params = {
        "weight_v": _f32(conv1d_kernel(reader.take(f"{key}.weight_v", (c_out, c_in, kernel)))),
        "weight_g": _f32(reader.take(f"{key}.weight_g", (c_out, 1, 1)).reshape(c_out)),
    }
    if use_bias:
        params["bias"] = _f32(reader.take(f"{key}.bias", (c_out,)))
    return params


def _wn_conv_transpose(reader: StateDictReader, key: str, c_in: int, c_out: int, kernel: int) -> Params:
    """A weight-normed ConvTranspose1d `key` -> `WNConvTranspose1d` params."""
    v = reader.take(f"{key}.weight_v", (c_in, c_out, kernel))
    return {
        "weight_v": _f32(np.ascontiguousarray(np.transpose(v, (2, 0, 1)))),
        "weight_g": _f32(reader.take(f"{key}.weight_g", (c_in, 1, 1)).reshape(c_in)),
        "bias": _f32(reader.take(f"{key}.bias", (c_out,))),
    }


def _residual_unit(reader: StateDictReader, key: str, channels: int) -> Params:
    return {
        "Snake_0": _snake(reader, f"{key}.layers.0", channels),
        "WNConv_0": _wn_conv(reader, f"{key}.layers.1", channels, channels, 7),
        "Snake_1": _snake(reader, f"{key}.layers.2", channels),
        "WNConv_1": _wn_conv(reader, f"{key}.layers.3", channels, channels, 1),
    }


def _encoder(reader: StateDictReader, c: AutoencoderConfig) -> Params:
    widths = [c.encoder_channels * m for m in c.encoder_multipliers]
    params = {"WNConv_0": _wn_conv(reader, "layers.0", c.io_channels, widths[0], 7)}
    for i, stride in enumerate(c.strides):
        block = f"layers.{i + 1}"
        c_in, c_out = widths[i], widths[i + 1]
        units = {
            f"ResidualUnit_{j}": _residual_unit(reader, f"{block}.layers.{j}", c_in) for j in range(len(c.dilations))
        }
        n = len(c.dilations)
        params[f"EncoderBlock_{i}"] = {
            **units,
            "Snake_0": _snake(reader, f"{block}.layers.{n}", c_in),
            "WNConv_0": _wn_conv(reader, f"{block}.layers.{n + 1}", c_in, c_out, 2 * stride),
        }
    n = len(c.strides)
    params["Snake_0"] = _snake(reader, f"layers.{n + 1}", widths[-1])
    out = c.encoder_out_channels or 2 * c.latent_dim
    params["WNConv_1"] = _wn_conv(reader, f"layers.{n + 2}", widths[-1], out, 3)
    return params


def _decoder(reader: StateDictReader, c: AutoencoderConfig) -> Params:
    widths = [c.decoder_channels * m for m in reversed(c.decoder_multipliers)]
    params = {"WNConv_0": _wn_conv(reader, "layers.0", c.latent_dim, widths[0], 7)}
    for i, stride in enumerate(reversed(c.strides)):
        block = f"layers.{i + 1}"
        c_in, c_out = widths[i], widths[i + 1]
        params[f"DecoderBlock_{i}"] = {
            "Snake_0": _snake(reader, f"{block}.layers.0", c_in),
            "WNConvTranspose1d_0": _wn_conv_transpose(reader, f"{block}.layers.1", c_in, c_out, 2 * stride),
            **{
                f"ResidualUnit_{j}": _residual_unit(reader, f"{block}.layers.{j + 2}", c_out)
                for j in range(len(c.dilations))
            },
        }
    n = len(c.strides)
    params["Snake_0"] = _snake(reader, f"layers.{n + 1}", widths[-1])
    params["WNConv_1"] = _wn_conv(
        reader, f"layers.{n + 2}", widths[-1], c.io_channels, 7, use_bias=c.decoder_final_bias
    )
    return params


def autoencoder_params_from_state_dict(reader: StateDictReader, config: AutoencoderConfig) -> Params:
    """The `AudioAutoencoder(config)` params (`{"encoder": ..., "decoder": ...}`, float32).

    Args:
      reader: scoped to the autoencoder (`""` for a standalone autoencoder checkpoint,
        `DIFFUSION_PREFIX` for a diffusion checkpoint). Every tensor it takes is marked as
        used; the caller decides when to `finish()`.
      config: an Oobleck configuration (SnakeBeta, no encoder projection), e.g.
        `config_lib.SAO_AUTOENCODER`.

    Raises:
      ConversionError naming the key for a missing tensor or a shape that does not fit the
      config, and if the result does not match the module's param tree.
    """
    if not config.snake_beta or config.encoder_projection:
        raise ConversionError(
            "only the Oobleck layout (SnakeBeta, no encoder projection) is importable; "
            "the SA 1.0 DAC-based VAE has different keys"
        )
    params = {
        "encoder": _encoder(reader.scoped("encoder."), config),
        "decoder": _decoder(reader.scoped("decoder."), config),
    }
    check_tree(params, abstract_autoencoder_params(config), "autoencoder")
    return params


def abstract_autoencoder_params(config: AutoencoderConfig) -> Params:
    """The module's param shapes, traced without allocating (dummy audio of one latent frame)."""
    audio = jax.ShapeDtypeStruct((1, config.downsampling_ratio, config.io_channels), jnp.float32)
    return parallel.abstract_params(AudioAutoencoder(config), audio)


def load_autoencoder_checkpoint(path: str | os.PathLike, config: AutoencoderConfig) -> Params:
    """Reads the VAE of a checkpoint file: a standalone autoencoder (`encoder.*`,
    `decoder.*`) or a diffusion model (`pretransform.model.*`; its other parts are ignored).
    Every tensor under the VAE's prefix must map to a parameter."""
    tensors = load_state_dict(path)
    prefix = DIFFUSION_PREFIX if any(k.startswith(DIFFUSION_PREFIX) for k in tensors) else ""
    reader = StateDictReader(tensors, source=os.fspath(path)).scoped(prefix)
    params = autoencoder_params_from_state_dict(reader, config)
    reader.finish()
    return params
