"""tfds builder writing the same FLAC + JSON-metadata records as `shard_writer`, as tfds ArrayRecord.

Works without TensorFlow: only `Tensor`/`Text`/scalar features and `file_format='array_record'`
(`tfds.features.Audio` and `as_dataset()` need TF). Read back with `builder.as_data_source()` or
`tfds.data_source('stable_audio_captions', data_dir=...)` (this module must be imported so that the
name is registered); `records.decode_record` and the Grain pipeline accept the returned dicts.

Features per example:
    flac              bytes (0-d object tensor)   original audio, lossless
    metadata          text (JSON)                 the full metadata dict, as in `records.py`
    caption, id, source_path            text      copies of metadata fields, for filtering/inspection
    sample_rate, num_channels           int32
    num_samples                         int64
    duration_seconds                    float32

File discovery, decoding, skipping and reporting are those of `shard_writer`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from stable_audio_jax.input_pipeline import records, shard_writer


def make_features() -> tfds.features.FeaturesDict:
    """The feature spec; a 0-d `np.object_` Tensor stores arbitrary bytes and reads back as bytes."""
    return tfds.features.FeaturesDict(
        {
            records.FLAC_KEY: tfds.features.Tensor(shape=(), dtype=np.object_),
            records.METADATA_KEY: tfds.features.Text(),
            "caption": tfds.features.Text(),
            "id": tfds.features.Text(),
            "source_path": tfds.features.Text(),
            "sample_rate": np.int32,
            "num_channels": np.int32,
            "num_samples": np.int64,
            "duration_seconds": np.float32,
        }
    )


def to_tfds_example(example: shard_writer.PreparedExample) -> dict[str, Any]:
    """`PreparedExample` -> feature dict for `make_features()`."""
    meta = example.metadata
    return {
        records.FLAC_KEY: example.flac_bytes,
        records.METADATA_KEY: json.dumps(meta, ensure_ascii=False, sort_keys=True),
        "caption": meta["caption"],
        "id": meta["id"],
        "source_path": meta["source_path"],
        "sample_rate": meta["sample_rate"],
        "num_channels": meta["num_channels"],
        "num_samples": meta["num_samples"],
        "duration_seconds": meta["duration_seconds"],
    }


class StableAudioCaptions(tfds.core.GeneratorBasedBuilder):
    """Captioned audio files -> tfds ArrayRecord shards of FLAC records.

    Usage:
      builder = StableAudioCaptions(data_dir=d, input_path='/data/clips')   # or {'train': .., 'valid': ..}
      builder.download_and_prepare()
      source = builder.as_data_source()['train']      # later: tfds.data_source('stable_audio_captions', ...)
      builder.reports['train']                         # the shard_writer report of the build
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "FLAC bytes + JSON metadata per audio file."}

    def __init__(
        self,
        *,
        input_path: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
        target_sample_rate: int = 44100,
        short_seconds: float = 1.0,
        num_workers: int = 1,
        **kwargs: Any,
    ):
        """Args: `input_path` is a folder/manifest (the "train" split) or {split: folder/manifest};
        it is only needed to build, not to read. Other kwargs go to the tfds builder (data_dir, ...).
        """
        if input_path is None or isinstance(input_path, Mapping):
            self._inputs = dict(input_path or {})
        else:
            self._inputs = {"train": input_path}
        self._target_sample_rate = target_sample_rate
        self._short_seconds = short_seconds
        self._num_workers = num_workers
        self.reports: dict[str, dict[str, Any]] = {}
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: `dataset_info_from_configs()` needs package metadata files.
        return tfds.core.DatasetInfo(
            builder=self,
            description="Captioned audio: FLAC bytes of the original file plus JSON metadata.",
            features=make_features(),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        if not self._inputs:
            raise ValueError("StableAudioCaptions needs input_path=<folder or manifest> to build")
        for split, path in self._inputs.items():
            if not os.path.exists(os.fspath(path)):
                raise FileNotFoundError(f"input path {os.fspath(path)!r} for split {split!r} does not exist")
        return {split: self._generate_examples(split, path) for split, path in self._inputs.items()}

    def _generate_examples(self, split: str, input_path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
        report = shard_writer.ConversionReport()
        items = shard_writer.discover_audio(input_path, report)
        examples = shard_writer.iter_prepared_examples(
            items,
            report,
            target_sample_rate=self._target_sample_rate,
            short_seconds=self._short_seconds,
            num_workers=self._num_workers,
        )
        # Keys only need to be unique; tfds shuffles examples by key hash at write time.
        for index, example in enumerate(examples):
            yield f"{index:09d}", to_tfds_example(example)
        if not report.written:  # tfds deletes its unfinished split files when the build fails
            raise report.nothing_written(input_path, len(items))
        report.log()
        self.reports[split] = {"input": os.fspath(input_path), **report.as_dict()}
