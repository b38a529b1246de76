"""Dataset writing: clip audio as FLAC plus JSONL manifests, shared by the demo and synthetic datasets.

On-disk layout::

    output_dir/audio/<clip_id>.flac   stereo 24-bit FLAC
    output_dir/train.jsonl            one JSON object per clip: "path" (relative), "caption", metadata
    output_dir/valid.jsonl            held-out clips (the last ones)

Clips are made by a :data:`ClipMaker` from a ``numpy.random.Generator`` seeded with
``(seed, clip_index)``, so the same seed gives identical files and captions.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import numpy as np
import soundfile as sf

# make_clip(rng, clip_index, target_seconds) -> (finished [n, 2] float32 audio, metadata with "caption")
ClipMaker = Callable[[np.random.Generator, int, float], tuple[np.ndarray, dict[str, Any]]]


def num_valid_clips(num_clips: int, valid_fraction: float) -> int:
    """Held-out clip count: at least one when a fraction is requested, never all clips."""
    if valid_fraction <= 0 or num_clips < 2:
        return 0
    return int(min(num_clips - 1, max(1, round(num_clips * valid_fraction))))


def write_dataset(
    output_dir: str | os.PathLike,
    num_clips: int,
    make_clip: ClipMaker,
    *,
    seed: int,
    min_seconds: float,
    max_seconds: float,
    sample_rate: int,
    num_valid: int,
    progress: bool = False,
    desc: str = "clips",
) -> dict[str, Any]:
    """Writes ``audio/clip_XXXX.flac`` and ``train.jsonl`` / ``valid.jsonl``; returns a summary.

    Clip ``i`` draws all its randomness from ``np.random.default_rng([seed, i])``: first its target
    length, uniform in ``[min_seconds, max_seconds]``, then whatever ``make_clip`` draws. The last
    ``num_valid`` clips form the validation split.

    Args:
      make_clip: ``(rng, clip_index, target_seconds) -> (float32 [num_samples, 2] audio, metadata)``;
        ``metadata["caption"]`` is required, the other fields are copied into the manifest row.
      progress: show a tqdm progress bar labelled ``desc``.
    Returns:
      Summary dict: ``output_dir``, ``num_clips``, clip counts (``splits``) and ``seconds`` per
      split, ``total_seconds`` and clip counts per ``sources`` entry.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    output_dir = os.fspath(output_dir)
    os.makedirs(os.path.join(output_dir, "audio"), exist_ok=True)
    records: dict[str, list[dict[str, Any]]] = {"train": [], "valid": []}
    indices: Any = range(num_clips)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=desc, unit="clip")
    for index in indices:
        rng = np.random.default_rng([seed, index])
        target = float(rng.uniform(min_seconds, max_seconds))
        audio, metadata = make_clip(rng, index, target)
        if audio.ndim != 2 or audio.shape[1] != 2:
            raise ValueError(f"clip {index}: expected [num_samples, 2] audio, got {audio.shape}")
        clip_id = f"clip_{index:04d}"
        rel_path = f"audio/{clip_id}.flac"
        sf.write(os.path.join(output_dir, rel_path), audio, sample_rate, format="FLAC", subtype="PCM_24")
        split = "valid" if index >= num_clips - num_valid else "train"
        duration = audio.shape[0] / sample_rate
        records[split].append(
            {
                "path": rel_path,
                "caption": metadata.pop("caption"),
                "clip_id": clip_id,
                "split": split,
                **metadata,
                "duration_seconds": round(duration, 6),
                "seconds_total": math.ceil(duration),
                "sample_rate": sample_rate,
                "num_samples": int(audio.shape[0]),
            }
        )
    for split, rows in records.items():
        with open(os.path.join(output_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    all_rows = records["train"] + records["valid"]
    sources: dict[str, int] = {}
    for row in all_rows:
        sources[row.get("source", "unknown")] = sources.get(row.get("source", "unknown"), 0) + 1
    return {
        "output_dir": output_dir,
        "num_clips": len(all_rows),
        "splits": {s: len(rows) for s, rows in records.items()},
        "seconds": {s: round(sum(r["duration_seconds"] for r in rows), 3) for s, rows in records.items()},
        "total_seconds": round(sum(r["duration_seconds"] for r in all_rows), 3),
        "sources": sources,
    }
