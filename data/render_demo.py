"""Render the offline demo dataset (or the numpy synthetic fallback) to a folder.

Usage:
  python data/render_demo.py --output_dir=/tmp/demo --num_clips=48 --seed=0 [--synthetic]

Writes ``audio/clip_XXXX.flac`` plus ``train.jsonl`` / ``valid.jsonl`` and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Let the script run from a plain checkout (without `pip install -e .`).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


from stable_audio_jax import cli  # noqa: E402


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="folder for audio/ and the JSONL manifests")
    parser.add_argument("--num_clips", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min_seconds", type=float, default=None, help="shortest clip (default 2.0, or 0.5 with --synthetic)"
    )
    parser.add_argument(
        "--max_seconds", type=float, default=None, help="longest clip (default 30.0, or 3.0 with --synthetic)"
    )
    parser.add_argument("--sample_rate", type=int, default=44100)
    parser.add_argument(
        "--valid_fraction",
        type=float,
        default=0.125,
        help="held-out fraction (soundfont dataset only; synthetic holds out 1 in 8)",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="numpy-only synthesiser instead of music21 + soundfont"
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)
    cli.check_output_dir(args.output_dir, "--output_dir")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.synthetic:
        from stable_audio_jax.demo_corpus.synthetic import write_synthetic_dataset

        summary = write_synthetic_dataset(
            args.output_dir,
            args.num_clips,
            seed=args.seed,
            min_seconds=0.5 if args.min_seconds is None else args.min_seconds,
            max_seconds=3.0 if args.max_seconds is None else args.max_seconds,
            sample_rate=args.sample_rate,
        )
    else:
        from stable_audio_jax.demo_corpus.demo_music import render_demo_dataset

        summary = render_demo_dataset(
            args.output_dir,
            args.num_clips,
            seed=args.seed,
            min_seconds=2.0 if args.min_seconds is None else args.min_seconds,
            max_seconds=30.0 if args.max_seconds is None else args.max_seconds,
            sample_rate=args.sample_rate,
            valid_fraction=args.valid_fraction,
            progress=not args.no_progress,
        )
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    cli.run(main, absl_flags=False)
