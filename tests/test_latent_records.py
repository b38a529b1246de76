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
