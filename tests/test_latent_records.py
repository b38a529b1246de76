"""Pre-encoded latent records: round trip, validation, and decoding from many threads at once."""

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stable_audio_jax.input_pipeline import latent_records


def _record(seed: int = 0) -> tuple[dict, dict, bytes]:
    rng = np.random.default_rng(seed)
    arrays = {
        "latent_mean": rng.standard_normal((16, 4)).astype(np.float32),
        "latent_std": rng.random((16, 4)).astype(np.float32),
        "latent_mask": np.arange(16) < 10,
        "text_features": rng.standard_normal((5, 8)).astype(np.float16),
        "text_mask": np.arange(5) < 3,
    }
    metadata = {"caption": "solo piano", "seconds_start": 0, "seconds_total": 7, "id": "00000001"}
    return arrays, metadata, latent_records.encode_latent_record(arrays, metadata)


def test_round_trip():
    arrays, metadata, record = _record()
    decoded, meta = latent_records.decode_latent_record(record)
    assert meta == metadata
    for key, value in arrays.items():
        assert decoded[key].dtype == value.dtype
        np.testing.assert_array_equal(decoded[key], value)


def test_rejects_foreign_bytes_and_missing_keys():
    with pytest.raises(ValueError, match="magic"):
        latent_records.decode_latent_record(b"fLaC" + bytes(100))
    arrays, metadata, _ = _record()
    del arrays["latent_std"]
    with pytest.raises(ValueError, match="latent_std"):
        latent_records.encode_latent_record(arrays, metadata)


def test_concurrent_decoding():
    # Grain decodes on threads; np.load's header parsing raced on CPython 3.11 and killed a
    # training run mid-way ("AST constructor recursion depth mismatch").
    records = [_record(seed)[2] for seed in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to provoke the race
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(latent_records.decode_latent_record, records * 1000))
    finally:
        sys.setswitchinterval(interval)
    assert len(results) == 8000
    expected = latent_records.decode_latent_record(records[3])[0]["latent_mean"]
    np.testing.assert_array_equal(results[3][0]["latent_mean"], expected)


class CountingSource:
    """A random-access record source that counts its reads."""

    def __init__(self, items):
        self.items, self.reads = items, [0] * len(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        self.reads[index] += 1
        return self.items[index]


def test_in_memory_record_cache_reads_each_record_once_within_its_budget():
    """The cache serves repeated reads from memory until the byte budget is spent, then reads
    through; a pickled copy (a Grain worker) starts empty; the same batches either way."""
    import pickle

    from stable_audio_jax.input_pipeline import records
    from stable_audio_jax.input_pipeline.grain_pipeline import make_latent_dataset

    items = [_record(seed)[2] for seed in range(6)]
    source = CountingSource(items)
    cache = records.InMemoryRecordCache(source, max_bytes=sum(len(r) for r in items[:4]))
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert list(pool.map(cache.__getitem__, range(6))) == items
    # Up to the budget each record is read once (a thread may race another to the first read).
    assert all(1 <= n <= 4 for n in source.reads[:4]) and source.reads[4:] == [5, 5]
    assert cache.cached_bytes == sum(len(r) for r in items[:4])
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.cached_bytes == 0 and len(copy) == 6 and copy[np.int64(2)] == items[2]
    with pytest.raises(ValueError, match="max_bytes"):
        records.InMemoryRecordCache(source, -1)

    def batches(cache_bytes):
        it = iter(make_latent_dataset(CountingSource(items), batch_size=2, seed=3, cache_bytes=cache_bytes))
        return [next(it) for _ in range(9)]  # three epochs

    for cached, plain in zip(batches(1 << 20), batches(0)):
        for key in ("latent_mean", "latent_std", "text_features"):
            np.testing.assert_array_equal(cached[key], plain[key])
