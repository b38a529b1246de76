"""Import a Hugging Face T5 folder (`t5-base` layout) into `T5Encoder` params and a tokenizer.

A folder holds `config.json`, the weights (`model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin`, read without executing pickles)
and the tokenizer (`tokenizer.json`, or `spiece.model` with the `sentencepiece` package):

    config, params, tokenizer = load_t5_checkpoint("/models/t5-base")
    ids, mask = tokenizer(["warm analog pads, 90 BPM"])            # [1, 128] each
    hidden = T5Encoder(config).apply({"params": params}, ids, mask)   # [1, 128, 768]

Name mapping (`i` a layer; torch Linear weights are `[out, in]`; D = d_model,
N = heads, K = d_kv):

    shared.weight | encoder.embed_tokens.weight        token_embedding/embedding [V, D]
        (tied in HF T5: either or both may be stored; both must then be equal)
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
                                                       relative_attention_bias/embedding [buckets, N]
    encoder.block.i.layer.0.layer_norm.weight          layer_i/attention_norm/scale
    encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight [N*K, D]
                                                       layer_i/attention/{query,key,value}/kernel
                                                       = W.T reshaped [D, N, K]
    encoder.block.i.layer.0.SelfAttention.o.weight [D, N*K]
                                                       layer_i/attention/out/kernel = W.T -> [N, K, D]
    encoder.block.i.layer.1.layer_norm.weight          layer_i/mlp_norm/scale
    encoder.block.i.layer.1.DenseReluDense.{wi | wi_0, wi_1, wo}.weight
                                                       layer_i/mlp/{...}/kernel = W.T
    encoder.final_layer_norm.weight                    final_norm/scale

A full `T5ForConditionalGeneration` checkpoint (the released t5-base) also holds
`decoder.*` and `lm_head.weight`; those are ignored. Any other tensor that maps nowhere,
any missing one and any shape mismatch is a `ConversionError` naming the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import (
    ConversionError,
    StateDictReader,
    check_tree,
    linear_kernel,
    load_state_dict,
)
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.t5 import T5Config, T5Encoder

Params = dict[str, Any]

T5_MAX_LENGTH = 128  # SAO's T5Conditioner (stable-audio-tools models/conditioners.py, T5Conditioner max_length)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
_IGNORED_PREFIXES = ("decoder.", "lm_head.")


def abstract_params(config: T5Config) -> Params:
    """`T5Encoder(config)`'s param shapes (logically boxed), allocating nothing."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return parallel.abstract_params(T5Encoder(config), ids, ids == 0)


def params_from_state_dict(
    tensors: Mapping[str, np.ndarray], config: T5Config, source: str = "T5 checkpoint", dtype: Any = np.float32
) -> Params:
    """Maps a HF T5 state dict onto the `T5Encoder` param tree (see the module docstring).

    Returns the plain nested dict (no `"params"` key) of `dtype` arrays.

    Raises:
      ConversionError: a missing or unexpected key, or a shape that does not fit `config`.
    """
    c = config
    d, n, k, inner = c.d_model, c.num_heads, c.d_kv, c.num_heads * c.d_kv
    reader = StateDictReader(tensors, source)
    for prefix in _IGNORED_PREFIXES:
        reader.skip_prefix(prefix)

    embeddings = {
        key: reader.take(key, (c.vocab_size, d))
        for key in ("shared.weight", "encoder.embed_tokens.weight")
        if reader.has(key)
    }
    if not embeddings:
        raise ConversionError(f"{source}: missing key 'shared.weight' (or its tied copy 'encoder.embed_tokens.weight')")
    if len(embeddings) == 2 and not np.array_equal(*embeddings.values()):
        raise ConversionError(
            f"{source}: 'shared.weight' and 'encoder.embed_tokens.weight' differ; the T5 encoder ties them"
        )
    params: Params = {"token_embedding": {"embedding": next(iter(embeddings.values()))}}

    enc = reader.scoped("encoder.")
    params["relative_attention_bias"] = {
        "embedding": enc.take(
            "block.0.layer.0.SelfAttention.relative_attention_bias.weight", (c.relative_attention_num_buckets, n)
        )
    }
    ffn = ("wi_0", "wi_1") if c.is_gated else ("wi",)
    for i in range(c.num_layers):
        block = enc.scoped(f"block.{i}.")
        attn = block.scoped("layer.0.SelfAttention.")
        mlp = block.scoped("layer.1.DenseReluDense.")
        attention = {
            name: {"kernel": linear_kernel(attn.take(f"{hf}.weight", (inner, d))).reshape(d, n, k)}
            for hf, name in (("q", "query"), ("k", "key"), ("v", "value"))
        }
        attention["out"] = {"kernel": linear_kernel(attn.take("o.weight", (d, inner))).reshape(n, k, d)}
        feed_forward = {name: {"kernel": linear_kernel(mlp.take(f"{name}.weight", (c.d_ff, d)))} for name in ffn}
        feed_forward["wo"] = {"kernel": linear_kernel(mlp.take("wo.weight", (d, c.d_ff)))}
        params[f"layer_{i}"] = {
            "attention_norm": {"scale": block.take("layer.0.layer_norm.weight", (d,))},
            "attention": attention,
            "mlp_norm": {"scale": block.take("layer.1.layer_norm.weight", (d,))},
            "mlp": feed_forward,
        }
    params["final_norm"] = {"scale": enc.take("final_layer_norm.weight", (d,))}
    reader.finish()
    params = jax.tree.map(lambda a: np.ascontiguousarray(a, dtype=dtype), params)
    check_tree(params, abstract_params(config), "T5 encoder")
    return params


def _read_weights(folder: str) -> tuple[dict[str, np.ndarray], str]:
    for name in _WEIGHT_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            tensors: dict[str, np.ndarray] = {}
            for shard in shards:
                tensors.update(load_state_dict(os.path.join(folder, shard)))
            return tensors, path
        return load_state_dict(path), path
    raise FileNotFoundError(f"no T5 weights in {folder!r}: expected one of {', '.join(_WEIGHT_FILES)}")


def load_t5_tokenizer(folder: str | os.PathLike, max_length: int = T5_MAX_LENGTH) -> TextTokenizer:
    """The T5 tokenizer of a folder (`tokenizer.json` or `spiece.model`), fixed at `max_length`.

    Checks that it appends `</s>` (kept when truncating) and pads with id 0, as T5's does.
    """
    folder = os.fspath(folder)
    if not any(os.path.isfile(os.path.join(folder, f)) for f in _TOKENIZER_FILES):
        raise FileNotFoundError(f"no T5 tokenizer in {folder!r}: expected tokenizer.json or spiece.model")
    tokenizer = TextTokenizer.from_file(folder, max_length=max_length)
    eos = tokenizer.tokenizer.token_to_id("</s>")
    ids, mask = tokenizer([""])
    if eos is None or ids[0, 0] != eos or mask[0].sum() != 1 or tokenizer.pad_id != 0:
        raise ValueError(
            f"the tokenizer in {folder!r} is not T5-shaped: an empty prompt must encode to "
            f"'</s>' alone and padding must use id 0 (got ids {ids[0, :3].tolist()}, "
            f"pad id {tokenizer.pad_id})"
        )
    return tokenizer


def load_t5_checkpoint(
    folder: str | os.PathLike, max_length: int = T5_MAX_LENGTH, dtype: Any = np.float32
) -> tuple[T5Config, Params, TextTokenizer]:
    """Reads a HF T5 folder into `(config, params, tokenizer)`; see the module docstring.

    Raises:
      FileNotFoundError: the folder, its `config.json`, weights or tokenizer is missing.
      ConversionError: the weights do not fit the config (message names the key).
      ValueError: an unsupported config, or a tokenizer with ids beyond the embedding.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"T5 checkpoint folder {folder!r} does not exist")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in T5 checkpoint folder {folder!r}")
    with open(config_path, encoding="utf-8") as f:
        config = T5Config.from_hf_config(json.load(f))
    tokenizer = load_t5_tokenizer(folder, max_length)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer in {folder!r} has {tokenizer.vocab_size} ids but the model embeds only {config.vocab_size}"
        )
    tensors, source = _read_weights(folder)
    return config, params_from_state_dict(tensors, config, source, dtype), tokenizer
