"""Build the `stable_audio_captions` tfds dataset (ArrayRecord, no TensorFlow) from captioned audio.

Usage:
  python data/build_tfds.py --input=/data/clips --data_dir=/data/tfds [--valid_input=/data/valid.jsonl]

Read it back with:
  import tensorflow_datasets as tfds
  from stable_audio_jax.input_pipeline import tfds_builder  # registers the dataset name
  source = tfds.data_source('stable_audio_captions', data_dir='/data/tfds', split='train')
and pass `source` to `grain_pipeline.make_audio_dataset`.
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

import tensorflow_datasets as tfds  # noqa: E402

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402
from stable_audio_jax.input_pipeline import shard_writer, tfds_builder  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="train split: audio folder, manifest.jsonl or .csv")
    parser.add_argument("--valid_input", default=None, help="optional validation split input")
    parser.add_argument("--data_dir", required=True, help="tfds data_dir to write into")
    parser.add_argument("--target_sample_rate", type=int, default=44100, help="model rate (for the report only)")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="decoding threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    inputs = {"train": args.input}
    if args.valid_input:
        inputs["valid"] = args.valid_input
    for split, path in inputs.items():
        flag = "--input" if split == "train" else "--valid_input"
        if not os.path.exists(path):
            raise UserError(f"{flag}={path}: no such file or folder")
        if not shard_writer.discover_audio(path):  # before tfds creates its folders
            raise UserError(f"{flag}={path}: no audio files")
    cli.check_output_dir(args.data_dir, "--data_dir")
    # tfds logs at INFO and draws progress bars: keep them to terminals, as make_shards does.
    logging.getLogger("absl").setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        tfds.disable_progress_bar()
    builder = tfds_builder.StableAudioCaptions(
        data_dir=args.data_dir,
        input_path=inputs,
        target_sample_rate=args.target_sample_rate,
        num_workers=args.num_workers,
    )
    builder.download_and_prepare()  # a split without decodable audio fails here (UserError)
    for split, report in builder.reports.items():
        with open(os.path.join(builder.data_dir, f"{split}_report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    print(json.dumps({"data_dir": builder.data_dir, "reports": builder.reports}, indent=2))
    return builder.reports


if __name__ == "__main__":
    cli.run(main, absl_flags=False)
