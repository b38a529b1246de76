"""Stable Audio Open's DiT weights (PyTorch state dict) -> `models.dit.DiffusionTransformer` params.

    tensors = load_state_dict("model.safetensors")            # the whole SAO checkpoint
    params = dit_params_from_state_dict(StateDictReader(tensors, "model.safetensors"), DiTConfig.sao())
    check_dit_params(params, DiTConfig.sao())                  # same leaves and shapes as the module

Key mapping (stable-audio-tools' `DiTWrapper` state dict; `P = model.model.`, `L = P + transformer.layers.{i}.`):

    P timestep_features.weight (half, 1)          -> timestep_features/kernel (1, half)
    P to_{timestep,cond,global}_embed.{0,2}.*     -> to_..._embed_{0,2}/kernel (in, out) [, bias]
    P {pre,post}process_conv.weight (C, C, 1)     -> {pre,post}process_conv/kernel (C, C)  (pre: C + input_concat_dim)
    P transformer.project_{in,out}.weight         -> project_{in,out}/kernel
    P transformer.rotary_pos_emb.inv_freq         (buffer: checked against the config's RoPE)
    L {pre_norm,cross_attend_norm,ff_norm}.gamma  -> layers_i/<norm>/scale   (`.beta`: zero buffer, checked)
    L self_attn.to_qkv.weight (3E, E)             -> layers_i/self_attn/{query,key,value}/kernel (E, H, D)
    L self_attn.to_out.weight (E, E)              -> layers_i/self_attn/out/kernel (H, D, E)
    L cross_attn.to_q.weight (E, E)               -> layers_i/cross_attn/query/kernel (E, H, D)
    L cross_attn.to_kv.weight (2C, C)             -> layers_i/cross_attn/{key,value}/kernel (C, K, D)
    L {self,cross}_attn.{q,k}_norm.{weight,bias}  -> layers_i/<attn>/{q,k}_norm/{scale,bias} (D,)  (qk_norm "ln")
    L cross_attn.to_out.weight (E, E)             -> layers_i/cross_attn/out/kernel (H, D, E)
    L ff.ff.0.proj.weight/.bias (2I, E) / (2I,)   -> layers_i/ff/kernel (E, 2, I) / bias (2, I): [value, gate]
    L ff.ff.2.weight/.bias (E, I) / (E,)          -> layers_i/ff/out/kernel (I, E) / bias

C is the context width: `cond_token_dim`, or E with `project_cond_tokens` (then
`to_cond_embed.0` is `(E, cond_token_dim)`). Fused projections are split in their chunk
order (q, k, v and k, v); heads are the
contiguous `(h d)` blocks of an output dim. Every tensor under the prefix must be used or
be one of the checked buffers, and every shape must match the config: the errors name the key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import (
    ConversionError,
    StateDictReader,
    check_tree,
    dense_params,
    head_kernel,
    linear_kernel,
)
from stable_audio_jax.models.dit import DiffusionTransformer, DiTConfig

DIT_PREFIX = "model.model."  # the backbone inside an (unwrapped) diffusion_cond checkpoint

Params = dict[str, Any]


def _norm(reader: StateDictReader, key: str, width: int) -> Params:
    # The SAO LayerNorm's `beta` is a zero buffer; the model has no bias to put anything else in.
    reader.skip(f"{key}.beta", must_be_zero=True)
    return {"scale": reader.take(f"{key}.gamma", (width,))}


def _qk_norms(reader: StateDictReader, attention: str, c: DiTConfig) -> Params:
    """The per-head q/k LayerNorms of one attention (none unless `qk_norm` is "ln")."""
    if c.qk_norm != "ln":
        return {}
    d = c.head_dim
    return {
        f"{x}_norm": {
            "scale": reader.take(f"{attention}.{x}_norm.weight", (d,)),
            "bias": reader.take(f"{attention}.{x}_norm.bias", (d,)),
        }
        for x in ("q", "k")
    }


def _block(reader: StateDictReader, c: DiTConfig) -> Params:
    e, h, d, k, cd = c.embed_dim, c.num_heads, c.head_dim, c.kv_heads, c.cond_embed_dim
    inner = e * c.ff_mult
    out_kernel = lambda key: linear_kernel(reader.take(key, (e, e))).reshape(h, d, e)  # noqa: E731
    q, k_self, v = np.split(reader.take("self_attn.to_qkv.weight", (3 * e, e)), 3, axis=0)
    k_cross, v_cross = np.split(reader.take("cross_attn.to_kv.weight", (2 * cd, cd)), 2, axis=0)
    ff_in = reader.take("ff.ff.0.proj.weight", (2 * inner, e))
    return {
        "pre_norm": _norm(reader, "pre_norm", e),
        "self_attn": {
            "query": {"kernel": head_kernel(q, h, d)},
            "key": {"kernel": head_kernel(k_self, h, d)},
            "value": {"kernel": head_kernel(v, h, d)},
            "out": {"kernel": out_kernel("self_attn.to_out.weight")},
            **_qk_norms(reader, "self_attn", c),
        },
        "cross_attend_norm": _norm(reader, "cross_attend_norm", e),
        "cross_attn": {
            "query": {"kernel": head_kernel(reader.take("cross_attn.to_q.weight", (e, e)), h, d)},
            "key": {"kernel": head_kernel(k_cross, k, d)},
            "value": {"kernel": head_kernel(v_cross, k, d)},
            "out": {"kernel": out_kernel("cross_attn.to_out.weight")},
            **_qk_norms(reader, "cross_attn", c),
        },
        "ff_norm": _norm(reader, "ff_norm", e),
        "ff": {
            "kernel": linear_kernel(ff_in).reshape(e, 2, inner),
            "bias": reader.take("ff.ff.0.proj.bias", (2 * inner,)).reshape(2, inner),
            "out": dense_params(reader, "ff.ff.2", inner, e, bias=True),
        },
    }


def _check_inv_freq(reader: StateDictReader, c: DiTConfig) -> None:
    """The RoPE frequency buffer, when present, must be the one the config computes."""
    key = "transformer.rotary_pos_emb.inv_freq"
    if not reader.has(key):
        return
    got = reader.take(key, (c.rotary_dims // 2,)).astype(np.float64)
    want = c.rotary_base ** (-np.arange(0, c.rotary_dims, 2) / c.rotary_dims)
    if not np.allclose(got, want, rtol=1e-5, atol=0):
        raise ConversionError(
            f"{reader.source}: {reader.prefix + key!r} holds other RoPE frequencies than "
            f"rotary_dim={c.rotary_dims}, base={c.rotary_base} give"
        )


def dit_params_from_state_dict(
    reader: StateDictReader, config: DiTConfig, *, prefix: str = DIT_PREFIX, dtype: Any = np.float32
) -> Params:
    """The DiT's linen params from the `prefix` keys of `reader`, cast to `dtype`.

    Every key under `prefix` must be used (else `ConversionError` listing the unexpected
    ones); keys outside it (the conditioner, the VAE) are left for other importers.
    """
    c = config
    dit = reader.scoped(prefix)
    e, io, dim_in = c.embed_dim, c.io_channels, c.input_dim
    conv = lambda key, n: dit.take(key, (n, n, 1))[:, :, 0].T  # noqa: E731  (out, in, 1) -> (in, out)
    params: Params = {
        "timestep_features": {"kernel": dit.take("timestep_features.weight", (c.timestep_features_dim // 2, 1)).T},
        "to_timestep_embed_0": dense_params(dit, "to_timestep_embed.0", c.timestep_features_dim, e, bias=True),
        "to_timestep_embed_2": dense_params(dit, "to_timestep_embed.2", e, e, bias=True),
        "to_cond_embed_0": dense_params(dit, "to_cond_embed.0", c.cond_token_dim, c.cond_embed_dim, bias=False),
        "to_cond_embed_2": dense_params(dit, "to_cond_embed.2", c.cond_embed_dim, c.cond_embed_dim, bias=False),
        "preprocess_conv": {"kernel": conv("preprocess_conv.weight", dim_in)},
        "postprocess_conv": {"kernel": conv("postprocess_conv.weight", io)},
        "project_in": dense_params(dit, "transformer.project_in", dim_in, e, bias=False),
        "project_out": dense_params(dit, "transformer.project_out", e, io, bias=False),
    }
    if c.global_cond_dim:
        params["to_global_embed_0"] = dense_params(dit, "to_global_embed.0", c.global_cond_dim, e, bias=False)
        params["to_global_embed_2"] = dense_params(dit, "to_global_embed.2", e, e, bias=False)
    _check_inv_freq(dit, c)
    for i in range(c.depth):
        params[f"layers_{i}"] = _block(dit.scoped(f"transformer.layers.{i}."), c)
    dit.finish()
    return jax.tree.map(lambda a: np.ascontiguousarray(a, dtype=dtype), params)


def abstract_dit_params(config: DiTConfig) -> Params:
    """The module's parameter shapes (`jax.eval_shape`, nothing allocated)."""
    inputs = (
        jnp.zeros((1, 2, config.io_channels)),
        jnp.zeros((1,)),
        jnp.zeros((1, 1, config.cond_token_dim)),
        jnp.zeros((1, config.global_cond_dim)) if config.global_cond_dim else None,
    )
    concat = jnp.zeros((1, 2, config.input_concat_dim)) if config.input_concat_dim else None
    return parallel.abstract_params(DiffusionTransformer(config), *inputs, input_concat=concat)


def check_dit_params(params: Params, config: DiTConfig) -> None:
    """`ConversionError` unless `params` has exactly the module's leaves and shapes."""
    check_tree(params, abstract_dit_params(config), "DiT")


__all__ = ["DIT_PREFIX", "abstract_dit_params", "check_dit_params", "dit_params_from_state_dict"]
