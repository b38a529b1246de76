"""Pre-encode audio shards into diffusion training shards (frozen VAE latents + CLAP text features).

Usage:
  python data/pre_encode.py --input=outputs/demo/shards/train --output_dir=outputs/demo/latents/train \
      --vae_dir=outputs/demo/vae --clap_dir=outputs/demo/clap --sample_size=262144 --num_crops=4

Writes `<prefix>-*.array_record` latent shards and `<prefix>_pre_encode.json` (record count and the
latent/text shapes a diffusion config must match).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="audio shards (folder, glob or file) from data/make_shards.py")
    parser.add_argument("--output_dir", required=True, help="where the latent shards are written")
    parser.add_argument("--vae_dir", required=True, help="run directory of the trained VAE")
    parser.add_argument("--clap_dir", required=True, help="run directory of the trained CLAP")
    parser.add_argument("--sample_size", type=int, required=True, help="diffusion window in samples")
    parser.add_argument("--num_crops", type=int, default=1, help="random crops per file")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--prefix", default="train")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from stable_audio_jax.inference.pre_encode import pre_encode

    try:
        report = pre_encode(args.input, args.output_dir, vae_dir=args.vae_dir, clap_dir=args.clap_dir,
                            sample_size=args.sample_size, num_crops=args.num_crops, batch_size=args.batch_size,
                            num_shards=args.num_shards, prefix=args.prefix, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: v for k, v in report.items() if k != "shards"}, indent=2))
    return report


if __name__ == "__main__":
    main()
