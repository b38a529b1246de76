"""Folder or manifest of audio files -> ArrayRecord shards of FLAC records (see `records.py`).

Inputs:
  * a folder (searched recursively) of audio files that libsndfile reads (wav, flac, ogg, mp3,
    aiff, ...), each optionally with a sidecar caption: `x.txt` (the caption text) or `x.json`
    (an object with "caption" plus any other metadata);
  * a JSONL manifest: one object per line with "path" (relative to the manifest's folder, or
    absolute), "caption" and any extra keys;
  * a CSV manifest with a header row: columns `path`, `caption`, and any extra columns.

Bad files never stop a conversion. Missing, unreadable or empty (0-sample) files and silent
files (peak < `SILENCE_PEAK`) are skipped and counted per reason. Mono, wrong-rate, multichannel
and short files are stored unchanged, because the Grain pipeline converts them at read time;
they are only counted. Every file is stored losslessly, at its original rate and channel count,
with two repairs, each counted in the report with example paths and logged as a warning:

  * `peak_normalised`: a float file whose peak exceeds full scale (1.0) would be clipped by
    FLAC's integer samples, so it is scaled by 1/peak instead (its waveform is kept; its
    level drops), and the record's metadata holds that `gain`;
  * `not_utf8`: a caption sidecar `.txt` or manifest line that is not valid UTF-8 is kept
    with each undecodable byte replaced by U+FFFD (the rest of the caption is still useful).

An input with no decodable audio at all is a `UserError` and writes nothing.

The discovery and conversion steps (`discover_audio`, `iter_prepared_examples`) are shared with
the tfds builder in `tfds_builder.py`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import soundfile as sf
import tqdm

from stable_audio_jax.errors import UserError
from stable_audio_jax.input_pipeline import audio_io, records

logger = logging.getLogger(__name__)

# Containers libsndfile decodes (MP3 and OGG/Opus need libsndfile >= 1.1, which soundfile bundles).
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aiff",
        ".aif",
        ".aifc",
        ".au",
        ".caf",
        ".w64",
        ".rf64",
    }
)

# Peak amplitude below which a file counts as digital silence (below 16-bit quantisation).
SILENCE_PEAK = 1e-6

# Skip reasons, in report order.
SKIP_REASONS = ("missing", "unreadable", "empty", "silent", "encode_failed", "bad_manifest_entry")
# Kept-but-converted-at-read-time categories (the Grain pipeline resamples, forces stereo, pads).
CONVERTED_LATER = ("mono", "multichannel", "resample_needed", "short")
# Kept-but-repaired categories (see the module docstring), with the warning each logs.
REPAIRED = {
    "peak_normalised": "file(s) above full scale were scaled to peak 1.0 instead of clipped",
    "not_utf8": "caption(s) were not UTF-8; undecodable bytes became U+FFFD",
}

_MAX_EXAMPLE_PATHS = 5

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class AudioItem:
    """One input file, before it is read.

    Attributes:
      path: path to open.
      rel_path: path relative to the input folder/manifest; stored as `source_path` and in reports.
      caption: the caption, or None when no caption was found.
      extra: extra metadata from the manifest row or the JSON sidecar.
    """

    path: str
    rel_path: str
    caption: str | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PreparedExample:
    """One converted file: FLAC bytes plus the record metadata (see `records.REQUIRED_METADATA`)."""

    flac_bytes: bytes
    metadata: dict[str, Any]
    notes: tuple[str, ...]  # subset of CONVERTED_LATER
    peak_normalised: bool = False


class SkipExample(Exception):
    """A file that is left out of the shards, with a `reason` from SKIP_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ConversionReport:
    """Counts what happened to every input; `as_dict()` is the JSON report."""

    def __init__(self) -> None:
        self.written = 0
        self.total_seconds = 0.0
        self.skipped: collections.Counter[str] = collections.Counter()
        self.skipped_examples: dict[str, list[str]] = collections.defaultdict(list)
        self.converted_later: collections.Counter[str] = collections.Counter({k: 0 for k in CONVERTED_LATER})
        self.missing_caption = 0
        self.missing_caption_examples: list[str] = []
        self.repaired: collections.Counter[str] = collections.Counter({k: 0 for k in REPAIRED})
        self.repaired_examples: dict[str, list[str]] = {k: [] for k in REPAIRED}

    def add_repaired(self, kind: str, path: str) -> None:
        """Counts a file kept after a repair of `kind` (a key of `REPAIRED`)."""
        self.repaired[kind] += 1
        if len(self.repaired_examples[kind]) < _MAX_EXAMPLE_PATHS:
            self.repaired_examples[kind].append(path)

    def add_skip(self, reason: str, path: str, message: str) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_examples[reason]) < _MAX_EXAMPLE_PATHS:
            self.skipped_examples[reason].append(path)
        logger.debug("skipping %s (%s): %s", path, reason, message)

    def add_missing_caption(self, path: str) -> None:
        self.missing_caption += 1
        if len(self.missing_caption_examples) < _MAX_EXAMPLE_PATHS:
            self.missing_caption_examples.append(path)

    def add_written(self, example: PreparedExample) -> None:
        self.written += 1
        self.total_seconds += float(example.metadata["duration_seconds"])
        self.converted_later.update(example.notes)
        if example.peak_normalised:
            self.add_repaired("peak_normalised", example.metadata["source_path"])

    def as_dict(self) -> dict[str, Any]:
        reasons = [r for r in SKIP_REASONS if self.skipped[r]] + sorted(set(self.skipped) - set(SKIP_REASONS))
        return {
            "written": self.written,
            "total_seconds": round(self.total_seconds, 3),
            "skipped": {r: self.skipped[r] for r in reasons},
            "skipped_total": sum(self.skipped.values()),
            "skipped_examples": {r: list(self.skipped_examples[r]) for r in reasons},
            "converted_later": {k: self.converted_later[k] for k in CONVERTED_LATER},
            "missing_caption": self.missing_caption,
            "missing_caption_examples": list(self.missing_caption_examples),
            **{
                key: value
                for kind in REPAIRED
                for key, value in (
                    (kind, self.repaired[kind]),
                    (f"{kind}_examples", list(self.repaired_examples[kind])),
                )
            },
        }

    def nothing_written(self, input_path: str | os.PathLike, num_files: int) -> UserError:
        """The error for an input of which no file could be decoded, with what was skipped."""
        report = self.as_dict()
        message = f"no decodable audio in {os.fspath(input_path)}: {num_files} audio file(s)"
        if report["skipped"]:
            reasons = ", ".join(f"{count} {reason}" for reason, count in report["skipped"].items())
            examples = [path for paths in report["skipped_examples"].values() for path in paths][:2]
            message += f", skipped {reasons}, e.g. {', '.join(examples)}"
        return UserError(message)

    def log(self) -> None:
        """Logs a summary; anything skipped or uncaptioned is a warning."""
        report = self.as_dict()
        logger.info(
            "wrote %d records (%.2f h); will be converted at read time: %s",
            report["written"],
            report["total_seconds"] / 3600.0,
            report["converted_later"],
        )
        for reason, count in report["skipped"].items():
            logger.warning("skipped %d file(s) as %s, e.g. %s", count, reason, report["skipped_examples"][reason])
        if self.missing_caption:
            logger.warning(
                "%d file(s) have no caption (stored with caption ''), e.g. %s",
                self.missing_caption,
                self.missing_caption_examples,
            )
        for kind, what in REPAIRED.items():
            if self.repaired[kind]:
                logger.warning("%d %s, e.g. %s", self.repaired[kind], what, self.repaired_examples[kind])


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------


def _decode_utf8(data: bytes) -> tuple[str, bool]:
    """`data` as text, undecodable bytes replaced by U+FFFD; whether any were."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def _utf8(data: bytes, where: str, report: ConversionReport) -> str:
    """`data` decoded as UTF-8; with undecodable bytes, `where` counts as `not_utf8`."""
    text, lossy = _decode_utf8(data)
    if lossy:
        report.add_repaired("not_utf8", where)
    return text


def _sidecar_caption(audio_path: str, rel_path: str, report: ConversionReport) -> tuple[str | None, dict[str, Any]]:
    """Caption and extra metadata from `x.json` (preferred) or `x.txt` next to `x.<ext>`."""
    stem = os.path.splitext(audio_path)[0]
    caption: str | None = None
    extra: dict[str, Any] = {}
    if os.path.isfile(stem + ".json"):
        try:
            with open(stem + ".json", "rb") as f:
                obj = json.loads(_utf8(f.read(), rel_path, report))
            if not isinstance(obj, dict):
                raise ValueError("sidecar JSON is not an object")
            extra = {k: v for k, v in obj.items() if k not in ("caption", "path")}
            if isinstance(obj.get("caption"), str):
                caption = obj["caption"]
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable sidecar %s: %s", stem + ".json", e)
    if caption is None and os.path.isfile(stem + ".txt"):
        try:
            with open(stem + ".txt", "rb") as f:
                caption = _utf8(f.read(), rel_path, report).strip()
        except OSError as e:
            logger.warning("ignoring unreadable sidecar %s: %s", stem + ".txt", e)
    return caption, extra


def _discover_folder(root: str, report: ConversionReport) -> list[AudioItem]:
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                continue
            path = os.path.join(dirpath, name)
            rel_path = os.path.relpath(path, root).replace(os.sep, "/")
            caption, extra = _sidecar_caption(path, rel_path, report)
            items.append(AudioItem(path, rel_path, caption, extra))
    return items


def _manifest_item(row: dict[str, Any], base: str, where: str, report: ConversionReport) -> AudioItem | None:
    path = row.get("path")
    if not isinstance(path, str) or not path:
        report.add_skip("bad_manifest_entry", where, "entry has no 'path'")
        return None
    caption = row.get("caption")
    caption = None if caption is None else str(caption)
    extra = {k: v for k, v in row.items() if k not in ("path", "caption") and k is not None}
    return AudioItem(os.path.join(base, path), path, caption, extra)


def _discover_jsonl(manifest: str, report: ConversionReport) -> list[AudioItem]:
    base = os.path.dirname(os.path.abspath(manifest))
    items = []
    with open(manifest, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{manifest}:{line_no}"
            try:
                row = json.loads(_utf8(raw, where, report))
            except ValueError as e:
                report.add_skip("bad_manifest_entry", where, f"invalid JSON: {e}")
                continue
            if not isinstance(row, dict):
                report.add_skip("bad_manifest_entry", where, "line is not a JSON object")
                continue
            item = _manifest_item(row, base, where, report)
            if item is not None:
                items.append(item)
    return items


def _discover_csv(manifest: str, report: ConversionReport) -> list[AudioItem]:
    base = os.path.dirname(os.path.abspath(manifest))
    items = []
    with open(manifest, "rb") as f:
        data = f.read()
    # Decoded whole (a quoted field may span lines); then each row with a U+FFFD is counted.
    text, lossy = _decode_utf8(data)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or "path" not in reader.fieldnames:
        raise ValueError(f"CSV manifest {manifest!r} needs a header row with a 'path' column")
    for row_no, row in enumerate(reader, start=2):
        where = f"{manifest}:{row_no}"
        if lossy and any(isinstance(v, str) and "\ufffd" in v for v in row.values()):
            report.add_repaired("not_utf8", where)
        item = _manifest_item(row, base, where, report)
        if item is not None:
            items.append(item)
    return items


def discover_audio(input_path: str | os.PathLike, report: ConversionReport | None = None) -> list[AudioItem]:
    """Lists the audio files (with captions) of a folder, a JSONL/CSV manifest, or one audio file.

    Raises:
      FileNotFoundError: `input_path` does not exist.
      ValueError: `input_path` is a file of an unsupported kind.
    """
    report = report if report is not None else ConversionReport()
    path = os.fspath(input_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"input path {path!r} does not exist")
    if os.path.isdir(path):
        return _discover_folder(path, report)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        return _discover_jsonl(path, report)
    if ext == ".csv":
        return _discover_csv(path, report)
    if ext in AUDIO_EXTENSIONS:
        caption, extra = _sidecar_caption(path, os.path.basename(path), report)
        return [AudioItem(path, os.path.basename(path), caption, extra)]
    raise ValueError(f"input {path!r} is neither a folder, a .jsonl/.csv manifest, nor an audio file")


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


def _encode_flac(f: sf.SoundFile, path: str, gain: float = 1.0) -> tuple[bytes, int, float]:
    """FLAC bytes of the open file `f` times `gain`, streamed in blocks; its sample count and
    peak (before `gain`)."""
    try:
        encoder = audio_io.FlacEncoder(int(f.samplerate), int(f.channels), audio_io.flac_subtype_for(f.subtype))
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        raise SkipExample("encode_failed", f"cannot FLAC-encode {path!r}: {e}") from e
    num_samples, peak = 0, 0.0
    try:
        for block in audio_io.iter_blocks(f):
            num_samples += block.shape[0]
            peak = max(peak, float(abs(block).max()))
            encoder.write(block if gain == 1.0 else block * gain)
        return encoder.finish(), num_samples, peak
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        raise SkipExample("unreadable", f"error while decoding {path!r}: {e}") from e


def prepare_example(item: AudioItem, *, target_sample_rate: int = 44100, short_seconds: float = 1.0) -> PreparedExample:
    """Reads one file and re-encodes it losslessly to FLAC, streaming in blocks.

    A float file whose peak exceeds full scale is encoded again, scaled by 1/peak, because
    FLAC would clip it (`PreparedExample.peak_normalised`; the metadata's `gain` is 1/peak).

    Raises:
      SkipExample: the file is missing, unreadable, empty, silent, or cannot be FLAC-encoded.
    """
    if not os.path.isfile(item.path):
        raise SkipExample("missing", f"{item.path!r} does not exist")
    try:
        f = audio_io.open_audio(item.path)
    except audio_io.AudioDecodeError as e:
        raise SkipExample(e.reason, str(e)) from e
    gain = 1.0
    with f:
        sample_rate, channels = int(f.samplerate), int(f.channels)
        flac_bytes, num_samples, peak = _encode_flac(f, item.path)
        if peak > 1.0:  # only known at the end of the stream: a second pass, for these files only
            gain = 1.0 / peak
            f.seek(0)
            flac_bytes, _, _ = _encode_flac(f, item.path, gain)
    if num_samples == 0:
        raise SkipExample("empty", f"{item.path!r} has no samples")
    if peak < SILENCE_PEAK:
        raise SkipExample("silent", f"{item.path!r} is silent (peak {peak:.2e})")

    duration = num_samples / sample_rate
    default_id = os.path.splitext(item.rel_path)[0]
    metadata = {
        **item.extra,
        "caption": item.caption or "",
        "sample_rate": sample_rate,
        "num_samples": num_samples,
        "num_channels": channels,
        "duration_seconds": duration,
        "id": str(item.extra.get("id", default_id)),
        "source_path": item.rel_path,
        **({"gain": gain} if gain != 1.0 else {}),
    }
    notes = []
    if channels == 1:
        notes.append("mono")
    elif channels > 2:
        notes.append("multichannel")
    if sample_rate != target_sample_rate:
        notes.append("resample_needed")
    if duration < short_seconds:
        notes.append("short")
    return PreparedExample(flac_bytes, metadata, tuple(notes), peak_normalised=gain != 1.0)


def _ordered_map(fn: Callable[[T], R], items: Iterable[T], num_workers: int) -> Iterator[R]:
    """`map(fn, items)` on a thread pool, in order, with a bounded number of pending results.

    libsndfile and soxr release the GIL, so threads give real parallelism; the bound keeps memory
    flat when one slow file holds back the in-order output.
    """
    if num_workers <= 1:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        pending: collections.deque[concurrent.futures.Future[R]] = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def iter_prepared_examples(
    items: list[AudioItem],
    report: ConversionReport,
    *,
    target_sample_rate: int = 44100,
    short_seconds: float = 1.0,
    num_workers: int = 1,
    progress: bool = False,
) -> Iterator[PreparedExample]:
    """Converts `items` in order, recording skips, missing captions and notes in `report`."""

    def convert(item: AudioItem) -> PreparedExample | SkipExample:
        try:
            return prepare_example(item, target_sample_rate=target_sample_rate, short_seconds=short_seconds)
        except SkipExample as e:
            return e
        except Exception as e:  # noqa: BLE001 - a single bad file must never stop a conversion
            return SkipExample("unreadable", f"unexpected error reading {item.path!r}: {e!r}")

    results = _ordered_map(convert, items, num_workers)
    for item, result in tqdm.tqdm(
        # None: no bar unless stderr is a terminal (a log file or pipe gets only the report).
        zip(items, results),
        total=len(items),
        disable=None if progress else True,
        unit="file",
        desc="audio -> records",
    ):
        if isinstance(result, SkipExample):
            report.add_skip(result.reason, item.rel_path, str(result))
            continue
        if item.caption is None:
            report.add_missing_caption(item.rel_path)
        report.add_written(result)
        yield result


def write_shards(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_shards: int = 4,
    prefix: str = "train",
    target_sample_rate: int = 44100,
    progress: bool = True,
    short_seconds: float = 1.0,
    num_workers: int = 1,
) -> dict[str, Any]:
    """Converts a folder or manifest of audio files into `num_shards` ArrayRecord files.

    Writes `<output_dir>/<prefix>-<i:05d>-of-<N:05d>.array_record` and `<output_dir>/<prefix>_report.json`.

    Args:
      input_path: a folder, a `.jsonl` / `.csv` manifest, or a single audio file.
      output_dir: created if needed.
      num_shards: number of shard files (use >= the number of data-loading hosts x workers).
      prefix: shard file name prefix (e.g. "train", "valid").
      target_sample_rate: the model rate; only used to count files that need resampling.
      progress: show a tqdm progress bar.
      short_seconds: files shorter than this are counted as "short" (they are kept and padded).
      num_workers: decoding/encoding threads.

    Returns:
      The report dict: `written`, `skipped` {reason: count}, `skipped_examples` {reason: [paths]},
      `converted_later` {mono, multichannel, resample_needed, short: count}, `missing_caption`,
      plus `shards` and `records_per_shard`.

    Raises:
      FileNotFoundError: `input_path` does not exist.
      UserError: no file of `input_path` could be decoded; nothing is written.
    """
    report = ConversionReport()
    items = discover_audio(input_path, report)
    if not items:
        raise report.nothing_written(input_path, 0)
    with records.ShardWriter(output_dir, prefix, num_shards) as writer:
        for example in iter_prepared_examples(
            items,
            report,
            target_sample_rate=target_sample_rate,
            short_seconds=short_seconds,
            num_workers=num_workers,
            progress=progress,
        ):
            writer.write(records.encode_record(example.flac_bytes, example.metadata))
        if not report.written:  # raised inside the `with`: the writer deletes its partial shards
            raise report.nothing_written(input_path, len(items))
    result = {
        "input": os.fspath(input_path),
        "num_inputs": len(items),
        **report.as_dict(),
        "target_sample_rate": target_sample_rate,
        "short_seconds": short_seconds,
        "shards": [os.path.basename(p) for p in writer.paths],
        "records_per_shard": list(writer.records_per_shard),
    }
    report.log()
    with open(os.path.join(os.fspath(output_dir), f"{prefix}_report.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
