"""Pre-encoded diffusion training examples: VAE latents + text features + timing, one record each.

The diffusion model trains on a frozen VAE and a frozen text encoder; running both once,
offline, turns every step into a pure diffusion step (frozen parts stay frozen
and cheap). A record is one crop of one audio file:

    magic (8 bytes, b"SAJLAT1\\n") | JSON length (uint32 LE) | JSON metadata | .npz bytes

The .npz (read with `allow_pickle=False`: shards may come from untrusted sources) holds

    latent_mean, latent_std  float32 [frames, latent_dim]   the VAE posterior (training samples it)
    latent_mask              bool    [frames]               False where the crop was zero-padded
    text_features            float16 [text_length, text_dim] the text conditioning tokens
    text_mask                bool    [text_length]

and the metadata `caption`, `seconds_start`, `seconds_total`, `id`.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from typing import Any, Mapping

import numpy as np

MAGIC = b"SAJLAT1\n"
_LENGTH = struct.Struct("<I")
ARRAY_KEYS = ("latent_mean", "latent_std", "latent_mask", "text_features", "text_mask")
METADATA_KEYS = ("caption", "seconds_start", "seconds_total", "id")
# np.load parses each .npy header with `ast.literal_eval`, which is not thread-safe on
# CPython 3.11 (concurrent calls fail with "AST constructor recursion depth mismatch");
# Grain decodes records on several threads, so the parse is serialised. It is tiny.
_NPZ_LOCK = threading.Lock()


def encode_latent_record(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> bytes:
    """One example (see the module docstring for the keys) -> record bytes."""
    missing = [k for k in ARRAY_KEYS if k not in arrays] + [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"latent record lacks {missing}")
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(arrays[k]) for k in ARRAY_KEYS})
    meta = json.dumps(dict(metadata), sort_keys=True).encode("utf-8")
    return b"".join((MAGIC, _LENGTH.pack(len(meta)), meta, buffer.getvalue()))


def decode_latent_record(record: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Record bytes -> (arrays, metadata)."""
    record = bytes(record)
    if not record.startswith(MAGIC):
        raise ValueError("not a pre-encoded latent record (wrong magic); was the shard written by data/pre_encode.py?")
    (length,) = _LENGTH.unpack_from(record, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    metadata = json.loads(record[start : start + length].decode("utf-8"))
    with _NPZ_LOCK, np.load(io.BytesIO(record[start + length :]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ARRAY_KEYS}
    return arrays, metadata
