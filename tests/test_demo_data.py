"""Tests for the offline demo dataset (soundfont renders) and the numpy synthetic fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from stable_audio_jax.demo_corpus import demo_music, generated_music, soundfont, synthetic
from stable_audio_jax.demo_corpus.captions import format_caption

SR = 44100
MIN_SECONDS, MAX_SECONDS = 2.0, 4.0
NUM_CLIPS = 4


def _has_soundfont_stack() -> bool:
    try:
        import music21  # noqa: F401
        import tinysoundfont  # noqa: F401

        soundfont.soundfont_path()
    except (ImportError, FileNotFoundError):
        return False
    return True


needs_soundfont = pytest.mark.skipif(not _has_soundfont_stack(), reason="music21/tinysoundfont/pretty_midi missing")


def _read_manifests(root: str) -> list[dict]:
    rows = []
    for split in ("train", "valid"):
        with open(os.path.join(root, f"{split}.jsonl"), encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _render(root: str, seed: int) -> dict:
    return demo_music.render_demo_dataset(
        root, NUM_CLIPS, seed=seed, min_seconds=MIN_SECONDS, max_seconds=MAX_SECONDS, progress=False
    )


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """Two renders with seed 0 and one with seed 1: {name: (root, summary)}."""
    if not _has_soundfont_stack():
        pytest.skip("music21/tinysoundfont/pretty_midi missing")
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        root = str(tmp_path_factory.mktemp(f"demo_{name}"))
        runs[name] = (root, _render(root, seed))
    return runs


@needs_soundfont
def test_manifests_point_at_flac_clips(demo_runs):
    root, summary = demo_runs["a"]
    rows = _read_manifests(root)
    assert len(rows) == NUM_CLIPS == summary["num_clips"]
    assert summary["splits"]["valid"] >= 1 and summary["splits"]["train"] >= 1
    assert {r["source"] for r in rows} == {"corpus", "generated"}  # about half each
    for row in rows:
        assert not os.path.isabs(row["path"])
        info = sf.info(os.path.join(root, row["path"]))
        assert (info.format, info.subtype) == ("FLAC", "PCM_24")
        assert info.samplerate == SR and info.channels == 2
        assert MIN_SECONDS - 1e-3 <= info.duration <= MAX_SECONDS + 1e-3
        assert abs(info.duration - row["duration_seconds"]) < 1e-3
        assert isinstance(row["instruments"], list) and row["instruments"]
        assert isinstance(row["bpm"], int)


@needs_soundfont
def test_clips_are_loud_real_stereo(demo_runs):
    root, _ = demo_runs["a"]
    for row in _read_manifests(root):
        audio, _ = sf.read(os.path.join(root, row["path"]), dtype="float32")
        assert audio.ndim == 2 and audio.shape[1] == 2
        assert 0.8 < np.max(np.abs(audio)) <= 1.0  # peak-normalised to -1 dBFS
        side = np.sqrt(np.mean((audio[:, 0] - audio[:, 1]) ** 2))
        mid = np.sqrt(np.mean((audio[:, 0] + audio[:, 1]) ** 2))
        assert side > 1e-3 * mid, row["path"]  # not mono


@needs_soundfont
def test_captions_nonempty_varied_and_pieces_held_out(demo_runs):
    root, _ = demo_runs["a"]
    rows = _read_manifests(root)
    captions = [r["caption"] for r in rows]
    assert all(isinstance(c, str) and len(c) > 5 for c in captions)
    assert len(set(captions)) == len(captions)
    pieces = [r["piece"] for r in rows if r["source"] == "corpus"]
    assert len(pieces) == len(set(pieces))  # no corpus piece is used twice, so valid is unseen


@needs_soundfont
def test_same_seed_is_identical_and_other_seed_differs(demo_runs):
    (root_a, _), (root_b, _), (root_c, _) = demo_runs["a"], demo_runs["b"], demo_runs["c"]
    rows_a, rows_b, rows_c = _read_manifests(root_a), _read_manifests(root_b), _read_manifests(root_c)
    assert rows_a == rows_b
    assert [r["caption"] for r in rows_a] != [r["caption"] for r in rows_c]
    for row_a, row_b, row_c in list(zip(rows_a, rows_b, rows_c))[:2]:
        audio_a, _ = sf.read(os.path.join(root_a, row_a["path"]), dtype="float32")
        audio_b, _ = sf.read(os.path.join(root_b, row_b["path"]), dtype="float32")
        audio_c, _ = sf.read(os.path.join(root_c, row_c["path"]), dtype="float32")
        np.testing.assert_array_equal(audio_a, audio_b)
        assert audio_a.shape != audio_c.shape or not np.array_equal(audio_a, audio_c)


def test_caption_forms_and_fields():
    metadata = {
        "genre": "Baroque chorale",
        "composer": "J.S. Bach",
        "instruments": ["violin", "cello"],
        "key": "F# minor",
        "bpm": 72,
        "time_signature": "3/4",
        "num_parts": 4,
        "title": "ignored",
    }
    captions = [format_caption(np.random.default_rng(i), metadata) for i in range(60)]
    named = [c for c in captions if ": " in c]
    sentences = [c for c in captions if c.endswith(".")]
    plain = [c for c in captions if c not in named and c not in sentences]
    assert named and sentences and plain
    assert all("ignored" not in c for c in captions)
    assert any(" | " in c for c in named)
    assert len(set(captions)) > 30
    assert format_caption(np.random.default_rng(3), metadata) == captions[3]


def test_roman_numerals_and_keys():
    assert generated_music.parse_numeral("V7", "major") == (7, (0, 4, 7, 10))
    assert generated_music.parse_numeral("VII", "minor") == (10, (0, 4, 7))
    assert generated_music.parse_numeral("ii°", "minor") == (2, (0, 3, 6))
    assert generated_music.parse_numeral("bVII", "major") == (10, (0, 4, 7))
    assert generated_music.key_name(6, "minor") == "F# minor"
    assert generated_music.key_name(10, "major") == "Bb major"
    for kind in generated_music.GENERATED_KINDS:
        arrangement = generated_music.generate_arrangement(np.random.default_rng(0), 5.0, kind=kind, fit=False)
        assert arrangement.notes and arrangement.seconds >= 5.0  # covers the target, to be cut
        assert all(0 <= n.pitch <= 127 for n in arrangement.notes)


def test_synth_clip_shapes_and_determinism():
    audio, meta = synthetic.synth_clip(np.random.default_rng(7), 1.5, SR)
    assert audio.shape == (int(round(1.5 * SR)), 2) and audio.dtype == np.float32
    assert np.max(np.abs(audio)) <= 1.0 and np.max(np.abs(audio)) > 0.5
    assert not np.array_equal(audio[:, 0], audio[:, 1])
    assert isinstance(meta["caption"], str) and meta["caption"]
    again, meta_again = synthetic.synth_clip(np.random.default_rng(7), 1.5, SR)
    np.testing.assert_array_equal(audio, again)
    assert meta == meta_again
    other, _ = synthetic.synth_clip(np.random.default_rng(8), 1.5, SR)
    assert not np.array_equal(audio, other)


def test_write_synthetic_dataset_layout(tmp_path):
    summary = synthetic.write_synthetic_dataset(tmp_path / "syn", 8, seed=0, min_seconds=0.5, max_seconds=1.5)
    rows = _read_manifests(str(tmp_path / "syn"))
    assert len(rows) == 8 and summary["num_clips"] == 8
    assert sum(r["split"] == "valid" for r in rows) == summary["splits"]["valid"]
    for row in rows:
        info = sf.info(str(tmp_path / "syn" / row["path"]))
        assert info.samplerate == SR and info.channels == 2 and info.subtype == "PCM_24"
        assert 0.5 - 1e-3 <= info.duration <= 1.5 + 1e-3
        assert row["caption"]


def test_cli_synthetic(tmp_path):
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(repo_root, "data", "render_demo.py")
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, script, f"--output_dir={out}", "--num_clips=2", "--synthetic", "--max_seconds=1.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(_read_manifests(str(out))) == 2
