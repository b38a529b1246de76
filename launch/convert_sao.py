"""Convert a stable-audio-tools checkpoint (Stable Audio Open or Stable Audio 1.0) for stable-audio-jax.

    python launch/convert_sao.py --checkpoint=stable-audio-open-1.0/model.safetensors \
        --model_config=stable-audio-open-1.0/model_config.json --t5_dir=t5-base --output_dir=pretrained/sao
    python launch/convert_sao.py --checkpoint=sa1/model.ckpt --model_config=sa1/model_config.json \
        --clap_checkpoint=sa1/clap.ckpt --roberta_dir=roberta-base --output_dir=pretrained/sa1
    python launch/sample.py --pretrained=pretrained/sao --prompt="128 BPM tech house drum loop" --seconds_total=10

Everything is read from local files (nothing is downloaded): the checkpoint (`.safetensors`,
or `.ckpt` read without executing its pickle) and its `model_config.json`, whose
`diffusion.type` says which model it is (Stable Audio Open Small is a `dit` with
`seconds_total` timing only; it converts like SAO 1.0). The prompt encoder lives outside the checkpoint:
for SAO (`dit`) a Hugging Face T5 folder (`config.json`, `model.safetensors` or
`pytorch_model.bin`, `tokenizer.json` or `spiece.model`); for SA 1.0 (`adp_cfg_1d`) the
LAION-CLAP checkpoint its conditioner loads (`clap_ckpt_path`) and a RoBERTa folder for
the text branch's `config.json` and tokenizer.
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

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "model.safetensors or model.ckpt of the model.", required=True)
_MODEL_CONFIG = flags.DEFINE_string("model_config", None, "Its model_config.json.", required=True)
_T5_DIR = flags.DEFINE_string("t5_dir", None, "Stable Audio Open: local Hugging Face t5-base folder.")
_CLAP_CHECKPOINT = flags.DEFINE_string(
    "clap_checkpoint", None, "Stable Audio 1.0: the LAION-CLAP checkpoint of its prompt conditioner."
)
_ROBERTA_DIR = flags.DEFINE_string(
    "roberta_dir", None, "Stable Audio 1.0: a local RoBERTa folder (config.json and tokenizer)."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the pretrained directory is written.", required=True)


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    cli.check_output_dir(_OUTPUT_DIR.value, "--output_dir")  # before the minutes of reading weights
    from stable_audio_jax.convert.sao_checkpoint import convert_checkpoint
    from stable_audio_jax.convert.state_dict import ConversionError

    try:
        summary = convert_checkpoint(
            _CHECKPOINT.value,
            _MODEL_CONFIG.value,
            _OUTPUT_DIR.value,
            t5_dir=_T5_DIR.value,
            clap_checkpoint=_CLAP_CHECKPOINT.value,
            roberta_dir=_ROBERTA_DIR.value,
        )
    except (FileNotFoundError, FileExistsError, ConversionError, ValueError) as e:
        raise UserError(str(e)) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    cli.run(main)
