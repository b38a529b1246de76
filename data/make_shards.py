"""Convert a folder or manifest of captioned audio files into ArrayRecord shards.

Usage:
  python data/make_shards.py --input=/data/clips --output_dir=/data/shards --num_shards=64 [--prefix=train]

`--input` is a folder of audio files with optional `x.txt` / `x.json` caption sidecars, a JSONL
manifest (objects with "path" relative to the manifest and "caption"), or a CSV manifest (columns
path, caption, ...). Writes `<prefix>-<i:05d>-of-<N:05d>.array_record` files plus
`<prefix>_report.json` (written/skipped/repaired counts) to `--output_dir`. An input without
any decodable audio exits with status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Run as a script from a checkout: make `stable_audio_jax` importable without installing it.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402
from stable_audio_jax.input_pipeline import shard_writer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="audio folder, manifest.jsonl or manifest.csv")
    parser.add_argument("--output_dir", required=True, help="where shards and the report are written")
    parser.add_argument("--num_shards", type=int, default=4, help="number of ArrayRecord files")
    parser.add_argument("--prefix", default="train", help="shard file name prefix, e.g. train or valid")
    parser.add_argument("--target_sample_rate", type=int, default=44100, help="model rate (for the report only)")
    parser.add_argument("--short_seconds", type=float, default=1.0, help="report files shorter than this")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="decoding threads")
    parser.add_argument("--no_progress", action="store_true", help="disable the progress bar")
    args = parser.parse_args(argv)
    for name in ("num_shards", "num_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not os.path.exists(args.input):
        raise UserError(f"--input={args.input}: no such file or folder")
    cli.check_output_dir(args.output_dir, "--output_dir")
    report = shard_writer.write_shards(
        args.input,
        args.output_dir,
        num_shards=args.num_shards,
        prefix=args.prefix,
        target_sample_rate=args.target_sample_rate,
        progress=not args.no_progress,
        short_seconds=args.short_seconds,
        num_workers=args.num_workers,
    )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    cli.run(main, absl_flags=False)
