"""Train a RoBERTa-style byte-level BPE tokenizer on dataset captions (offline).

Usage:
  python data/train_tokenizer.py --manifest=/tmp/demo_data/train.jsonl --output=/data/tokenizer.json
  python data/train_tokenizer.py --shards=/data/shards/train --shards=/data/shards/extra \
      --output=/data/tokenizer [--vocab_size=8192 --min_frequency=2 --max_length=77]

Captions come from JSONL manifests (the `caption` field of every line, as written by
`data/render_demo.py`) and/or ArrayRecord shard folders / globs / files written by
`data/make_shards.py` (the `caption` metadata of every record); both flags repeat. Empty
captions are skipped. `--output` is a `.json` file or a folder (then `tokenizer.json` in
it). Load the result with `TextTokenizer.from_file(path, max_length=None)`: the file keeps
`--max_length` as its padding/truncation length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence

# Run as a script from a checkout: make `stable_audio_jax` importable without installing it.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402
from stable_audio_jax.input_pipeline import records  # noqa: E402
from stable_audio_jax.input_pipeline.tokenizer import train_bpe_tokenizer  # noqa: E402


def captions_from_manifest(path: str) -> Iterator[str]:
    """The non-empty `caption` strings of a JSONL manifest."""
    if not os.path.isfile(path):
        raise UserError(f"--manifest={path}: no such file")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise UserError(f"--manifest={path}: line {line_no} is not JSON: {e}") from None
            caption = row.get("caption") if isinstance(row, dict) else None
            if isinstance(caption, str) and caption.strip():
                yield caption


def captions_from_shards(path_or_glob: str) -> Iterator[str]:
    """The non-empty `caption` metadata of every record in the shards at `path_or_glob`."""
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        shards = records.list_shards(path_or_glob)
    except FileNotFoundError as e:
        raise UserError(f"--shards={path_or_glob}: {e}") from None
    for shard in shards:
        reader = ArrayRecordReader(shard)
        try:
            for _ in range(reader.num_records()):
                try:
                    _, metadata = records.decode_record(reader.read())
                except records.RecordFormatError as e:
                    raise UserError(
                        f"--shards: {shard}: {e} (only shards written by data/make_shards.py are read)"
                    ) from None
                caption = metadata.get("caption")
                if isinstance(caption, str) and caption.strip():
                    yield caption
        finally:
            reader.close()


def collect_captions(manifests: Sequence[str] = (), shards: Sequence[str] = ()) -> list[str]:
    """All captions of the given manifests and shard locations, in order."""
    captions: list[str] = []
    for manifest in manifests:
        captions.extend(captions_from_manifest(manifest))
    for shard in shards:
        captions.extend(captions_from_shards(shard))
    return captions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--manifest", action="append", default=[], help="JSONL manifest with a caption field (repeatable)"
    )
    parser.add_argument(
        "--shards", action="append", default=[], help="ArrayRecord shard folder, glob or file (repeatable)"
    )
    parser.add_argument("--output", required=True, help="tokenizer.json path, or a folder to write it into")
    parser.add_argument("--vocab_size", type=int, default=8192, help="upper bound on the vocabulary size")
    parser.add_argument("--min_frequency", type=int, default=2, help="minimum count of a merged pair")
    parser.add_argument("--max_length", type=int, default=77, help="tokens per prompt (padding/truncation length)")
    args = parser.parse_args(argv)
    if not args.manifest and not args.shards:
        parser.error("give at least one --manifest or --shards")
    return args


def main(argv: list[str] | None = None) -> str:
    """Trains and saves the tokenizer; returns the path of the written tokenizer.json."""
    args = parse_args(argv)
    captions = collect_captions(args.manifest, args.shards)
    if not captions:
        raise UserError(f"no captions found in manifests {args.manifest} / shards {args.shards}")
    tokenizer = train_bpe_tokenizer(
        captions, vocab_size=args.vocab_size, min_frequency=args.min_frequency, max_length=args.max_length
    )
    path = tokenizer.save(args.output)
    ids, mask = tokenizer(captions[:1])
    n = int(mask[0].sum())
    print(
        f"trained on {len(captions)} captions: vocab size {tokenizer.vocab_size}, max_length "
        f"{tokenizer.max_length}, pad id {tokenizer.pad_id}"
    )
    print(f"example: {captions[0]!r}")
    print(f"  {n} tokens: {tokenizer.tokenizer.encode(captions[0]).tokens[:n]}")
    print(f"  ids: {ids[0, :n].tolist()}")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    cli.run(main, absl_flags=False)
