"""Stable Audio 1.0's U-Net weights (stable-audio-tools `adp_cfg_1d`) -> `models.unet.UNet1D` params.

    tensors = load_state_dict("model.safetensors")              # an SA 1.0 diffusion checkpoint
    params = unet_params_from_state_dict(StateDictReader(tensors, "model.safetensors"), UNetConfig.sa1())

The reference module is `UNetCFG1DWrapper.model`, an ADP `UNetCFG1d` (`models/adp.py`), so
its keys start with `P = model.model.`. Mapping (R a ResNet block, T a Transformer1d, A an
attention; torch Linear `[out, in]` and Conv1d `[out, in, k]` weights are transposed):

    P to_time.0.0.weights                  -> to_time/fourier/weights
    P to_time.0.1.{weight,bias}            -> to_time/proj
    P to_features.0.{weight,bias}          -> to_features              (global features only)
    P to_mapping.{0,2}.{weight,bias}       -> to_mapping_{0,1}
    P to_in.block. R / P to_out.block. R   -> to_in / to_out
    P downsamples.i.downsample             -> downsamples_i_downsample  (Conv1d)
    P downsamples.i.blocks.j. R            -> downsamples_i_blocks_j
    P downsamples.i.transformer. T         -> downsamples_i_transformer
    P bottleneck.{pre_block,post_block}. R -> bottleneck_{pre,post}_block
    P bottleneck.transformer. T            -> bottleneck_transformer
    P upsamples.n.{blocks.j, transformer}  -> upsamples_n_{blocks_j, transformer}
    P upsamples.n.upsample                 -> upsamples_n_upsample (Conv1d k3, or ConvTranspose1d
                                              `[in, out, k]` -> kernel `[k, in, out]`)
    P fixed_embedding.embedding.weight     -> fixed_embedding

    R block{1,2}.groupnorm.{weight,bias}   -> block{1,2}/groupnorm/{scale,bias}
    R block{1,2}.project                   -> block{1,2}/project
    R to_scale_shift.to_scale_shift.1      -> to_scale_shift
    R to_out                               -> to_out                   (1x1, when the width changes)
    T to_in.0 (GroupNorm) / to_in.1 / to_out.1  -> to_in_norm / to_in / to_out
    T blocks.j.{attention,cross_attention}. A, blocks.j.feed_forward.{0,2} -> blocks_j/..., feed_forward/fc{1,2}
    A norm, norm_context (LayerNorm)       -> norm, norm_context
    A to_q.weight [C, C]                   -> attention/query/kernel [C, H, C/H]
    A to_kv.weight [2C, D]                 -> attention/{key,value}/kernel [D, H, C/H] (chunk order k, v)
    A attention.to_out.{weight,bias}       -> attention/out/{kernel [H, C/H, C], bias}

Every key under the prefix must be used and every shape must match the config; the errors
name the key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import (
    StateDictReader,
    check_tree,
    conv1d_kernel,
    dense_params,
    head_kernel,
    linear_kernel,
)
from stable_audio_jax.models.unet import UNet1D, UNetConfig

UNET_PREFIX = "model.model."  # the backbone inside an (unwrapped) diffusion_cond checkpoint

Params = dict[str, Any]


def _conv(reader: StateDictReader, key: str, cin: int, cout: int, k: int) -> Params:
    return {
        "kernel": conv1d_kernel(reader.take(f"{key}.weight", (cout, cin, k))),
        "bias": reader.take(f"{key}.bias", (cout,)),
    }


def _norm(reader: StateDictReader, key: str, width: int) -> Params:
    """A GroupNorm or LayerNorm: `weight`/`bias` -> `scale`/`bias`."""
    return {"scale": reader.take(f"{key}.weight", (width,)), "bias": reader.take(f"{key}.bias", (width,))}


def _resnet(reader: StateDictReader, cin: int, cout: int, mapping: int) -> Params:
    params = {
        "block1": {
            "groupnorm": _norm(reader, "block1.groupnorm", cin),
            "project": _conv(reader, "block1.project", cin, cout, 3),
        },
        "to_scale_shift": dense_params(reader, "to_scale_shift.to_scale_shift.1", mapping, 2 * cout),
        "block2": {
            "groupnorm": _norm(reader, "block2.groupnorm", cout),
            "project": _conv(reader, "block2.project", cout, cout, 3),
        },
    }
    if cin != cout:
        params["to_out"] = _conv(reader, "to_out", cin, cout, 1)
    return params


def _attention(reader: StateDictReader, width: int, context: int, heads: int) -> Params:
    head_dim = width // heads
    k, v = np.split(reader.take("to_kv.weight", (2 * width, context)), 2, axis=0)
    out = reader.take("attention.to_out.weight", (width, width))
    return {
        "norm": _norm(reader, "norm", width),
        "norm_context": _norm(reader, "norm_context", context),
        "attention": {
            "query": {"kernel": head_kernel(reader.take("to_q.weight", (width, width)), heads, head_dim)},
            "key": {"kernel": head_kernel(k, heads, head_dim)},
            "value": {"kernel": head_kernel(v, heads, head_dim)},
            "out": {
                "kernel": linear_kernel(out).reshape(heads, head_dim, width),
                "bias": reader.take("attention.to_out.bias", (width,)),
            },
        },
    }


def _transformer(reader: StateDictReader, width: int, layers: int, c: UNetConfig) -> Params:
    params = {
        "to_in_norm": _norm(reader, "to_in.0", width),
        "to_in": _conv(reader, "to_in.1", width, width, 1),
        "to_out": _conv(reader, "to_out.1", width, width, 1),
    }
    hidden = width * c.attention_multiplier
    for j in range(layers):
        block = reader.scoped(f"blocks.{j}.")
        params[f"blocks_{j}"] = {
            "attention": _attention(block.scoped("attention."), width, width, c.attention_heads),
            "cross_attention": _attention(
                block.scoped("cross_attention."), width, c.context_features, c.attention_heads
            ),
            "feed_forward": {
                "fc1": dense_params(block, "feed_forward.0", width, hidden),
                "fc2": dense_params(block, "feed_forward.2", hidden, width),
            },
        }
    return params


def unet_params_from_state_dict(
    reader: StateDictReader, config: UNetConfig, *, prefix: str = UNET_PREFIX, dtype: Any = np.float32
) -> Params:
    """The U-Net's linen params from the `prefix` keys of `reader`, cast to `dtype`.

    Every key under `prefix` must be used (else `ConversionError` listing the unexpected
    ones); keys outside it (the conditioner, the VAE) are left for other importers.
    Options the reference U-Net has and `UNetConfig` lacks (STFT, context channels,
    nearest upsampling, cross-attention time) are rejected by the model-config parser.
    """
    c = config
    net = reader.scoped(prefix)
    m, w = c.mapping_features, c.widths
    params: Params = {
        "to_time": {
            "fourier": {"weights": net.take("to_time.0.0.weights", (c.channels // 2,))},
            "proj": dense_params(net, "to_time.0.1", c.channels + 1, m),
        },
        "to_mapping_0": dense_params(net, "to_mapping.0", m, m),
        "to_mapping_1": dense_params(net, "to_mapping.2", m, m),
        "to_in": _resnet(net.scoped("to_in.block."), c.in_channels, w[0], m),
        "to_out": _resnet(net.scoped("to_out.block."), w[0], c.in_channels, m),
        "fixed_embedding": net.take("fixed_embedding.embedding.weight", (c.context_length, c.context_features)),
    }
    if c.global_features:
        params["to_features"] = dense_params(net, "to_features.0", c.global_features, m)
    for i, factor in enumerate(c.factors):
        down = net.scoped(f"downsamples.{i}.")
        params[f"downsamples_{i}_downsample"] = _conv(
            down, "downsample", w[i], w[i + 1], factor * c.kernel_multiplier_downsample + 1
        )
        for j in range(c.num_blocks[i]):
            params[f"downsamples_{i}_blocks_{j}"] = _resnet(down.scoped(f"blocks.{j}."), w[i + 1], w[i + 1], m)
        if c.attentions[i]:
            params[f"downsamples_{i}_transformer"] = _transformer(
                down.scoped("transformer."), w[i + 1], c.attentions[i], c
            )
    bottleneck = net.scoped("bottleneck.")
    params["bottleneck_pre_block"] = _resnet(bottleneck.scoped("pre_block."), w[-1], w[-1], m)
    params["bottleneck_post_block"] = _resnet(bottleneck.scoped("post_block."), w[-1], w[-1], m)
    if c.attentions[-1]:
        params["bottleneck_transformer"] = _transformer(bottleneck.scoped("transformer."), w[-1], c.attentions[-1], c)
    for n, i in enumerate(reversed(range(len(c.factors)))):
        up = net.scoped(f"upsamples.{n}.")
        for j in range(c.num_blocks[i] + (1 if c.attentions[i] else 0)):
            params[f"upsamples_{n}_blocks_{j}"] = _resnet(up.scoped(f"blocks.{j}."), 2 * w[i + 1], w[i + 1], m)
        if c.attentions[i]:
            params[f"upsamples_{n}_transformer"] = _transformer(up.scoped("transformer."), w[i + 1], c.attentions[i], c)
        factor = c.factors[i]
        if factor == 1:
            params[f"upsamples_{n}_upsample"] = _conv(up, "upsample", w[i + 1], w[i], 3)
        else:
            weight = up.take("upsample.weight", (w[i + 1], w[i], 2 * factor))
            params[f"upsamples_{n}_upsample"] = {
                "kernel": np.transpose(weight, (2, 0, 1)),
                "bias": up.take("upsample.bias", (w[i],)),
            }
    net.finish()
    params = jax.tree.map(lambda a: np.ascontiguousarray(a, dtype=dtype), params)
    check_tree(params, abstract_unet_params(c), "U-Net")
    return params


def abstract_unet_params(config: UNetConfig) -> Params:
    """The module's parameter shapes (`jax.eval_shape`, nothing allocated)."""
    c = config
    inputs = [
        jnp.zeros((1, c.downsampling_factor, c.in_channels)),
        jnp.zeros((1,)),
        jnp.zeros((1, c.context_length, c.context_features)),
        None,
        None,
        jnp.zeros((1, c.global_features)) if c.global_features else None,
        jnp.zeros((1, c.downsampling_factor, c.frame_features)) if c.frame_features else None,
    ]
    return parallel.abstract_params(UNet1D(c), *inputs)


__all__ = ["UNET_PREFIX", "abstract_unet_params", "unet_params_from_state_dict"]
