"""A LAION-CLAP checkpoint (HTSAT audio branch + RoBERTa text branch) -> `models.clap.CLAP` params.

    config, params, tokenizer = load_laion_clap("music_speech_audioset_epoch_15_esc_89.98.pt", "roberta-base/")

The HTSAT checkpoints of github.com/LAION-AI/CLAP (the non-fusion HTSAT-base music ones,
`music_speech_audioset_epoch_15_esc_89.98.pt` and its siblings, and the fusion HTSAT-tiny
`630k-audioset-fusion-best.pt`, all 48 kHz) are read without executing their pickle; nothing is downloaded. The text
branch's architecture and tokenizer come from a local Hugging Face `roberta-base` folder (its
`config.json`, `vocab.json` + `merges.txt`; its weights are not read), as for Stable Audio 1.0's
prompt encoder (`convert/clap_text_checkpoint.py`). Keys (with or without DDP's `module.`):

    text_branch.*                        -> text_encoder (convert/bert_checkpoint.py; pooler included)
    text_projection.{0,2}, audio_projection.{0,2}   -> text_projection / audio_projection fc1, fc2
    logit_scale_a                        -> logit_scale (logit_scale_t, *_transform.*: not used)
    audio_branch.bn0 (evaluation-mode BatchNorm over mel bins) -> input_scale, input_bias (folded)
    audio_branch.patch_embed.{proj, norm}  -> patch_embed, patch_norm
    audio_branch.layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
        norm2, mlp.fc1, mlp.fc2}         -> stage{i}_block{j}/...
    audio_branch.layers.{i}.downsample.{norm, reduction}  -> stage{i}_merge/...
    audio_branch.norm                    -> norm
    audio_branch.spectrogram_extractor.*, attn_mask, relative_position_index  (fixed: recomputed)
    audio_branch.logmel_extractor.melW   (checked against this port's filterbank, then skipped)
    audio_branch.tscam_conv.*, head.*    (the AudioSet head: not part of the embedding)

HTSAT lays its image out as (frequency, time) and this port as (time, frequency): the patch
kernel is transposed, each relative-position table is re-indexed with its two offsets swapped,
and the patch merging's (odd row, even column) and (even row, odd column) blocks trade places.
Fusion checkpoints (`630k-audioset-fusion-best.pt`, HTSAT-tiny, `fusion_type="aff_2d"`) add

    audio_branch.patch_embed.mel_conv2d  -> patch_mel_conv (transposed like the patch kernel)
    audio_branch.patch_embed.fusion_model.{local_att, global_att}.{conv, BatchNorm, ReLU, conv, BatchNorm}
                                         -> patch_fusion/{local, global}_{1, 2} (BatchNorms folded in)

and take torchaudio's HTK mel front end (`mel_scale="htk"`), as laion-clap's `get_mel` does for
them; the other fusion types (1-D, DAF, iAFF) are refused naming the tensor.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.bert_checkpoint import config_from_hf, params_from_state_dict
from stable_audio_jax.convert.clap_text_checkpoint import CLAP_MAX_LENGTH
from stable_audio_jax.convert.state_dict import (
    ConversionError,
    StateDictReader,
    check_tree,
    dense_params,
    linear_kernel,
    load_state_dict,
)
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models import htsat
from stable_audio_jax.models.clap import CLAP, CLAPConfig
from stable_audio_jax.models.mel import mel_filterbank
from stable_audio_jax.models.text_encoder import check_vocab

Params = dict[str, Any]

# laion-clap's audio_cfg for every HTSAT checkpoint (clap_module/model_configs/HTSAT-*.json):
# the front end is not stored as numbers the module reads, only as its fixed matrices.
LAION_FRONT_END = dict(sample_rate=48000, n_fft=1024, hop_length=480, win_length=1024, f_min=50.0, f_max=14000.0)
LAION_SPEC_SIZE = 256  # HTSAT_Swin_Transformer(spec_size=256); freq_ratio = spec_size // mel_bins
LAION_WINDOW_SAMPLES = 480000  # the 10 s every clip is cropped or repeat-padded to
_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
_FUSION_PREFIX = "patch_embed.fusion_model."
_AFF_2D_PARTS = ("local_att", "global_att")  # iAFF adds local_att2 / global_att2, the 1-D types mel_conv1d
# (conv, BatchNorm) indices of AFF's two bottlenecks: Sequential(conv, BN, ReLU, conv, BN), the
# global one behind an average pool.
_AFF_LAYERS = {"local_att": ((0, 1), (3, 4)), "global_att": ((1, 2), (4, 5))}


def _network(reader: StateDictReader) -> StateDictReader:
    return reader.scoped("module.") if any(k.startswith("module.") for k in reader.keys()) else reader


def _count(reader: StateDictReader, prefix: str) -> int:
    """How many consecutive `prefix{i}.` indices the reader holds."""
    indices = {k[len(prefix) :].split(".")[0] for k in reader.keys() if k.startswith(prefix)}
    count = 0
    while str(count) in indices:
        count += 1
    return count


def htsat_config_from_state_dict(reader: StateDictReader) -> htsat.HTSATConfig:
    """The audio branch's layout read off its shapes (`reader` scoped to `audio_branch.`)."""
    fusion = reader.has("patch_embed.mel_conv2d.weight")
    unknown = sorted(
        k
        for k in reader.keys()
        if "mel_conv1d" in k
        or (k.startswith(_FUSION_PREFIX) and k[len(_FUSION_PREFIX) :].split(".")[0] not in _AFF_2D_PARTS)
    )
    if unknown or (fusion != any(k.startswith(_FUSION_PREFIX) for k in reader.keys())):
        name = unknown[0] if unknown else "patch_embed.mel_conv2d / fusion_model"
        raise ConversionError(
            f"{reader.source}: audio_branch.{name}: only the aff_2d fusion (630k-audioset-fusion-best.pt) and "
            "non-fusion checkpoints are implemented"
        )
    for key in ("bn0.weight", "patch_embed.proj.weight", "layers.0.blocks.0.attn.relative_position_bias_table"):
        if not reader.has(key):
            raise ConversionError(f"{reader.source}: missing key {reader.prefix + key!r}: not an HTSAT audio branch")
    embed_dim, channels, patch, _ = reader.shape("patch_embed.proj.weight")
    if channels != 1:
        raise ConversionError(f"{reader.source}: a patch embedding of {channels} input channels is not HTSAT's")
    stages = _count(reader, "layers.")
    depths = tuple(_count(reader, f"layers.{i}.blocks.") for i in range(stages))
    tables = [reader.shape(f"layers.{i}.blocks.0.attn.relative_position_bias_table") for i in range(stages)]
    side = int(round(np.sqrt(tables[0][0])))
    n_mels = int(reader.shape("bn0.weight")[0])
    config = htsat.HTSATConfig(
        **LAION_FRONT_END,
        n_mels=n_mels,
        spec_size=LAION_SPEC_SIZE,
        freq_ratio=LAION_SPEC_SIZE // n_mels,
        patch_size=int(patch),
        embed_dim=int(embed_dim),
        depths=depths,
        num_heads=tuple(int(t[1]) for t in tables),
        window_size=(side + 1) // 2,
        mlp_ratio=reader.shape("layers.0.blocks.0.mlp.fc1.weight")[0] / embed_dim,
        input_norm="affine",
        frame_resize="bicubic",
        mel_scale="htk" if fusion else "slaney",
        fusion=fusion,
    )
    if reader.has("logmel_extractor.melW"):  # torchlibrosa's Slaney bank, kept by fusion models too
        expected = mel_filterbank(config.sample_rate, config.n_fft, n_mels, config.f_min, config.f_max)
        found = reader.take("logmel_extractor.melW")
        if found.shape != expected.shape or not np.allclose(found, expected, rtol=1e-4, atol=1e-7):
            raise ConversionError(
                f"{reader.source}: its mel filterbank is not LAION-CLAP's 48 kHz, 1024-point, {n_mels}-mel one over "
                f"{config.f_min:g}-{config.f_max:g} Hz (shape {found.shape})"
            )
    return config


def _transposed_table(table: np.ndarray, window: int) -> np.ndarray:
    """The bias table `[(2w-1)^2, heads]` indexed (time offset, frequency offset) instead of HTSAT's
    (frequency offset, time offset)."""
    side = 2 * window - 1
    return table.reshape(side, side, -1).transpose(1, 0, 2).reshape(side * side, -1)


def _merge_order(x: np.ndarray, dim: int, axis: int) -> np.ndarray:
    """HTSAT's merged blocks (f0 t0, f1 t0, f0 t1, f1 t1) in this port's order (t0 f0, t1 f0, t0 f1, t1 f1)."""
    blocks = np.split(x, 4, axis=axis)
    assert blocks[0].shape[axis] == dim
    return np.concatenate([blocks[0], blocks[2], blocks[1], blocks[3]], axis=axis)


def _layer_norm(reader: StateDictReader, key: str, dim: int) -> Params:
    return {"scale": reader.take(f"{key}.weight", (dim,)), "bias": reader.take(f"{key}.bias", (dim,))}


def _folded_conv(reader: StateDictReader, conv: str, norm: str, fan_in: int, fan_out: int) -> Params:
    """A 1x1 conv followed by an evaluation-mode BatchNorm, as one Dense."""
    kernel = linear_kernel(reader.take(f"{conv}.weight", (fan_out, fan_in, 1, 1))[:, :, 0, 0])
    bias = reader.take(f"{conv}.bias", (fan_out,))
    gain = reader.take(f"{norm}.weight", (fan_out,)) / np.sqrt(reader.take(f"{norm}.running_var", (fan_out,)) + _BN_EPS)
    shift = reader.take(f"{norm}.bias", (fan_out,)) - reader.take(f"{norm}.running_mean", (fan_out,)) * gain
    reader.skip(f"{norm}.num_batches_tracked")
    return {"kernel": kernel * gain, "bias": bias * gain + shift}


def _aff_params(reader: StateDictReader, channels: int) -> Params:
    """`AttentionalFeatureFusion` params from laion-clap's `AFF(type="2D")` tensors."""
    inner = channels // 4
    params = {}
    for part, ((conv1, norm1), (conv2, norm2)) in _AFF_LAYERS.items():
        prefix = part.split("_")[0]
        params[f"{prefix}_1"] = _folded_conv(reader, f"{part}.{conv1}", f"{part}.{norm1}", channels, inner)
        params[f"{prefix}_2"] = _folded_conv(reader, f"{part}.{conv2}", f"{part}.{norm2}", inner, channels)
    return params


def htsat_params_from_state_dict(reader: StateDictReader, config: htsat.HTSATConfig) -> Params:
    """`HTSATEncoder(config)`'s params from the tensors under `reader` (scoped to `audio_branch.`)."""
    n_mels, embed, patch = config.n_mels, config.embed_dim, config.patch_size
    weight, bias = reader.take("bn0.weight", (n_mels,)), reader.take("bn0.bias", (n_mels,))
    mean, var = reader.take("bn0.running_mean", (n_mels,)), reader.take("bn0.running_var", (n_mels,))
    reader.skip("bn0.num_batches_tracked")
    scale = weight / np.sqrt(var + _BN_EPS)
    params: Params = {
        "input_scale": scale,
        "input_bias": bias - mean * scale,
        "patch_embed": {
            "kernel": reader.take("patch_embed.proj.weight", (embed, 1, patch, patch)).transpose(3, 2, 1, 0),
            "bias": reader.take("patch_embed.proj.bias", (embed,)),
        },
        "patch_norm": _layer_norm(reader, "patch_embed.norm", embed),
        "norm": _layer_norm(reader, "norm", config.output_dim),
    }
    if config.fusion:
        params["patch_mel_conv"] = {
            "kernel": reader.take("patch_embed.mel_conv2d.weight", (embed, 1, patch, 3 * patch)).transpose(3, 2, 1, 0),
            "bias": reader.take("patch_embed.mel_conv2d.bias", (embed,)),
        }
        params["patch_fusion"] = _aff_params(reader.scoped(_FUSION_PREFIX), embed)
    for key in ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight"):
        reader.skip(key)
    reader.skip_prefix("tscam_conv.")
    reader.skip_prefix("head.")
    for i, (dim, heads, depth, (window, _)) in enumerate(
        zip(config.stage_dims, config.num_heads, config.depths, config.stage_windows)
    ):
        head_dim, hidden = dim // heads, int(dim * config.mlp_ratio)
        for j in range(depth):
            block = reader.scoped(f"layers.{i}.blocks.{j}.")
            qkv_w, qkv_b = block.take("attn.qkv.weight", (3 * dim, dim)), block.take("attn.qkv.bias", (3 * dim,))
            attention = {
                name: {
                    "kernel": linear_kernel(w).reshape(dim, heads, head_dim),
                    "bias": b.reshape(heads, head_dim),
                }
                for name, w, b in zip(("query", "key", "value"), np.split(qkv_w, 3), np.split(qkv_b, 3))
            }
            attention["out"] = {
                "kernel": linear_kernel(block.take("attn.proj.weight", (dim, dim))).reshape(heads, head_dim, dim),
                "bias": block.take("attn.proj.bias", (dim,)),
            }
            table = block.take("attn.relative_position_bias_table", ((2 * window - 1) ** 2, heads))
            block.skip("attn.relative_position_index")
            block.skip("attn_mask")
            params[f"stage{i}_block{j}"] = {
                "norm1": _layer_norm(block, "norm1", dim),
                "norm2": _layer_norm(block, "norm2", dim),
                "attention": {"attention": attention, "relative_position_bias_table": _transposed_table(table, window)},
                "mlp": {
                    "fc1": dense_params(block, "mlp.fc1", dim, hidden),
                    "fc2": dense_params(block, "mlp.fc2", hidden, dim),
                },
            }
        if i < config.num_stages - 1:
            merge = reader.scoped(f"layers.{i}.downsample.")
            norm = _layer_norm(merge, "norm", 4 * dim)
            reduction = merge.take("reduction.weight", (2 * dim, 4 * dim))
            params[f"stage{i}_merge"] = {
                "norm": {k: _merge_order(v, dim, 0) for k, v in norm.items()},
                "reduction": {"kernel": linear_kernel(_merge_order(reduction, dim, 1))},
            }
    return params


def laion_clap_params_from_state_dict(reader: StateDictReader, roberta_config: dict) -> tuple[CLAPConfig, Params]:
    """`(config, params)` of the whole CLAP from every key of `reader`; `roberta_config` is the
    text branch's Hugging Face `config.json`. `ConversionError` names any key left over."""
    net = _network(reader)
    audio_reader = net.scoped("audio_branch.")
    audio_config = htsat_config_from_state_dict(audio_reader)
    try:
        text_config = config_from_hf(roberta_config)
        text = net.scoped("text_branch.")
        text_params = params_from_state_dict({k: text.take(k) for k in text.keys()}, text_config)
    except ValueError as e:
        raise ConversionError(f"{reader.source}: {e}") from e
    embed_dim = net.shape("text_projection.2.weight")[0]
    config = CLAPConfig(text=text_config, audio=audio_config, embed_dim=int(embed_dim))
    params = {
        "text_encoder": text_params,
        "audio_encoder": htsat_params_from_state_dict(audio_reader, audio_config),
        "text_projection": {
            "fc1": dense_params(net, "text_projection.0", text_config.hidden_size, embed_dim),
            "fc2": dense_params(net, "text_projection.2", embed_dim, embed_dim),
        },
        "audio_projection": {
            "fc1": dense_params(net, "audio_projection.0", audio_config.output_dim, embed_dim),
            "fc2": dense_params(net, "audio_projection.2", embed_dim, embed_dim),
        },
        "logit_scale": net.take("logit_scale_a").reshape(()),
    }
    net.skip("logit_scale_t")
    net.skip_prefix("audio_transform.")
    net.skip_prefix("text_transform.")
    reader.finish()
    check_tree(params, abstract_params(config), f"{reader.source} (LAION-CLAP)")
    return config, jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def load_laion_clap(
    checkpoint: str | os.PathLike, roberta_dir: str | os.PathLike
) -> tuple[CLAPConfig, Params, TextTokenizer]:
    """`(config, params, tokenizer)` of a LAION-CLAP checkpoint with its RoBERTa folder.

    Raises FileNotFoundError (naming the file or folder) or ConversionError."""
    roberta_dir = os.fspath(roberta_dir)
    config_path = os.path.join(roberta_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in the RoBERTa folder {roberta_dir!r}")
    with open(config_path, encoding="utf-8") as f:
        roberta_config = json.load(f)
    source = os.fspath(checkpoint)
    config, params = laion_clap_params_from_state_dict(StateDictReader(load_state_dict(source), source), roberta_config)
    try:
        tokenizer = TextTokenizer.from_file(roberta_dir, max_length=CLAP_MAX_LENGTH)
        check_vocab(tokenizer, config.text)
    except ValueError as e:
        raise ConversionError(f"{source} with {roberta_dir}: {e}") from e
    return config, params, tokenizer


def abstract_params(config: CLAPConfig) -> Params:
    """`CLAP(config)`'s param shapes (logically boxed), allocating nothing."""
    ids = jnp.zeros((1, 1), jnp.int32)
    audio = jnp.zeros((1, config.audio.num_samples), jnp.float32)
    return parallel.abstract_params(CLAP(config), audio, ids, ids == 0)
