"""Pre-encode audio shards into diffusion training shards (frozen VAE latents + text features).

Usage, with trained VAE and CLAP runs or with a pretrained directory (its VAE and T5):
  python data/pre_encode.py --input=outputs/demo/shards/train --output_dir=outputs/demo/latents/train \
      --vae_dir=outputs/demo/vae --clap_dir=outputs/demo/clap --sample_size=262144 --num_crops=4
  python data/pre_encode.py --input=shards/train --output_dir=latents/train --pretrained=pretrained/sao \
      --sample_size=2097152 --num_crops=1

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

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="audio shards (folder, glob or file) from data/make_shards.py")
    parser.add_argument("--output_dir", required=True, help="where the latent shards are written")
    parser.add_argument("--vae_dir", help="run directory of the trained VAE")
    parser.add_argument("--clap_dir", help="run directory of the trained CLAP")
    parser.add_argument("--pretrained", help="a pretrained directory (launch/convert_sao.py) instead of the two runs")
    parser.add_argument("--sample_size", type=int, required=True, help="diffusion window in samples")
    parser.add_argument("--num_crops", type=int, default=1, help="random crops per file")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--prefix", default="train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("sample_size", "num_crops", "batch_size", "num_shards"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """Fail before any model loads: missing shards, an unwritable output, a run directory that
    is missing or of another task (e.g. --vae_dir and --clap_dir swapped), a --pretrained that
    is no pretrained directory, or both kinds of source."""
    from stable_audio_jax.input_pipeline import records

    runs = [f"--{name}" for name in ("vae_dir", "clap_dir") if getattr(args, name) is not None]
    if args.pretrained is not None and runs:
        raise UserError(
            f"give --pretrained or --vae_dir and --clap_dir, not both (got --pretrained and {' and '.join(runs)})"
        )
    if args.pretrained is None and len(runs) < 2:
        raise UserError("give --vae_dir and --clap_dir (trained runs) or --pretrained (a converted model directory)")
    try:
        records.list_shards(args.input)
    except FileNotFoundError as e:
        raise UserError(f"--input={args.input}: {e}") from None
    cli.check_output_dir(args.output_dir, "--output_dir")
    if args.pretrained is not None:
        from stable_audio_jax.pretrained import read_pretrained_config

        try:
            read_pretrained_config(args.pretrained)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"--pretrained={args.pretrained}: {e}") from None
    else:
        cli.check_run_tasks({"vae_dir": (args.vae_dir, "vae"), "clap_dir": (args.clap_dir, "clap")})


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    check_inputs(args)
    from stable_audio_jax.inference.pre_encode import pre_encode

    try:
        report = pre_encode(
            args.input,
            args.output_dir,
            vae_dir=args.vae_dir,
            clap_dir=args.clap_dir,
            pretrained_dir=args.pretrained,
            sample_size=args.sample_size,
            num_crops=args.num_crops,
            batch_size=args.batch_size,
            num_shards=args.num_shards,
            prefix=args.prefix,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as e:  # e.g. a window the VAE cannot encode
        raise UserError(str(e)) from None
    print(json.dumps({k: v for k, v in report.items() if k != "shards"}, indent=2))
    return report


if __name__ == "__main__":
    cli.run(main, absl_flags=False)
