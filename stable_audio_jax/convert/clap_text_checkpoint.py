"""Import the text branch of a LAION-CLAP checkpoint: Stable Audio 1.0's prompt encoder.

    config, params, tokenizer = load_clap_text_branch("clap.ckpt", "roberta-base")
    ids, mask = tokenizer(["warm analog pads, 90 BPM"])                       # [1, 77] each
    features = TextEncoder(config).apply({"params": params}, ids, mask).hidden_states[-2]

stable-audio-tools' `CLAPTextConditioner` (`models/conditioners.py`) loads a LAION-CLAP
model from `clap_ckpt_path`, keeps only `text_branch` (a Hugging Face `RobertaModel`) and,
with `use_text_features`, conditions on `hidden_states[feature_layer_ix]` of it (the
penultimate layer in SA 1.0) with the tokenizer's attention mask; the features are not
projected when their width is the conditioning width. Its weights are not in the diffusion
checkpoint, so they are read here from the CLAP checkpoint itself:

- the CLAP checkpoint (`torch.save` of `{"state_dict": ...}`, keys `module.text_branch.*`
  from distributed training or `text_branch.*`; read without executing its pickle): the
  `text_branch.` tensors map onto `TextEncoder` as `convert/bert_checkpoint.py` documents;
  the audio branch, the projections and the temperature are not needed and are ignored;
- a local Hugging Face RoBERTa folder for what the checkpoint does not hold: `config.json`
  (the architecture) and the tokenizer (`tokenizer.json`, or `vocab.json` + `merges.txt`),
  padded / truncated to 77 tokens as LAION-CLAP's tokenizer. Weights in that folder are
  not read.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax.numpy as jnp

from stable_audio_jax import parallel
from stable_audio_jax.convert.bert_checkpoint import config_from_hf, params_from_state_dict
from stable_audio_jax.convert.state_dict import ConversionError, load_state_dict
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.text_encoder import TextEncoder, TextEncoderConfig, check_vocab

Params = dict[str, Any]

CLAP_MAX_LENGTH = 77  # LAION-CLAP's tokenizer: padding="max_length", truncation, 77 tokens
TEXT_BRANCH_PREFIXES = ("module.text_branch.", "text_branch.")


def text_branch_state(tensors: Any, source: str) -> dict[str, Any]:
    """The `text_branch.` tensors of a CLAP state dict, without that prefix (and without a
    leading `module.`); `ConversionError` if there are none."""
    for prefix in TEXT_BRANCH_PREFIXES:
        state = {k[len(prefix) :]: tensors[k] for k in tensors if k.startswith(prefix)}
        if state:
            return state
    raise ConversionError(
        f"{source}: no {' or '.join(repr(p) for p in TEXT_BRANCH_PREFIXES)} tensors; is this a LAION-CLAP checkpoint?"
    )


def load_clap_text_branch(
    clap_checkpoint: str | os.PathLike, roberta_dir: str | os.PathLike, max_length: int = CLAP_MAX_LENGTH
) -> tuple[TextEncoderConfig, Params, TextTokenizer]:
    """`(config, params, tokenizer)` of the CLAP text branch (see the module docstring).

    Raises:
      FileNotFoundError: a missing file or folder (the message names it).
      ConversionError: tensors that do not fit the folder's `config.json`, or a tokenizer
        whose ids the embedding table does not cover.
    """
    roberta_dir = os.fspath(roberta_dir)
    config_path = os.path.join(roberta_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in the RoBERTa folder {roberta_dir!r}")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = config_from_hf(json.load(f))
        except ValueError as e:
            raise ConversionError(f"{config_path}: {e}") from e
    source = os.fspath(clap_checkpoint)
    state = text_branch_state(load_state_dict(source), source)
    try:
        params = params_from_state_dict(state, config)
        tokenizer = TextTokenizer.from_file(roberta_dir, max_length=max_length)
        check_vocab(tokenizer, config)
    except ValueError as e:
        raise ConversionError(f"{source} with {roberta_dir}: {e}") from e
    return config, params, tokenizer


def abstract_params(config: TextEncoderConfig) -> Params:
    """`TextEncoder(config)`'s param shapes (logically boxed), allocating nothing."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return parallel.abstract_params(TextEncoder(config), ids, ids == 0)
