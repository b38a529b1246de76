"""Record schema and ArrayRecord shard I/O.

One record holds one audio file: its FLAC bytes (lossless, original sample rate and channel count)
and JSON metadata. The byte layout avoids pickle, because shards may come from untrusted sources:

    magic (8 bytes, b"SAJREC1\\n") | JSON length (uint32, little endian) | JSON (UTF-8) | FLAC bytes

Metadata keys always present: `caption`, `sample_rate`, `num_samples`, `num_channels`,
`duration_seconds`, `id`, `source_path`; any extra manifest/sidecar keys are kept as well.

`decode_record` also accepts the feature dict that `tfds.data_source` returns for
`tfds_builder.StableAudioCaptions`, so the Grain pipeline reads both kinds of shards.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAGIC = b"SAJREC1\n"
_LENGTH = struct.Struct("<I")
_HEADER_SIZE = len(MAGIC) + _LENGTH.size

# Feature names shared with the tfds builder.
FLAC_KEY = "flac"
METADATA_KEY = "metadata"

REQUIRED_METADATA = ("caption", "sample_rate", "num_samples", "num_channels", "duration_seconds", "id", "source_path")

SHARD_SUFFIX = ".array_record"


class RecordFormatError(ValueError):
    """Raised for bytes that are not a record written by `encode_record`."""


def encode_record(flac_bytes: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Serialises FLAC bytes plus JSON-serialisable metadata into one record."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"record metadata lacks required keys {missing}")
    meta = json.dumps(dict(metadata), ensure_ascii=False, sort_keys=True, default=_json_default).encode("utf-8")
    return b"".join((MAGIC, _LENGTH.pack(len(meta)), meta, bytes(flac_bytes)))


def _json_default(value: Any) -> Any:
    # Manifests parsed with numpy/pandas may carry numpy scalars.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value {value!r} is not JSON serialisable")


def _as_bytes(value: Any) -> bytes:
    """tfds returns bytes features as `bytes` or 0-d object arrays; normalise to bytes."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def decode_record(record: bytes | Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Splits a record into (FLAC bytes, metadata dict).

    Args:
      record: bytes from `encode_record` (ArrayRecord shards) or a tfds example dict with the
        `flac` and `metadata` (JSON text) features.

    Raises:
      RecordFormatError: wrong magic, truncated data, or invalid JSON.
    """
    if isinstance(record, Mapping):
        try:
            flac = _as_bytes(record[FLAC_KEY])
            metadata = json.loads(_as_bytes(record[METADATA_KEY]).decode("utf-8"))
        except (KeyError, ValueError, TypeError) as e:
            raise RecordFormatError(f"bad tfds record: {e!r}") from e
        return flac, metadata
    data = bytes(record)
    if len(data) < _HEADER_SIZE or not data.startswith(MAGIC):
        raise RecordFormatError("not a stable-audio-jax record (bad magic)")
    (meta_len,) = _LENGTH.unpack_from(data, len(MAGIC))
    end = _HEADER_SIZE + meta_len
    if end > len(data):
        raise RecordFormatError("truncated record")
    try:
        metadata = json.loads(data[_HEADER_SIZE:end].decode("utf-8"))
    except ValueError as e:
        raise RecordFormatError(f"bad record metadata: {e}") from e
    return data[end:], metadata


def shard_paths(output_dir: str | os.PathLike, prefix: str, num_shards: int) -> list[str]:
    """`<output_dir>/<prefix>-<i:05d>-of-<N:05d>.array_record` for i in [0, N)."""
    return [
        os.path.join(os.fspath(output_dir), f"{prefix}-{i:05d}-of-{num_shards:05d}{SHARD_SUFFIX}")
        for i in range(num_shards)
    ]


def _partial_path(path: str) -> str:
    """Where a shard is written until it is complete: hidden, so `list_shards` never reads it."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.partial")


class ShardWriter:
    """Writes records into N ArrayRecord files, balancing them by bytes.

    Each record goes to the shard holding the fewest bytes so far (ties: lowest index), which keeps
    shards close in size when file lengths vary a lot; the assignment is deterministic for a given
    record order. `group_size:1` makes every record individually addressable for random access.

    Shards are written under hidden `.<name>.partial` names and renamed only by `close()`, so
    an error inside the `with` block (which calls `abort()`) or a crash leaves no half-written
    shard where `list_shards` would find it.

    Usage:
      with ShardWriter(out_dir, "train", 4) as w:
        w.write(encode_record(flac, meta))
      w.paths  # the shard files
    """

    def __init__(self, output_dir: str | os.PathLike, prefix: str = "train", num_shards: int = 4):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        # Imported here so that reading records does not need the writer extension loaded.
        from array_record.python.array_record_module import ArrayRecordWriter

        self._created_dirs = []  # deepest first: what `abort` removes again
        folder = os.path.abspath(output_dir)
        while not os.path.exists(folder):
            self._created_dirs.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(output_dir, exist_ok=True)
        self.paths = shard_paths(output_dir, prefix, num_shards)
        self._writers = [ArrayRecordWriter(_partial_path(p), "group_size:1") for p in self.paths]
        self.bytes_per_shard = [0] * num_shards
        self.records_per_shard = [0] * num_shards
        self._closed = False

    def write(self, record: bytes) -> int:
        """Appends one record; returns the index of the shard it went to."""
        if self._closed:
            raise ValueError("ShardWriter is closed")
        index = min(range(len(self._writers)), key=lambda i: (self.bytes_per_shard[i], i))
        self._writers[index].write(record)
        self.bytes_per_shard[index] += len(record)
        self.records_per_shard[index] += 1
        return index

    def close(self) -> list[str]:
        """Finalises all shard files (an ArrayRecord file is unreadable until closed)."""
        if not self._closed:
            for writer in self._writers:
                writer.close()
            for path in self.paths:
                os.replace(_partial_path(path), path)
            self._closed = True
        return self.paths

    def abort(self) -> None:
        """Closes and deletes the unfinished shards (and the folders this writer created)."""
        if not self._closed:
            for writer, path in zip(self._writers, self.paths):
                writer.close()
                os.remove(_partial_path(path))
            for folder in self._created_dirs:
                try:
                    os.rmdir(folder)
                except OSError:  # something else was put there meanwhile: keep it
                    break
            self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def list_shards(path_or_glob: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Resolves shard files.

    Args:
      path_or_glob: a directory (all `*.array_record*` files in it, which also matches tfds'
        `name-train.array_record-00000-of-00001`), a glob pattern, a single file, or a list of
        any of these.

    Returns:
      Sorted, de-duplicated file paths.

    Raises:
      FileNotFoundError: nothing matched.
    """
    if isinstance(path_or_glob, (list, tuple)):
        found: list[str] = []
        for item in path_or_glob:
            found.extend(list_shards(item))
        return sorted(set(found))
    path = os.fspath(path_or_glob)
    if os.path.isdir(path):
        matches = glob.glob(os.path.join(path, f"*{SHARD_SUFFIX}*"))
    elif glob.has_magic(path):
        matches = glob.glob(path)
    else:
        matches = [path] if os.path.isfile(path) else []
    matches = sorted(m for m in matches if os.path.isfile(m))
    if not matches:
        raise FileNotFoundError(f"no ArrayRecord shards found at {path!r}")
    return matches


class InMemoryRecordCache:
    """A random-access record source (`__len__`, `__getitem__`) that keeps the records it has
    read in memory, up to `max_bytes` in all (records past the budget are read from `source`
    every time). For a data set that fits in RAM, every epoch after the first reads no file:
    a random read of a 2 MiB record from an ArrayRecord shard costs about 5-7 ms of CPU
    (chunk checksums, decompression, copies), which on a small machine competes with the
    train step for the same cores.

    Thread-safe (Grain reads on several threads). A pickled copy (a Grain worker process)
    starts with an empty cache of its own.
    """

    def __init__(self, source: Any, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._source = source
        self._max_bytes = int(max_bytes)
        self._records: dict[int, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: Any) -> bytes:
        key = int(index)
        record = self._records.get(key)
        if record is None:
            record = self._source[key]
            with self._lock:
                if key not in self._records and self._bytes + len(record) <= self._max_bytes:
                    self._records[key] = record
                    self._bytes += len(record)
        return record

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self._source, "max_bytes": self._max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["max_bytes"])
