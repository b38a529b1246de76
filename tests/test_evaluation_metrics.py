"""The metric math of the evaluation suite: Frechet distance and the label KL, against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from stable_audio_jax.metrics.frechet import GaussianStatistics, frechet_distance
from stable_audio_jax.metrics.label_divergence import clip_distribution, kl_divergence


def _scipy_frechet(a: GaussianStatistics, b: GaussianStatistics) -> float:
    """The usual float64 NumPy/SciPy formula (sqrtm of the product, real part)."""
    covmean = linalg.sqrtm(a.covariance @ b.covariance)
    covmean = np.real(covmean)
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.covariance) + np.trace(b.covariance) - 2 * np.trace(covmean))


def _random_statistics(rng, n: int, d: int, shift: float = 0.0) -> GaussianStatistics:
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return GaussianStatistics.of(rng.normal(size=(n, d)) @ mixing + shift)


@pytest.mark.parametrize("n, d", [(400, 16), (2000, 64)])
def test_frechet_distance_equals_the_scipy_formula(n, d):
    rng = np.random.default_rng(d)
    a, b = _random_statistics(rng, n, d), _random_statistics(rng, n, d, shift=0.3)
    want = _scipy_frechet(a, b)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(want, rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    a = _random_statistics(rng, 300, 32)
    assert abs(frechet_distance(a, a)) < 1e-9 * np.trace(a.covariance)
    # Fewer samples than dimensions: a singular covariance. Its zero eigenvalues come back as
    # square roots of round-off (~1e-8 each), so "zero" is relative to the trace at 1e-6.
    small = _random_statistics(rng, 10, 32)
    assert abs(frechet_distance(small, small)) < 1e-6 * np.trace(small.covariance)


def test_frechet_distance_follows_the_closed_forms():
    d = 8
    base = GaussianStatistics(np.zeros(d), np.eye(d), 100)
    for delta in (0.0, 0.5, 2.0):  # same covariance: FD is the squared mean shift
        shifted = GaussianStatistics(np.full(d, delta), np.eye(d), 100)
        assert frechet_distance(base, shifted) == pytest.approx(d * delta**2, abs=1e-12)
    for c in (0.5, 2.0, 3.0):  # N(0, I) vs N(0, c^2 I): d (1 - c)^2
        scaled = GaussianStatistics(np.zeros(d), c**2 * np.eye(d), 100)
        assert frechet_distance(base, scaled) == pytest.approx(d * (1 - c) ** 2, rel=1e-12)
    with pytest.raises(ValueError, match="different embedders"):
        frechet_distance(base, GaussianStatistics(np.zeros(d + 1), np.eye(d + 1), 100))


def test_statistics_round_trip_and_need_two_samples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    stats = GaussianStatistics.of(x)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False))
    again = GaussianStatistics.from_arrays(stats.to_arrays())
    assert again.count == 50 and frechet_distance(stats, again) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        GaussianStatistics.of(x[:1])


def test_kl_divergence_is_the_direct_formula():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(527), size=5)
    q = rng.dirichlet(np.ones(527), size=5)
    want = np.array([sum(pi * (np.log(pi) - np.log(qi + 1e-6)) for pi, qi in zip(pr, qr)) for pr, qr in zip(p, q)])
    np.testing.assert_allclose(kl_divergence(p, q), want, rtol=1e-12)
    assert np.all(kl_divergence(p, q) > 0)
    assert np.all(np.abs(kl_divergence(p, p)) < 1e-3)  # only the 1e-6 guard separates them
    # A zero-probability label adds nothing (x log x -> 0), however small the reference is there.
    sparse = np.array([[0.5, 0.5, 0.0]])
    assert kl_divergence(sparse, np.array([[0.5, 0.5, 0.0]]))[0] == pytest.approx(
        np.log(0.5) - np.log(0.5 + 1e-6), rel=1e-9
    )


def test_clip_distribution_softmaxes_the_pooled_logits():
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    np.testing.assert_allclose(clip_distribution(logits, "mean"), np.full(3, 1 / 3))
    top = clip_distribution(logits, "max")
    np.testing.assert_allclose(top, np.exp([2, 1, 2]) / np.exp([2, 1, 2]).sum())
    with pytest.raises(ValueError, match="collect"):
        clip_distribution(logits, "median")


def test_si_sdr_is_the_snr_of_the_scaled_target():
    from stable_audio_jax.metrics.reconstruction import si_sdr

    rng = np.random.default_rng(3)
    clean = rng.normal(size=(48000, 2))
    noise = rng.normal(size=(48000, 2))
    noise -= clean * (np.sum(noise * clean, axis=0) / np.sum(clean * clean, axis=0))  # orthogonal to the clean
    noise *= np.sqrt(np.sum(clean**2, axis=0) / np.sum(noise**2, axis=0)) * 10 ** (-20 / 20)  # 20 dB below
    assert si_sdr(clean, clean + noise) == pytest.approx(20.0, abs=1e-9)
    assert si_sdr(clean, 0.3 * (clean + noise)) == pytest.approx(20.0, abs=1e-9)  # scale-invariant
    assert si_sdr(clean, clean) > 150


def test_mel_distance_and_levels_where_the_input_is_empty():
    from scipy import signal

    from stable_audio_jax.metrics.reconstruction import empty_band_output_db, mel_distance, silent_frame_output_db

    rate = 16000
    rng = np.random.default_rng(4)
    music = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    original = np.concatenate([music, np.zeros(rate)])[:, None].repeat(2, axis=1)
    hiss = rng.normal(size=original.shape) * 10 ** (-40 / 20)  # RMS -40 dBFS
    assert mel_distance(original, original, rate) == 0.0
    assert mel_distance(original, original + hiss, rate) > 0.1
    assert silent_frame_output_db(original, original + hiss, rate) == pytest.approx(-40.0, abs=0.3)
    assert silent_frame_output_db(original + hiss, original + hiss, rate) is None  # nothing silent
    # Band-limited input (nothing above 2 kHz) and a reconstruction with broadband hiss there.
    sos = signal.butter(12, 2000, fs=rate, output="sos")
    limited = signal.sosfilt(sos, rng.normal(size=2 * rate) * 0.3)[:, None].repeat(2, axis=1)
    clean_level = empty_band_output_db(limited, limited)
    hiss_level = empty_band_output_db(limited, limited + hiss)
    assert clean_level is not None and hiss_level > clean_level + 20
