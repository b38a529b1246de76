"""Grain training pipeline: audio records -> fixed-length stereo crops with timing conditioning.

Pipeline (grain 0.2 dataset API):

    MapDataset.source -> seed -> shuffle -> repeat(num_epochs) -> decode + crop (random_map)
      -> this process's rows of every global batch -> filter(failed) -> to_iter_dataset -> batch
      -> mp_prefetch

Every step up to `to_iter_dataset` is lazy and index-based, so decoding runs only for the records
this process reads, inside the prefetch threads (and inside the worker processes when
`worker_count > 0`). The crop rng comes from `random_map` and depends only on the record's global
position, so crops do not change when the process count changes. Filtering and batching happen
on the `IterDataset`: batching a `MapDataset` with filtered-out holes would give short batches.

Multi-host: share k of n reads records `[k * B, (k + 1) * B)` of every run of `n * B` records
(B the per-process batch size, `ProcessBlocks`). The trainer gives share k to the process whose
devices hold rows `[k * B, (k + 1) * B)` of the global batch (`parallel.process_batch`; on the
meshes `parallel.create_mesh` builds, process k), so the global batch holds the same records in
the same rows as a one-process run with `n * B` per batch: per-row noise and dropout, and hence
the losses, do not depend on the process count.

Each example is a dict (batched: a leading `[batch]` axis on every entry):

    audio          float32 [sample_size, 2]   stereo, at `sample_rate`, zero-padded at the end
    padding_mask   bool    [sample_size]      True where `audio` holds real samples
    seconds_start  float32 []                 floor(crop_offset / sample_rate)
    seconds_total  float32 []                 ceil(whole-file length at sample_rate / sample_rate)
    caption        str                        (batched: numpy array of str)

Checkpointing the iterator with Orbax:

    mngr = ocp.CheckpointManager(path, item_names=('state', 'data'),
                                 item_handlers={'data': grain.checkpoint.CheckpointHandler()})
    mngr.save(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it)))
    mngr.restore(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointRestore(it)))

or directly: `state = it.get_state()` (a JSON-serialisable dict) and `it.set_state(state)`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np

from stable_audio_jax.input_pipeline import audio_io, latent_records, records

logger = logging.getLogger(__name__)

Example = dict[str, Any]


def crop_offset_range(num_samples: int, sample_size: int) -> int:
    """Largest valid crop offset (inclusive): 0 for files no longer than the window."""
    return max(0, num_samples - sample_size)


def load_example(
    record: bytes | Mapping[str, Any],
    *,
    sample_rate: int,
    sample_size: int,
    rng: np.random.Generator | None = None,
) -> Example:
    """Decodes one record into a fixed-length stereo training example.

    Only the source frames under the crop (plus a small resampling margin) are decoded, so a
    47 s crop of a 10 min file costs about as much as a 47 s file.

    Args:
      record: record bytes (`records.encode_record`) or a tfds example dict.
      sample_rate: the model's sample rate; audio is resampled to it.
      sample_size: window length in samples at `sample_rate`.
      rng: picks a uniform crop offset in [0, length - sample_size]; None crops from the start.

    Returns:
      The example dict described in the module docstring.

    Raises:
      records.RecordFormatError, audio_io.AudioDecodeError: a malformed record or undecodable audio.
    """
    flac_bytes, metadata = records.decode_record(record)
    info = audio_io.AudioInfo(
        sample_rate=int(metadata["sample_rate"]),
        num_channels=int(metadata["num_channels"]),
        num_samples=int(metadata["num_samples"]),
        subtype=None,
        format="FLAC",
    )
    # Whole-file length at the model rate: seconds_total describes the file, not the crop.
    total = audio_io.resampled_length(info.num_samples, info.sample_rate, sample_rate)
    max_offset = crop_offset_range(total, sample_size)
    offset = int(rng.integers(0, max_offset + 1)) if rng is not None and max_offset > 0 else 0

    audio = audio_io.decode_region_resampled(flac_bytes, info, sample_rate, offset, offset + sample_size)
    audio = audio_io.to_stereo(audio)
    length = min(audio.shape[0], sample_size)
    if length == 0:
        raise audio_io.AudioDecodeError("record decoded to no samples", reason="empty")

    padded = np.zeros((sample_size, 2), np.float32)
    padded[:length] = audio[:length]
    mask = np.zeros((sample_size,), np.bool_)
    mask[:length] = True
    return {
        "audio": padded,
        "padding_mask": mask,
        "seconds_start": np.float32(offset // sample_rate),
        "seconds_total": np.float32(math.ceil(total / sample_rate)),
        "caption": str(metadata.get("caption", "")),
    }


class DecodeAndCrop(grain.transforms.RandomMap):
    """`random_map` transform: record -> example dict, or None (logged) when the record is bad."""

    def __init__(self, sample_rate: int, sample_size: int, random_crop: bool = True):
        self.sample_rate = sample_rate
        self.sample_size = sample_size
        self.random_crop = random_crop

    def random_map(self, record: Any, rng: np.random.Generator) -> Example | None:
        try:
            return load_example(
                record,
                sample_rate=self.sample_rate,
                sample_size=self.sample_size,
                rng=rng if self.random_crop else None,
            )
        except Exception as e:  # noqa: BLE001 - one bad record must not stop training
            logger.warning("skipping a record that failed to decode: %r", e)
            return None


def _is_example(example: Example | None) -> bool:
    return example is not None


def as_data_source(source: Any) -> Any:
    """Turns shard paths / a glob / a directory into an ArrayRecord source; passes data sources through.

    Args:
      source: a path, glob or directory string; a list of paths; or any random-access source
        (`__len__` + `__getitem__`), e.g. from `tfds.data_source(...)`.
    """
    if isinstance(source, (str, os.PathLike)) or (
        # Only plain lists/tuples: iterating a tfds source here would decode every record.
        isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source)
    ):
        return grain.sources.ArrayRecordDataSource(records.list_shards(source))
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        return source
    raise TypeError(f"unsupported data source {type(source).__name__}: expected paths or a random-access source")


def ensure_absl_flags_parsed() -> None:
    """Grain worker processes read absl flags; unparsed flags make the first `next()` fail."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_audio_dataset(
    source: Any,
    *,
    sample_rate: int,
    sample_size: int,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    random_crop: bool = True,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    read_threads: int = 8,
    read_buffer_size: int | None = None,
) -> grain.IterDataset:
    """Builds the per-process training dataset of batched audio crops.

    Args:
      source: ArrayRecord paths, a glob or directory, or a random-access source (e.g. tfds).
      sample_rate: model sample rate; records are resampled to it.
      sample_size: crop length in samples; shorter files are zero-padded.
      batch_size: per-process batch size (global batch / process count).
      seed: seeds the shuffle and the crops; the same seed gives the same batches.
      shuffle: shuffle records (reshuffled every epoch).
      num_epochs: passes over the data; None repeats forever.
      random_crop: random crop offsets; False crops from the start of every file.
      worker_count: decode in this many worker processes (0: in this process, with threads).
      worker_buffer_size: batches buffered per worker process.
      shard_index, shard_count: this process's share of the record stream, `batch_size` records
        out of every `shard_count * batch_size` (`ProcessBlocks`); default
        `jax.process_index()` / `jax.process_count()`.
      drop_remainder: drop a final partial batch (only matters when `num_epochs` is set).
      read_threads: decoding threads per process / worker.
      read_buffer_size: decoded examples prefetched per process / worker (default
        `max(batch_size, read_threads)`; grain's default of 500 would hold 500 decoded crops).

    Returns:
      An `IterDataset` of example dicts with `[batch_size, ...]` leaves; `iter(ds)` gives an
      iterator with `get_state()` / `set_state()`.
    """
    if sample_size <= 0 or sample_rate <= 0 or batch_size <= 0:
        raise ValueError(
            f"need positive sample_rate/sample_size/batch_size, got {sample_rate}/{sample_size}/{batch_size}"
        )
    return _build(
        source,
        DecodeAndCrop(sample_rate, sample_size, random_crop),
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
        shard_index=shard_index,
        shard_count=shard_count,
        drop_remainder=drop_remainder,
        read_threads=read_threads,
        read_buffer_size=read_buffer_size,
    )


class DecodeLatentRecord(grain.transforms.Map):
    """Latent record bytes -> example dict (see `latent_records`); text features as float32."""

    def map(self, record: Any) -> Example:
        arrays, metadata = latent_records.decode_latent_record(record)
        return {
            "latent_mean": arrays["latent_mean"].astype(np.float32, copy=False),
            "latent_std": arrays["latent_std"].astype(np.float32, copy=False),
            "latent_mask": arrays["latent_mask"].astype(bool, copy=False),
            "text_features": arrays["text_features"].astype(np.float32),
            "text_mask": arrays["text_mask"].astype(bool, copy=False),
            "seconds_start": np.int32(metadata["seconds_start"]),
            "seconds_total": np.int32(metadata["seconds_total"]),
            "caption": str(metadata.get("caption", "")),
        }


def make_latent_dataset(
    source: Any,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    read_threads: int = 8,
    cache_bytes: int = 0,
) -> grain.IterDataset:
    """Batches of pre-encoded diffusion examples (`data/pre_encode.py` shards).

    Yields `latent_mean`, `latent_std` `[batch, frames, latent_dim]`, `latent_mask`
    `[batch, frames]`, `text_features` `[batch, text_length, text_dim]`, `text_mask`
    `[batch, text_length]`, `seconds_start`, `seconds_total` `[batch]` int32 and `caption`.
    Shuffling, per-process slicing, repetition and checkpointable state as
    `make_audio_dataset`. `cache_bytes` > 0 keeps up to that many bytes of records in memory
    once read (`records.InMemoryRecordCache`; per process and per worker): for a set that fits
    in RAM, later epochs read no shard.
    """
    if batch_size <= 0:
        raise ValueError(f"need a positive batch_size, got {batch_size}")
    data_source = as_data_source(source)
    return _build(
        records.InMemoryRecordCache(data_source, cache_bytes) if cache_bytes else data_source,
        DecodeLatentRecord(),
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
        shard_index=shard_index,
        shard_count=shard_count,
        drop_remainder=drop_remainder,
        read_threads=read_threads,
        read_buffer_size=None,
    )


class ProcessBlocks(grain.MapDataset):
    """Process `index` of `count`'s share of `parent`: elements `[index * B, (index + 1) * B)` of
    every run of `count * B` (B = `block_size`, the per-process batch size).

    Element k of this dataset is parent element `(k // B) * count * B + index * B + k % B`, so
    local batch j of every process is a contiguous block of global batch j, in process order
    (a strided `[index::count]` slice would interleave the processes' rows instead). The
    processes partition `parent`; a final run shorter than `count * B` goes to the lowest
    processes first. Indices past the end wrap to the next epoch, like grain's slices.
    """

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, *, block_size: int, index: int, count: int):
        super().__init__(parent)
        if block_size < 1 or not 0 <= index < count:
            raise ValueError(f"need block_size >= 1 and 0 <= index < count, got {block_size}, {index}, {count}")
        self._block, self._index, self._count = block_size, index, count
        self._parent_length = len(parent)
        runs, rest = divmod(self._parent_length, count * block_size)
        self._length = runs * block_size + min(max(rest - index * block_size, 0), block_size)

    def __len__(self) -> int:
        return self._length

    def _parent_index(self, index: int) -> int:
        if not self._length:
            raise IndexError(f"process {self._index} of {self._count} gets no records of {self._parent_length}")
        epoch, k = divmod(index, self._length)
        run, offset = divmod(k, self._block)
        return epoch * self._parent_length + (run * self._count + self._index) * self._block + offset

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._parent_index(index)]

    def __str__(self) -> str:
        return f"ProcessBlocks(block_size={self._block}, index={self._index}, count={self._count})"


def _build(
    source: Any,
    transform: grain.transforms.Map | grain.transforms.RandomMap,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_epochs: int | None,
    worker_count: int,
    worker_buffer_size: int,
    shard_index: int | None,
    shard_count: int | None,
    drop_remainder: bool,
    read_threads: int,
    read_buffer_size: int | None,
) -> grain.IterDataset:
    """source -> seed/shuffle/repeat -> `transform` -> this process's slice -> batches (-> workers)."""
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} out of range for shard_count {shard_count}")

    data_source = as_data_source(source)
    if len(data_source) == 0:
        raise ValueError("the data source holds no records")

    ds = grain.MapDataset.source(data_source).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs)
    # Lazy: only this process's records are decoded, but random maps follow the global position.
    ds = ds.random_map(transform) if isinstance(transform, grain.transforms.RandomMap) else ds.map(transform)
    if shard_count > 1:
        ds = ProcessBlocks(ds, block_size=batch_size, index=shard_index, count=shard_count)
    ds = ds.filter(_is_example)

    buffer = read_buffer_size if read_buffer_size is not None else max(batch_size, read_threads)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=buffer))
    it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
    if worker_count > 0:
        ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=worker_buffer_size),
            worker_init_fn=exit_with_parent,
        )
    return it_ds


PARENT_POLL_SECONDS = 1.0


def exit_with_parent(worker_index: int = 0, worker_count: int = 1) -> None:
    """Grain worker start-up: end this worker soon after the process that started it dies.

    A trainer killed with SIGKILL cannot stop its workers, and Grain's workers otherwise
    keep running as orphans. A daemon thread polls the parent pid (an orphan is re-parented,
    so `getppid` changes) and exits the process without cleanup, since there is nobody left
    to hand data to.
    """
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
