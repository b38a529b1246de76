"""hear21passt / PaSST weights (e.g. `passt-s-f128-p16-s10-ap.476-swa.pt`) -> `models.passt.PaSST` params.

    tensors = load_state_dict("passt-s-f128-p16-s10-ap.476-swa.pt")      # read without its pickle
    params = passt_params_from_state_dict(StateDictReader(tensors, path), PaSSTConfig())

The AudioSet checkpoint is a release file of github.com/kkoutini/PaSST (what hear21passt's
`get_basic_model` loads); nothing is downloaded here. Keys (the reference `PaSST`'s names, with
or without the wrapper's `net.` prefix):

    patch_embed.proj.weight (E, 1, 16, 16) / .bias      -> patch_embed/kernel (16, 16, 1, E) / bias
    time_new_pos_embed (1, E, 1, T) / freq_new_pos_embed (1, E, F, 1)
                                                        -> time_positions (1, 1, T, E) / freq_positions (1, F, 1, E)
    cls_token, dist_token (1, 1, E), new_pos_embed (1, 2, E)   -> the same names / token_positions
    blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}  -> block_{i}/{norm1, qkv, proj, norm2, fc1, fc2}
    norm, head.0 (LayerNorm), head.1 (Linear)           -> norm, head_norm, head
    head_dist.*                                         (not used by the reference's output: skipped)
    mel.*, device_proxy                                 (the wrapper's front-end buffers: skipped)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, check_tree, dense_params
from stable_audio_jax.models import passt

Params = dict[str, Any]


def _layer_norm(reader: StateDictReader, key: str, dim: int) -> Params:
    return {"scale": reader.take(f"{key}.weight", (dim,)), "bias": reader.take(f"{key}.bias", (dim,))}


HEAD_DIM = 64  # every released PaSST (S and L, from ViT/DeiT) has 64-d attention heads


def _network(reader: StateDictReader) -> StateDictReader:
    """The reader of the network's tensors: a PasstBasicWrapper's state dict keeps them under
    `net.`, beside its front end's buffers."""
    return reader.scoped("net.") if any(k.startswith("net.") for k in reader.keys()) else reader


def passt_config_from_state_dict(reader: StateDictReader) -> passt.PaSSTConfig:
    """The checkpoint's layout read off its shapes: width, depth, labels, patch stride (from the
    frequency grid, 128 // stride rows), time positions; heads of `HEAD_DIM`."""
    reader = _network(reader)
    for key in ("patch_embed.proj.weight", "freq_new_pos_embed", "time_new_pos_embed", "head.1.weight"):
        if not reader.has(key):
            raise ConversionError(f"{reader.source}: missing key {reader.prefix + key!r}: not a PaSST checkpoint")
    dim = int(reader.shape("patch_embed.proj.weight")[0])
    freq_patches, time_patches = int(reader.shape("freq_new_pos_embed")[2]), int(reader.shape("time_new_pos_embed")[3])
    stride = passt.N_MELS // freq_patches
    if dim % HEAD_DIM or passt.N_MELS // stride != freq_patches:
        raise ConversionError(
            f"{reader.source}: a PaSST of width {dim} with {freq_patches} frequency patches is not a layout this port knows"
        )
    depth = len({k.split(".")[1] for k in reader.keys() if k.startswith("blocks.")})
    return passt.PaSSTConfig(
        embed_dim=dim,
        depth=depth,
        num_heads=dim // HEAD_DIM,
        stride=stride,
        time_patches=time_patches,
        num_classes=int(reader.shape("head.1.weight")[0]),
    )


def passt_params_from_state_dict(reader: StateDictReader, config: passt.PaSSTConfig) -> Params:
    """The tagger's params from every key of `reader` (`ConversionError` naming any other key,
    a missing one or a wrong shape)."""
    whole, reader = reader, _network(reader)
    if reader is not whole:  # the wrapper's front-end buffers: the module computes its own
        whole.skip_prefix("mel.")
        whole.skip("device_proxy")
    dim, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    kernel = reader.take("patch_embed.proj.weight", (dim, 1, passt.PATCH, passt.PATCH))
    params: Params = {
        "patch_embed": {
            "kernel": np.transpose(kernel, (2, 3, 1, 0)),
            "bias": reader.take("patch_embed.proj.bias", (dim,)),
        },
        "time_positions": np.transpose(
            reader.take("time_new_pos_embed", (1, dim, 1, config.time_patches)), (0, 2, 3, 1)
        ),
        "freq_positions": np.transpose(
            reader.take("freq_new_pos_embed", (1, dim, config.freq_patches, 1)), (0, 2, 3, 1)
        ),
        "cls_token": reader.take("cls_token", (1, 1, dim)),
        "dist_token": reader.take("dist_token", (1, 1, dim)),
        "token_positions": reader.take("new_pos_embed", (1, 2, dim)),
        "norm": _layer_norm(reader, "norm", dim),
        "head_norm": _layer_norm(reader, "head.0", dim),
        "head": dense_params(reader, "head.1", dim, config.num_classes),
    }
    for i in range(config.depth):
        block = reader.scoped(f"blocks.{i}.")
        params[f"block_{i}"] = {
            "norm1": _layer_norm(block, "norm1", dim),
            "qkv": dense_params(block, "attn.qkv", dim, 3 * dim),
            "proj": dense_params(block, "attn.proj", dim, dim),
            "norm2": _layer_norm(block, "norm2", dim),
            "fc1": dense_params(block, "mlp.fc1", dim, hidden),
            "fc2": dense_params(block, "mlp.fc2", hidden, dim),
        }
    reader.skip("head_dist.weight")
    reader.skip("head_dist.bias")
    whole.finish()
    params = jax.tree.map(lambda a: np.ascontiguousarray(a, np.float32), params)
    check_tree(params, abstract_passt_params(config), "PaSST")
    return params


def abstract_passt_params(config: passt.PaSSTConfig) -> Params:
    """The module's parameter shapes (nothing allocated)."""
    return parallel.abstract_params(passt.PaSST(config), jnp.zeros((1, int(passt.WINDOW_SECONDS * passt.SAMPLE_RATE))))
