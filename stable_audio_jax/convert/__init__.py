"""Importers for pretrained PyTorch checkpoints (read from disk, no network)."""

from stable_audio_jax.convert.bert_checkpoint import (
    find_minilm_checkpoint,
    load_bert_checkpoint,
    params_from_state_dict,
)

__all__ = ["find_minilm_checkpoint", "load_bert_checkpoint", "params_from_state_dict"]
