"""Grain pipeline: shapes, conversion, padding, timing values, determinism, checkpoints, sharding."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import soxr

from stable_audio_jax.input_pipeline import audio_io, grain_pipeline, records, shard_writer

SR = 44100
WINDOW = SR  # 1 s crops keep the tests fast
LONG_SAMPLES = int(3.5 * SR)  # seconds_total = ceil(3.5) = 4
MONO_SAMPLES = int(0.75 * 22050)  # 16537 at 22.05 kHz -> 33074 at 44.1 kHz
SHORT_SAMPLES = SR // 10
NUM_EXTRA = 3


def _noise(num_samples: int, channels: int, seed: int) -> np.ndarray:
    ints = np.random.default_rng(seed).integers(-8000, 8000, size=(num_samples, channels))
    return (ints / 32768.0).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Shards with a long index-ramp file, a mono 22.05 kHz file, a 0.1 s file and a few others.

    The long file's left channel holds `sample_index / 2**23` in 24-bit PCM, so the crop offset
    of any example can be read back exactly from its first sample.
    """
    root = tmp_path_factory.mktemp("audio")
    ramp = np.arange(LONG_SAMPLES, dtype=np.float64) / 2**23
    sf.write(root / "long.wav", np.stack([ramp, -ramp], axis=1), SR, subtype="PCM_24")
    (root / "long.txt").write_text("long")
    mono = _noise(MONO_SAMPLES, 1, seed=0)
    sf.write(root / "mono.wav", mono, 22050, subtype="PCM_16")
    (root / "mono.txt").write_text("mono")
    short = _noise(SHORT_SAMPLES, 2, seed=1)
    sf.write(root / "short.wav", short, SR, subtype="PCM_16")
    (root / "short.txt").write_text("short")
    for i in range(NUM_EXTRA):
        sf.write(root / f"extra{i}.wav", _noise(SR // 2, 2, seed=10 + i), SR, subtype="PCM_16")
        (root / f"extra{i}.txt").write_text(f"extra{i}")
    out = tmp_path_factory.mktemp("shards")
    report = shard_writer.write_shards(root, out, num_shards=2, progress=False)
    assert report["written"] == 3 + NUM_EXTRA
    return {"shards": records.list_shards(out), "mono": mono, "short": short}


def _make(shards, **overrides):
    kwargs = dict(sample_rate=SR, sample_size=WINDOW, batch_size=2, seed=0, shard_index=0, shard_count=1)
    kwargs.update(overrides)
    return grain_pipeline.make_audio_dataset(shards, **kwargs)


def _unbatch(batches) -> list[dict]:
    return [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["caption"]))]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_shapes_and_dtypes(dataset):
    it = iter(_make(dataset["shards"], batch_size=4))  # default num_epochs=None: repeats forever
    for _ in range(3):
        batch = next(it)
        assert batch["audio"].shape == (4, WINDOW, 2) and batch["audio"].dtype == np.float32
        assert batch["padding_mask"].shape == (4, WINDOW) and batch["padding_mask"].dtype == np.bool_
        for key in ("seconds_start", "seconds_total"):
            assert batch[key].shape == (4,) and batch[key].dtype == np.float32
        assert batch["caption"].shape == (4,) and batch["caption"].dtype.kind == "U"


def test_conversion_padding_and_timing_from_start(dataset):
    batches = list(_make(dataset["shards"], batch_size=1, num_epochs=1, shuffle=False, random_crop=False))
    examples = {str(e["caption"]): e for e in _unbatch(batches)}
    assert len(examples) == 3 + NUM_EXTRA

    # Mono 22.05 kHz: duplicated to stereo, resampled to the model rate, padded, masked.
    mono = examples["mono"]
    expected_len = audio_io.resampled_length(MONO_SAMPLES, 22050, SR)
    assert expected_len == 33074
    assert mono["padding_mask"].sum() == expected_len and mono["padding_mask"][:expected_len].all()
    np.testing.assert_array_equal(mono["audio"][:, 0], mono["audio"][:, 1])
    reference = soxr.resample(dataset["mono"], 22050, SR, quality="HQ")[:, 0]
    np.testing.assert_allclose(mono["audio"][:expected_len, 0], reference, atol=1e-5)
    assert not mono["audio"][expected_len:].any()
    assert (mono["seconds_start"], mono["seconds_total"]) == (0.0, 1.0)

    # 0.1 s file: zero-padded at the end.
    short = examples["short"]
    assert short["padding_mask"].sum() == SHORT_SAMPLES
    np.testing.assert_array_equal(short["audio"][:SHORT_SAMPLES], dataset["short"])
    assert not short["audio"][SHORT_SAMPLES:].any()
    assert (short["seconds_start"], short["seconds_total"]) == (0.0, 1.0)

    # Long file cropped from the start: seconds_total describes the whole 3.5 s file.
    long = examples["long"]
    assert long["padding_mask"].all()
    np.testing.assert_array_equal(long["audio"][:, 0] * 2**23, np.arange(WINDOW))
    assert (long["seconds_start"], long["seconds_total"]) == (0.0, 4.0)


def test_random_crop_timing(dataset):
    it = iter(_make(dataset["shards"], batch_size=3, seed=3))
    starts = set()
    for example in _unbatch([next(it) for _ in range(24)]):
        if example["caption"] != "long":
            continue
        offset = int(round(float(example["audio"][0, 0]) * 2**23))
        assert 0 <= offset <= LONG_SAMPLES - WINDOW
        np.testing.assert_array_equal(example["audio"][:, 0] * 2**23, np.arange(offset, offset + WINDOW))
        assert example["seconds_start"] == offset // SR
        assert example["seconds_total"] == 4.0
        starts.add(int(example["seconds_start"]))
    assert len(starts) >= 2  # 12 crops over offsets [0, 110250] cover several seconds


def test_region_decode_matches_full_resample():
    rng = np.random.default_rng(0)
    for sr_in in (22050, 48000, 16000):
        audio = (0.2 * rng.standard_normal((sr_in * 2, 2))).astype(np.float32)
        flac = audio_io.encode_flac(audio, sr_in, subtype="PCM_24")
        decoded, _ = audio_io.decode_audio(flac)
        full = audio_io.resample(decoded, sr_in, SR)
        assert full.shape[0] == audio_io.resampled_length(decoded.shape[0], sr_in, SR)
        info = audio_io.audio_info(flac)
        for start in (0, 12345, full.shape[0] - 1000):
            region = audio_io.decode_region_resampled(flac, info, SR, start, start + 4000)
            expected = full[start : start + 4000]
            assert region.shape == expected.shape
            np.testing.assert_allclose(region, expected, atol=1e-5)


def test_stereo_forcing():
    mono = np.ones((5, 1), np.float32)
    assert audio_io.to_stereo(mono).shape == (5, 2)
    multi = np.arange(20, dtype=np.float32).reshape(5, 4)
    np.testing.assert_array_equal(audio_io.to_stereo(multi), multi[:, :2])


def test_deterministic_given_seed(dataset):
    def first(seed, n=4):
        it = iter(_make(dataset["shards"], seed=seed))
        return [next(it) for _ in range(n)]

    _assert_batches_equal(first(7), first(7))
    a, b = first(7), first(8)
    assert any(not np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, b))


@pytest.mark.parametrize("worker_count", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_iterator_state_restore(dataset, worker_count):
    it = iter(_make(dataset["shards"], seed=1, worker_count=worker_count))
    for _ in range(3):
        next(it)
    state = it.get_state()
    json.dumps(state)  # checkpointable as JSON
    expected = [next(it) for _ in range(3)]
    restored = iter(_make(dataset["shards"], seed=1, worker_count=worker_count))
    restored.set_state(state)
    _assert_batches_equal([next(restored) for _ in range(3)], expected)
    for iterator in (it, restored):
        if hasattr(iterator, "close"):
            iterator.close()


def test_orbax_checkpoint_roundtrip(dataset, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    it = iter(_make(dataset["shards"], seed=2))
    next(it)
    with ocp.CheckpointManager(
        tmp_path / "ckpt", item_names=("data",), item_handlers={"data": grain.checkpoint.CheckpointHandler()}
    ) as mngr:
        mngr.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
        expected = [next(it) for _ in range(2)]
        restored = iter(_make(dataset["shards"], seed=2))
        mngr.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    _assert_batches_equal([next(restored) for _ in range(2)], expected)


def test_process_sharding_is_disjoint(dataset):
    seen = []
    for index in range(2):
        ds = _make(dataset["shards"], batch_size=1, num_epochs=1, shard_index=index, shard_count=2)
        seen.append([str(e["caption"]) for e in _unbatch(list(ds))])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(["long", "mono", "short"] + [f"extra{i}" for i in range(NUM_EXTRA)])
    assert len(seen[0]) == len(seen[1]) == 3


def test_bad_records_are_skipped(dataset, caplog):
    good = grain_pipeline.as_data_source(dataset["shards"])
    flac, meta = records.decode_record(good[0])
    source = [
        good[0],
        b"not a record",
        records.encode_record(b"not flac either", meta),
        good[1],
    ]
    with caplog.at_level(logging.WARNING):
        batches = list(_make(source, batch_size=1, num_epochs=1, shuffle=False))
    assert len(batches) == 2
    assert sum("failed to decode" in r.getMessage() for r in caplog.records) == 2
