"""Tests for the VAE training losses (STFT, A-weighting, MR-STFT, adversarial) and the
multi-scale STFT discriminator."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from stable_audio_jax.losses import adversarial
from stable_audio_jax.losses.stft import STFTLossConfig, multi_resolution_stft_loss, stereo_stft_losses
from stable_audio_jax.models.discriminator import MultiScaleSTFTDiscriminator, stft_planes
from stable_audio_jax.spectral import a_weighting_fir, apply_fir, stft

SAMPLE_RATE = 44100
SMALL_FFTS = (256, 128, 64)
SMALL_HOPS = (64, 32, 16)


def _signal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Broadband test audio: a few sines plus noise, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(shape[1]) / SAMPLE_RATE
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (220.0, 1000.0, 5000.0))
    tones = tones.reshape((1, -1) + (1,) * (len(shape) - 2))
    return (0.2 * tones + 0.1 * rng.standard_normal(shape)).astype(np.float32)


def _numpy_stft(x: np.ndarray, n_fft: int, hop: int, win: int, center: bool, normalized: bool) -> np.ndarray:
    """Frame-by-frame float64 STFT: `[batch, time]` -> `[batch, frames, n_fft // 2 + 1]`."""
    window = np.hanning(win + 1)[:-1]  # periodic Hann
    left = (n_fft - win) // 2
    window = np.concatenate([np.zeros(left), window, np.zeros(n_fft - win - left)])
    x = x.astype(np.float64)
    if center:
        x = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    num_frames = 1 + (x.shape[1] - n_fft) // hop
    out = np.stack([np.fft.rfft(x[:, i * hop : i * hop + n_fft] * window, axis=-1) for i in range(num_frames)], axis=1)
    if normalized:
        out = out / np.sqrt(np.sum(window**2))
    return out


# (n_fft, hop, win): hop dividing n_fft, a window shorter than n_fft, a hop that does not
# divide n_fft.
STFT_CASES = [(2048, 512, 2048), (256, 64, 200), (128, 48, 128), (32, 8, 32)]


@pytest.mark.parametrize("center,normalized", [(True, False), (False, True)])
@pytest.mark.parametrize("n_fft,hop,win", STFT_CASES)
def test_stft_matches_numpy(n_fft, hop, win, center, normalized):
    x = _signal((3, 4096))
    got = np.asarray(stft(jnp.asarray(x), n_fft, hop, win, center=center, normalized=normalized))
    want = _numpy_stft(x, n_fft, hop, win, center, normalized)
    assert got.dtype == np.complex64
    assert got.shape == want.shape
    frames = 1 + 4096 // hop if center else 1 + (4096 - n_fft) // hop
    assert got.shape == (3, frames, n_fft // 2 + 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_apply_fir_matches_numpy():
    taps = np.random.default_rng(1).standard_normal(11).astype(np.float32)  # asymmetric on purpose
    x = _signal((2, 1000, 3))
    got = np.asarray(apply_fir(jnp.asarray(x), taps))
    padded = np.pad(x.astype(np.float64), ((0, 0), (5, 5), (0, 0)))
    want = np.stack(
        [[np.correlate(padded[b, :, c], taps, mode="valid") for c in range(3)] for b in range(2)], axis=0
    ).transpose(0, 2, 1)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def _analog_a_weighting_db(f: np.ndarray) -> np.ndarray:
    """IEC 61672 A-weighting in dB, from the closed-form magnitude formula."""
    f2 = np.square(f)
    r = (12194.0**2 * f2**2) / ((f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2))
    return 20 * np.log10(r) + 2.0


def test_a_weighting_fir_response():
    taps = a_weighting_fir(SAMPLE_RATE, 101)
    assert taps.shape == (101,) and taps.dtype == np.float32
    np.testing.assert_array_equal(taps, taps[::-1])  # linear phase
    assert a_weighting_fir(SAMPLE_RATE, 101) is taps  # cached

    def response_db(freqs):
        _, h = scipy.signal.freqz(taps.astype(np.float64), worN=np.asarray(freqs, float), fs=SAMPLE_RATE)
        return 20 * np.log10(np.abs(h))

    assert abs(response_db([1000.0])[0]) < 0.5
    # A 101-tap FIR cannot follow the curve's steep low end (-30 dB at 50 Hz): the
    # reference filter reaches about -19 dB there.
    assert response_db([50.0])[0] < -15.0
    band = np.geomspace(200.0, 10000.0, 40)
    np.testing.assert_allclose(response_db(band), _analog_a_weighting_db(band), atol=2.0)


@pytest.mark.parametrize("perceptual", [False, True])
def test_mrstft_zero_for_identical_and_grows_with_noise(perceptual):
    kwargs = dict(fft_sizes=SMALL_FFTS, hop_sizes=SMALL_HOPS, perceptual_weighting=perceptual, sample_rate=SAMPLE_RATE)
    loss = jax.jit(lambda p, t: multi_resolution_stft_loss(p, t, **kwargs))
    target = _signal((2, 4096))
    noise = np.random.default_rng(2).standard_normal(target.shape).astype(np.float32)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    values = [float(loss(target + level * noise, target)) for level in (1e-3, 1e-2, 1e-1, 1.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] > 0


@pytest.mark.parametrize("convergence_over", ["signal", "batch"])
def test_mrstft_matches_numpy_definition(convergence_over):
    """Spectral convergence (normalised by the target) per signal or over the batch + log-magnitude L1."""
    target = _signal((2, 2048), seed=3)
    pred = _signal((2, 2048), seed=4)
    got = multi_resolution_stft_loss(
        jnp.asarray(pred),
        jnp.asarray(target),
        fft_sizes=SMALL_FFTS,
        hop_sizes=SMALL_HOPS,
        perceptual_weighting=False,
        sample_rate=SAMPLE_RATE,
        convergence_over=convergence_over,
    )
    per_resolution = []
    for n_fft, hop in zip(SMALL_FFTS, SMALL_HOPS):
        x = np.sqrt(np.maximum(np.abs(_numpy_stft(pred, n_fft, hop, n_fft, True, False)) ** 2, 1e-8))
        y = np.sqrt(np.maximum(np.abs(_numpy_stft(target, n_fft, hop, n_fft, True, False)) ** 2, 1e-8))
        if convergence_over == "signal":
            convergence = np.mean([np.linalg.norm(y[b] - x[b]) / np.linalg.norm(y[b]) for b in range(2)])
        else:
            convergence = np.linalg.norm(y - x) / np.linalg.norm(y)
        per_resolution.append(convergence + np.mean(np.abs(np.log(x) - np.log(y))))
    np.testing.assert_allclose(float(got), np.mean(per_resolution), rtol=1e-5)


def test_batch_convergence_is_robust_to_a_silent_target():
    """One digitally silent crop in a batch: the per-signal ratio explodes, the batch one does not."""
    target = _signal((4, 2048), seed=5)
    target[1] = 0.0
    pred = target + 0.05 * _signal((4, 2048), seed=6)
    loss = lambda mode: float(
        multi_resolution_stft_loss(
            jnp.asarray(pred),
            jnp.asarray(target),
            fft_sizes=SMALL_FFTS,
            hop_sizes=SMALL_HOPS,
            perceptual_weighting=False,
            sample_rate=SAMPLE_RATE,
            convergence_over=mode,
        )
    )
    clean = float(
        multi_resolution_stft_loss(
            jnp.asarray(pred[[0, 2, 3]]),
            jnp.asarray(target[[0, 2, 3]]),
            fft_sizes=SMALL_FFTS,
            hop_sizes=SMALL_HOPS,
            perceptual_weighting=False,
            sample_rate=SAMPLE_RATE,
        )
    )
    # Per signal, the silent crop's ratio is ~1e3: the loss jumps by orders of magnitude
    # (247 vs 0.09 here). Over the batch only its bounded log-magnitude term remains.
    assert loss("signal") > 100 * clean
    assert loss("batch") < 0.05 * loss("signal")


def test_mrstft_gradients_finite_including_silence():
    target = jnp.asarray(_signal((2, 2048)))
    grad_fn = jax.jit(
        jax.grad(
            lambda p, t: multi_resolution_stft_loss(
                p, t, fft_sizes=SMALL_FFTS, hop_sizes=SMALL_HOPS, perceptual_weighting=True, sample_rate=SAMPLE_RATE
            )
        )
    )
    for pred in (target * 0.5, jnp.zeros_like(target)):
        grad = grad_fn(pred, target)
        assert bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.max(jnp.abs(grad_fn(target * 0.5, target)))) > 0


@pytest.mark.parametrize("perceptual,weights", [(True, (1.0, 0.5)), (False, (2.0, 0.25))])
def test_stereo_loss_combines_mono_losses(perceptual, weights):
    config = STFTLossConfig(
        fft_sizes=list(SMALL_FFTS),
        hop_sizes=list(SMALL_HOPS),
        perceptual_weighting=perceptual,
        sum_diff_weight=weights[0],
        left_right_weight=weights[1],
    )
    pred = jnp.asarray(_signal((2, 2048, 2), seed=5))
    target = jnp.asarray(_signal((2, 2048, 2), seed=6))
    losses = jax.jit(stereo_stft_losses, static_argnums=2)(pred, target, config)

    def mono(p, t):
        return float(multi_resolution_stft_loss(p, t, **config.mrstft_kwargs()))

    sum_loss = mono(pred[..., 0] + pred[..., 1], target[..., 0] + target[..., 1])
    diff_loss = mono(pred[..., 0] - pred[..., 1], target[..., 0] - target[..., 1])
    left = mono(pred[..., 0], target[..., 0])
    right = mono(pred[..., 1], target[..., 1])
    assert set(losses) == {"mrstft_sum_diff", "mrstft_left", "mrstft_right", "spectral"}
    np.testing.assert_allclose(float(losses["mrstft_sum_diff"]), (sum_loss + diff_loss) / 2, rtol=1e-4)
    np.testing.assert_allclose(float(losses["mrstft_left"]), left, rtol=1e-4)
    np.testing.assert_allclose(float(losses["mrstft_right"]), right, rtol=1e-4)
    expected = weights[0] * (sum_loss + diff_loss) / 2 + weights[1] * (left + right)
    np.testing.assert_allclose(float(losses["spectral"]), expected, rtol=1e-4)


def test_stft_loss_config_defaults_and_hashing():
    config = STFTLossConfig()
    assert config.fft_sizes == (2048, 1024, 512, 256, 128, 64, 32)
    assert config.hop_sizes == tuple(n // 4 for n in config.fft_sizes)
    assert config.win_lengths == config.fft_sizes
    assert config.perceptual_weighting and config.sample_rate == 44100
    assert (config.sum_diff_weight, config.left_right_weight) == (1.0, 0.5)
    assert hash(STFTLossConfig(fft_sizes=[64], hop_sizes=[16])) == hash(
        STFTLossConfig(fft_sizes=(64,), hop_sizes=(16,))
    )
    with pytest.raises(ValueError):
        STFTLossConfig(fft_sizes=(64, 32), hop_sizes=(16,))


def test_stft_planes_layout():
    audio = _signal((2, 1024, 2))
    audio[..., 1] = 0.0
    planes = np.asarray(stft_planes(jnp.asarray(audio), 256, 64, 256))
    assert planes.shape == (2, 1 + (1024 - 256) // 64, 129, 4)
    spec = _numpy_stft(audio[..., 0], 256, 64, 256, center=False, normalized=True)
    scale = np.abs(spec).max()
    np.testing.assert_allclose(planes[..., 0], spec.real, atol=1e-5 * scale)
    np.testing.assert_allclose(planes[..., 2], spec.imag, atol=1e-5 * scale)
    np.testing.assert_array_equal(planes[..., 1], 0.0)
    np.testing.assert_array_equal(planes[..., 3], 0.0)


def _strided_bins(bins: int, stride: int, times: int) -> int:
    for _ in range(times):  # kernel 9, padding 4: out = floor((bins - 1) / stride) + 1
        bins = (bins - 1) // stride + 1
    return bins


@pytest.mark.parametrize("freq_stride", [2, 1])
def test_discriminator_shapes_and_parameter_count(freq_stride):
    # Reference scales; shapes only (eval_shape), so no compilation is needed.
    filters, time = 4, 4096
    disc = MultiScaleSTFTDiscriminator(filters=filters, freq_stride=freq_stride)
    audio = jax.ShapeDtypeStruct((2, time, 2), jnp.float32)
    variables = jax.eval_shape(disc.init, jax.random.key(0), audio)
    logits, features = jax.eval_shape(disc.apply, variables, audio)

    assert len(logits) == len(features) == 5
    for s, (n_fft, hop) in enumerate(zip(disc.n_ffts, disc.hop_lengths)):
        frames, bins = 1 + (time - n_fft) // hop, n_fft // 2 + 1
        out_bins = _strided_bins(bins, freq_stride, 3)
        assert logits[s].shape == (2, frames, out_bins, 1)
        assert len(features[s]) == 5  # first conv + 3 dilated convs + (3, 3) conv
        expected_bins = [bins] + [_strided_bins(bins, freq_stride, k) for k in (1, 2, 3)] + [out_bins]
        assert [f.shape for f in features[s]] == [(2, frames, b, filters) for b in expected_bins]

    # Weight-normed convs: (v, g, bias) per conv; 4 input planes for stereo.
    def conv_params(kernel, cin, cout):
        return math.prod(kernel) * cin * cout + 2 * cout

    per_scale = (
        conv_params((3, 9), 4, filters)
        + 3 * conv_params((3, 9), filters, filters)
        + conv_params((3, 3), filters, filters)
        + conv_params((3, 3), filters, 1)
    )
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(variables["params"]))
    assert sum(x.size for x in leaves) == 5 * per_scale


def test_discriminator_losses_gradients_finite():
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(256, 128), hop_lengths=(64, 32), win_lengths=(256, 128))
    real = jnp.asarray(_signal((2, 1024, 2), seed=7))
    fake = jnp.asarray(_signal((2, 1024, 2), seed=8))
    params = jax.jit(disc.init)(jax.random.key(0), real)["params"]

    def losses(params, real, fake):
        logits_real, features_real = disc.apply({"params": params}, real)
        logits_fake, features_fake = disc.apply({"params": params}, fake)
        return (
            adversarial.hinge_discriminator_loss(logits_real, logits_fake)
            + adversarial.hinge_generator_loss(logits_fake)
            + adversarial.feature_matching_loss(features_real, features_fake)
        )

    value, (grad_params, grad_fake) = jax.jit(jax.value_and_grad(losses, argnums=(0, 2)))(params, real, fake)
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grad_params))
    assert bool(jnp.all(jnp.isfinite(grad_fake))) and float(jnp.max(jnp.abs(grad_fake))) > 0


def test_hinge_losses_hand_computed():
    logits_real = [jnp.array([2.0, 0.5, -1.0]), jnp.array([[0.0]])]
    logits_fake = [jnp.array([-2.0, 0.5, 1.0]), jnp.array([[3.0]])]
    # Scale 0: relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1.5, 2].
    # Scale 1: relu(1 - 0) = 1, relu(1 + 3) = 4.
    scale0 = (0 + 0.5 + 2) / 3 + (0 + 1.5 + 2) / 3
    scale1 = 1.0 + 4.0
    np.testing.assert_allclose(
        float(adversarial.hinge_discriminator_loss(logits_real, logits_fake)), (scale0 + scale1) / 2, rtol=1e-6
    )
    generator = (-(-2.0 + 0.5 + 1.0) / 3 - 3.0) / 2
    np.testing.assert_allclose(float(adversarial.hinge_generator_loss(logits_fake)), generator, rtol=1e-6)
    # Low-precision logits are reduced in float32.
    assert adversarial.hinge_generator_loss([x.astype(jnp.bfloat16) for x in logits_fake]).dtype == jnp.float32


def test_feature_matching_hand_computed_and_zero_for_identical():
    real = [[jnp.zeros((2, 3)), jnp.ones((4,))], [jnp.full((1, 2), 2.0)]]
    fake = [[jnp.ones((2, 3)), jnp.full((4,), 4.0)], [jnp.full((1, 2), -2.0)]]
    # Scale 0: layer distances 1 and 3 -> 2; scale 1: 4. Mean over scales: 3.
    np.testing.assert_allclose(float(adversarial.feature_matching_loss(real, fake)), (2.0 + 4.0) / 2)
    assert float(adversarial.feature_matching_loss(real, real)) == 0.0
    with pytest.raises(ValueError):
        adversarial.feature_matching_loss(real, fake[:1])
