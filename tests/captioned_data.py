"""Synthetic captioned clips as the CLAP tests train on them: the raw dataset, ArrayRecord shards
per split and a BPE tokenizer of the training captions."""

from __future__ import annotations

import json
import pathlib

from tests.micro_configs import VOCAB_SIZE


def write_captioned_data(
    root: pathlib.Path,
    *,
    num_clips: int,
    seed: int,
    min_seconds: float,
    max_seconds: float,
    splits: tuple[str, ...] = ("train",),
    num_shards: int = 1,
) -> dict:
    """`root/raw` (clips + `train.jsonl` / `valid.jsonl`), `root/shards/<split>` and
    `root/tokenizer.json`. Returns `{"raw", "shards": {split: folder}, "tokenizer", "captions"}`
    (the training captions)."""
    from stable_audio_jax.demo_corpus.synthetic import write_synthetic_dataset
    from stable_audio_jax.input_pipeline.shard_writer import write_shards
    from stable_audio_jax.input_pipeline.tokenizer import train_bpe_tokenizer

    raw = root / "raw"
    write_synthetic_dataset(raw, num_clips=num_clips, seed=seed, min_seconds=min_seconds, max_seconds=max_seconds)
    shards = {}
    for split in splits:
        shards[split] = str(root / "shards" / split)
        write_shards(raw / f"{split}.jsonl", shards[split], num_shards=num_shards, prefix=split, progress=False)
    with open(raw / "train.jsonl") as f:
        captions = [json.loads(line)["caption"] for line in f]
    tokenizer = train_bpe_tokenizer(captions, vocab_size=VOCAB_SIZE).save(str(root / "tokenizer.json"))
    return {"raw": raw, "shards": shards, "tokenizer": tokenizer, "captions": captions}
