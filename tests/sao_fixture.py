"""A SAO-layout fixture folder written by stable-audio-tools (`tests/reference/make_sao_model_reference.py
--variant=...`): `model.safetensors`, `model_config.json` and `reference.npz` (the reference's outputs,
PyTorch layout `[batch, channels, frames]`)."""

from __future__ import annotations

import json
import os

import numpy as np

from tests.fixture_paths import FIXTURES, T5_DIR


class SaoFixture:
    def __init__(self, name: str):
        self.folder = os.path.join(FIXTURES, name)
        self.checkpoint = os.path.join(self.folder, "model.safetensors")
        self.model_config_path = os.path.join(self.folder, "model_config.json")

    def model_config(self) -> dict:
        """A fresh copy of the folder's `model_config.json` (tests edit it)."""
        with open(self.model_config_path) as f:
            return json.load(f)

    def reference(self) -> dict[str, np.ndarray]:
        with np.load(os.path.join(self.folder, "reference.npz")) as f:
            return {k: f[k] for k in f.files}

    def convert(self, out: str) -> tuple[str, dict]:
        """The checkpoint converted (with the T5 fixture) into `out`: `(out, the converter's summary)`."""
        from stable_audio_jax.convert import sao_checkpoint

        summary = sao_checkpoint.convert_checkpoint(
            self.checkpoint, self.model_config_path, out, t5_dir=T5_DIR, log=lambda _: None
        )
        return out, summary


def channels_last(a: np.ndarray) -> np.ndarray:
    """PyTorch `[batch, channels, frames]` (or `[steps, batch, channels, frames]`) -> channels last."""
    return np.swapaxes(a, -1, -2)
