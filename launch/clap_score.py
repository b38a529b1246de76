"""CLAP score (and text<->audio retrieval) of captioned audio files with a trained CLAP.

    python launch/clap_score.py --clap_dir=outputs/demo/clap --input=outputs/demo/samples
    python launch/clap_score.py --clap_dir=outputs/demo/clap --input=data/valid.jsonl --output_json=score.json

`--input` is anything `data/make_shards.py` reads: a folder of audio files with `.txt`/`.json`
caption sidecars (what `launch/sample.py` writes), or a JSONL/CSV manifest with `path` and
`caption`. Files without a caption are skipped (and counted). Prints the mean matched
cosine, the shuffled-pairs baseline and retrieval recall@k against chance.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags, logging  # noqa: E402

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402

_CLAP_DIR = flags.DEFINE_string("clap_dir", None, "Run directory of a trained CLAP.", required=True)
_INPUT = flags.DEFINE_string(
    "input", None, "Audio folder with caption sidecars, or a JSONL/CSV manifest.", required=True
)
_LIMIT = flags.DEFINE_integer("limit", 0, "Score at most this many files (0: all).", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output_json", "", "Also write the result (with per-file scores) here.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the shuffled-pairs baseline.")


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    cli.check_run_tasks({"clap_dir": (_CLAP_DIR.value, "clap")})
    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.input_pipeline.shard_writer import discover_audio
    from stable_audio_jax.metrics.clap_score import clap_score

    try:
        items = discover_audio(_INPUT.value)
        encoder = CLAPEncoder.from_run(_CLAP_DIR.value)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    captioned = [item for item in items if item.caption]
    if _LIMIT.value:
        captioned = captioned[: _LIMIT.value]
    if not captioned:
        raise UserError(f"--input={_INPUT.value}: no captioned audio files")
    result = clap_score(encoder, [i.caption for i in captioned], [i.path for i in captioned], seed=_SEED.value)
    result["files"] = [i.rel_path for i in captioned]
    result["skipped_without_caption"] = len(items) - len([i for i in items if i.caption])

    print(f"CLAP score over {result['num_items']} files: {result['clap_score']:.4f}")
    if "shuffled_clap_score" in result:
        print(f"  shuffled pairs (baseline):      {result['shuffled_clap_score']:.4f}")
    for key, value in result.get("retrieval", {}).items():
        if key.startswith("text_to_audio"):
            k = key.split("@")[1]
            print(f"  text->audio recall@{k}: {value:.3f} (chance {result['retrieval'][f'chance@{k}']:.3f})")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
