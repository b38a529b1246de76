"""Audio folder / manifest -> ArrayRecord shards and tfds records, including bad inputs."""

from __future__ import annotations

import csv
import json
import os

import grain
import numpy as np
import pytest
import soundfile as sf

from stable_audio_jax.input_pipeline import audio_io, grain_pipeline, records, shard_writer

SR = 44100


def _noise(num_samples: int, channels: int, seed: int) -> np.ndarray:
    """`[num_samples, channels]` float noise, exactly representable in 16-bit PCM."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-8000, 8000, size=(num_samples, channels))
    return (ints / 32768.0).astype(np.float32)


def _write(path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    sf.write(os.fspath(path), audio, sample_rate, subtype=subtype)


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """A folder with every kind of bad and awkward input; returns (folder, original audio by name)."""
    root = tmp_path_factory.mktemp("messy")
    originals = {}
    (root / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4096))  # not audio at all
    (root / "zero_bytes.wav").write_bytes(b"")
    _write(root / "no_samples.wav", np.zeros((0, 2), np.float32), SR)  # valid header, 0 frames
    _write(root / "silent.wav", np.zeros((SR // 2, 2), np.float32), SR)
    originals["mono22k"] = _noise(int(1.5 * 22050), 1, seed=1)
    _write(root / "mono22k.wav", originals["mono22k"], 22050)
    (root / "mono22k.txt").write_text("a mono clip\n")
    originals["short"] = _noise(SR // 10, 2, seed=2)  # 0.1 s and no caption sidecar
    _write(root / "short.wav", originals["short"], SR)
    originals["normal1"] = _noise(2 * SR, 2, seed=3)
    _write(root / "normal1.wav", originals["normal1"], SR)
    (root / "normal1.txt").write_text("first normal clip")
    originals["normal2"] = _noise(3 * SR, 2, seed=4)
    _write(root / "normal2.flac", originals["normal2"], SR, subtype="PCM_24")
    (root / "normal2.json").write_text(json.dumps({"caption": "second normal clip", "genre": "noise", "bpm": 120}))
    (root / "notes.md").write_text("not audio, ignored")
    return root, originals


def _read_all(paths) -> dict[str, tuple[bytes, dict]]:
    source = grain.sources.ArrayRecordDataSource(paths)
    out = {}
    for i in range(len(source)):
        flac, meta = records.decode_record(source[i])
        out[meta["id"]] = (flac, meta)
    return out


def test_messy_folder_report_and_records(messy_folder, tmp_path):
    root, originals = messy_folder
    out_dir = tmp_path / "shards"
    report = shard_writer.write_shards(root, out_dir, num_shards=3, prefix="train", progress=False)

    assert report["written"] == 4
    assert report["skipped"] == {"unreadable": 1, "empty": 2, "silent": 1}
    assert report["skipped_examples"] == {
        "unreadable": ["corrupt.wav"],
        "empty": ["no_samples.wav", "zero_bytes.wav"],
        "silent": ["silent.wav"],
    }
    assert report["converted_later"] == {"mono": 1, "multichannel": 0, "resample_needed": 1, "short": 1}
    assert report["missing_caption"] == 1 and report["missing_caption_examples"] == ["short.wav"]
    assert sum(report["records_per_shard"]) == 4
    with open(out_dir / "train_report.json") as f:
        assert json.load(f) == report

    paths = records.list_shards(out_dir)
    assert [os.path.basename(p) for p in paths] == [f"train-{i:05d}-of-00003.array_record" for i in range(3)]
    by_id = _read_all(paths)
    assert sorted(by_id) == ["mono22k", "normal1", "normal2", "short"]

    flac, meta = by_id["mono22k"]
    assert meta["caption"] == "a mono clip"
    assert (meta["sample_rate"], meta["num_channels"], meta["num_samples"]) == (22050, 1, len(originals["mono22k"]))
    assert meta["source_path"] == "mono22k.wav"
    assert audio_io.audio_info(flac).subtype == "PCM_16"  # 16-bit source stays 16-bit
    assert by_id["short"][1]["caption"] == ""
    assert by_id["normal2"][1]["genre"] == "noise" and by_id["normal2"][1]["bpm"] == 120
    assert audio_io.audio_info(by_id["normal2"][0]).subtype == "PCM_24"
    for name, original in originals.items():
        decoded, sample_rate = audio_io.decode_audio(by_id[name][0])
        np.testing.assert_array_equal(decoded, original)  # lossless


def test_jsonl_manifest(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    _write(clips / "a.wav", _noise(SR // 2, 2, seed=5), SR)
    _write(clips / "b.flac", _noise(SR // 2, 1, seed=6), 48000)
    lines = [
        json.dumps({"path": "clips/a.wav", "caption": "clip a", "artist": "x"}),
        json.dumps({"path": "clips/b.flac", "caption": "clip b", "id": "custom-b"}),
        json.dumps({"path": "clips/missing.wav", "caption": "gone"}),
        "{not json",
        json.dumps({"caption": "no path"}),
        "",
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines))
    report = shard_writer.write_shards(manifest, tmp_path / "out", num_shards=2, progress=False)
    assert report["written"] == 2
    assert report["skipped"] == {"missing": 1, "bad_manifest_entry": 2}
    assert report["converted_later"]["resample_needed"] == 1 and report["converted_later"]["mono"] == 1
    by_id = _read_all(records.list_shards(tmp_path / "out"))
    assert by_id["clips/a"][1]["artist"] == "x" and by_id["clips/a"][1]["caption"] == "clip a"
    assert by_id["custom-b"][1]["sample_rate"] == 48000


def test_csv_manifest(tmp_path):
    _write(tmp_path / "a.wav", _noise(SR // 4, 2, seed=7), SR)
    _write(tmp_path / "b.wav", _noise(SR // 4, 2, seed=8), SR)
    manifest = tmp_path / "meta.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption", "mood"])
        writer.writerow(["a.wav", "comma, separated caption", "calm"])
        writer.writerow(["b.wav", "", "tense"])
    report = shard_writer.write_shards(manifest, tmp_path / "out", num_shards=1, prefix="valid", progress=False)
    assert report["written"] == 2 and report["skipped"] == {}
    assert os.path.exists(tmp_path / "out" / "valid_report.json")
    by_id = _read_all(records.list_shards(str(tmp_path / "out" / "valid-*.array_record")))
    assert by_id["a"][1]["caption"] == "comma, separated caption" and by_id["a"][1]["mood"] == "calm"
    assert by_id["b"][1]["caption"] == ""


def test_missing_input_raises(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        shard_writer.write_shards(missing, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError):
        records.list_shards(tmp_path)


def test_cli(messy_folder, tmp_path):
    from data import make_shards

    root, _ = messy_folder
    report = make_shards.main(
        [f"--input={root}", f"--output_dir={tmp_path}", "--num_shards=2", "--prefix=cli", "--no_progress"]
    )
    assert report["written"] == 4
    assert len(records.list_shards(tmp_path)) == 2


def test_record_roundtrip_and_errors():
    meta = {k: 1 for k in records.REQUIRED_METADATA} | {"caption": "ünïcode", "extra": [1, 2]}
    flac = b"\x00fLaC\xff" * 3
    assert records.decode_record(records.encode_record(flac, meta)) == (flac, meta)
    with pytest.raises(records.RecordFormatError):
        records.decode_record(b"garbage that is long enough")
    with pytest.raises(records.RecordFormatError):
        records.decode_record(records.encode_record(flac, meta)[:20])
    with pytest.raises(ValueError, match="required"):
        records.encode_record(flac, {"caption": "x"})


def test_shard_writer_balances_by_size(tmp_path):
    with records.ShardWriter(tmp_path, "bal", 2) as writer:
        assert [writer.write(b"x" * n) for n in (100, 10, 10, 10, 100)] == [0, 1, 1, 1, 1]
    assert writer.records_per_shard == [1, 4]


def test_tfds_builder_and_grain(messy_folder, tmp_path):
    import tensorflow_datasets as tfds

    from stable_audio_jax.input_pipeline import tfds_builder

    root, originals = messy_folder
    builder = tfds_builder.StableAudioCaptions(data_dir=str(tmp_path), input_path=str(root))
    builder.download_and_prepare()
    report = builder.reports["train"]
    assert report["written"] == 4 and report["skipped"] == {"unreadable": 1, "empty": 2, "silent": 1}

    source = builder.as_data_source()["train"]
    assert len(source) == 4
    by_id = {}
    for i in range(len(source)):
        flac, meta = records.decode_record(source[i])
        by_id[meta["id"]] = (flac, meta)
        assert source[i]["sample_rate"] == meta["sample_rate"]
    decoded, _ = audio_io.decode_audio(by_id["normal1"][0])
    np.testing.assert_array_equal(decoded, originals["normal1"])
    assert by_id["normal2"][1]["genre"] == "noise"

    # Reading by name, as a training job on another host would.
    source = tfds.data_source("stable_audio_captions", data_dir=str(tmp_path), split="train")
    ds = grain_pipeline.make_audio_dataset(
        source, sample_rate=SR, sample_size=SR, batch_size=2, num_epochs=1, shard_index=0, shard_count=1
    )
    batches = list(ds)
    assert len(batches) == 2
    assert batches[0]["audio"].shape == (2, SR, 2) and batches[0]["audio"].dtype == np.float32
    captions = sorted(c for b in batches for c in b["caption"])
    assert captions == ["", "a mono clip", "first normal clip", "second normal clip"]
