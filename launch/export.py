"""Export a fine-tuned model as a pretrained directory, shared and sampled like the original.

    # LoRA runs trained on pretrained/sao, merged at their scales (run_dir[:scale], repeatable)
    python launch/export.py --pretrained=pretrained/sao --lora=runs/sao_lora --output_dir=pretrained/sao_mine
    # a full fine-tuning run of it (config.init_from=pretrained/sao): its newest EMA weights
    python launch/export.py --pretrained=pretrained/sao --diffusion_dir=runs/sao_finetune --output_dir=...
    python launch/sample.py --pretrained=pretrained/sao_mine --prompt="..."

The new directory holds the fine-tuned diffusion model, `--pretrained`'s VAE, text encoder
and tokenizer, and in `config.json` a `fine_tuned_from` entry naming what went in.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402

_PRETRAINED = flags.DEFINE_string("pretrained", None, "The pretrained directory that was fine-tuned.", required=True)
_LORA = flags.DEFINE_multi_string("lora", [], "A LoRA run trained on --pretrained, as run_dir[:scale] (repeatable).")
_DIFFUSION_DIR = flags.DEFINE_string("diffusion_dir", None, "A full fine-tuning run of --pretrained's diffusion model.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the new pretrained directory is written.", required=True)


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    cli.check_output_dir(_OUTPUT_DIR.value, "--output_dir")
    adapters = [cli.split_scale(value) for value in _LORA.value]
    cli.check_run_tasks({"diffusion_dir": (_DIFFUSION_DIR.value, "diffusion")})
    for path, _ in adapters:
        cli.check_run_tasks({"lora": (path, "diffusion")})
    from stable_audio_jax.inference.fine_tuned import export_pretrained

    try:
        summary = export_pretrained(
            _PRETRAINED.value, _OUTPUT_DIR.value, diffusion_dir=_DIFFUSION_DIR.value, adapters=adapters
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise UserError(str(e)) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    cli.run(main)
