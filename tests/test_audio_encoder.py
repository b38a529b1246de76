"""The CLAP audio tower: log-mel front end (vs librosa) and the HTSAT Swin encoder."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from stable_audio_jax.models import htsat
from stable_audio_jax.models.htsat import HTSATConfig, HTSATEncoder, SwinBlock
from stable_audio_jax.models.mel import log_mel_spectrogram

# ---- mel front end ---------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate,hop,win,n_mels", [(48000, 480, 1024, 64), (44100, 441, 800, 32)])
def test_log_mel_matches_librosa(sample_rate, hop, win, n_mels):
    rng = np.random.default_rng(0)
    t = np.arange(sample_rate // 2) / sample_rate
    signals = np.stack(
        [0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(t.size), 0.1 * rng.standard_normal(t.size)]
    )
    params = dict(n_fft=1024, hop_length=hop, win_length=win)
    ours = np.asarray(
        log_mel_spectrogram(
            jnp.asarray(signals, jnp.float32),
            sample_rate=sample_rate,
            n_mels=n_mels,
            f_min=50.0,
            f_max=14000.0,
            **params,
        )
    )
    assert ours.shape == (2, 1 + t.size // hop, n_mels)
    for signal, mel in zip(signals, ours):
        power = librosa.feature.melspectrogram(
            y=signal,
            sr=sample_rate,
            window="hann",
            center=True,
            pad_mode="reflect",
            power=2.0,
            n_mels=n_mels,
            fmin=50.0,
            fmax=14000.0,
            **params,
        )
        ref = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).T
        # float32 vs float64: within 1e-3 dB wherever the power is within 80 dB of the peak.
        loud = ref > ref.max() - 80.0
        assert loud.mean() > 0.9
        np.testing.assert_allclose(mel[loud], ref[loud], atol=1e-3, rtol=0)


# ---- config ------------------------------------------------------------------------------


def test_config_sizes_and_round_trip():
    tiny = htsat.htsat_tiny()
    assert tiny.num_frames == 1024 and tiny.output_dim == 768 and tiny.num_samples == 1023 * 480
    assert tiny.stage_resolutions == ((64, 64), (32, 32), (16, 16), (8, 8))
    # The last stage's 8x8 grid is a single window, unshifted.
    assert tiny.stage_windows == ((8, 4), (8, 4), (8, 4), (8, 0))
    assert htsat.htsat_base().output_dim == 1024
    demo = htsat.demo()
    assert demo.sample_rate == 44100 and demo.num_samples / demo.sample_rate == pytest.approx(2.55)
    assert 1 + demo.num_samples // demo.hop_length == demo.num_frames
    for config in (tiny, demo, htsat.htsat_tiny(sample_rate=44100, hop_length=441)):
        assert HTSATConfig.from_dict(config.to_dict()) == config
    assert HTSATConfig.from_dict({"depths": [1, 1], "num_heads": [2, 4]}).depths == (1, 1)
    with pytest.raises(ValueError, match="unknown HTSAT config keys"):
        HTSATConfig.from_dict({"embed_size": 96})


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(depths=(2, 2), num_heads=(2, 4, 8)), "same length"),
        (dict(spec_size=60), "divisible by patch_size"),
        (dict(n_mels=31), "divisible by patch_size"),
        (dict(window_size=3), "not divisible by its window"),
        (dict(num_heads=(5, 4)), "not divisible by num_heads"),
        (dict(sample_rate=22050), "f_max"),
        (dict(f_min=15000.0), "f_min < f_max"),
        (dict(n_fft=256, win_length=256, n_mels=128), "mel filters are empty"),
        (dict(n_mels=1024), "exceeds"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(win_length=2048), "win_length"),
        (dict(depths=()), "at least one stage"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        htsat.demo(**overrides)


# ---- window machinery --------------------------------------------------------------------


def test_relative_position_index_matches_naive_loop():
    for w in (1, 2, 4, 7):
        naive = np.zeros((w * w, w * w), np.int64)
        for i in range(w * w):
            for j in range(w * w):
                (yi, xi), (yj, xj) = divmod(i, w), divmod(j, w)
                naive[i, j] = (yi - yj + w - 1) * (2 * w - 1) + (xi - xj + w - 1)
        index = htsat.relative_position_index(w)
        np.testing.assert_array_equal(index, naive)
        assert index.max() == (2 * w - 1) ** 2 - 1


def test_window_partition_round_trip():
    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    windows = htsat.window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 3)
    # Window 4 = example 0, window row 1, window column 1.
    np.testing.assert_array_equal(windows[4].reshape(4, 4, 3), x[0, 4:8, 4:8])
    np.testing.assert_array_equal(htsat.window_reverse(windows, 4, 8, 12), x)


def _dependency_maps(block: SwinBlock, x: jax.Array) -> np.ndarray:
    """`deps[r, c, i, j]` = sum over channels of |d out[0, r, c, :] / d x[0, i, j, :]|."""
    params = jax.jit(block.init)(jax.random.key(1), x)
    jac = jax.jit(jax.jacrev(lambda x: block.apply(params, x)[0]))(x)  # [H, W, C, 1, H, W, C]
    return np.asarray(jnp.sum(jnp.abs(jac), axis=(2, 3, 6)))


def _expected_partners(height, width, window, shift, row, col) -> np.ndarray:
    """Tokens in the same (shifted) window *and* the same region as (row, col), naively."""

    def key(i, j):
        ri, rj = (i - shift) % height, (j - shift) % width  # position after rolling by -shift
        region = lambda r, n: 0 if r < n - window else (1 if r < n - shift else 2)
        same_region = (region(ri, height), region(rj, width)) if shift else (0, 0)
        return ri // window, rj // window, same_region

    target = key(row, col)
    return np.array([[key(i, j) == target for j in range(width)] for i in range(height)])


@pytest.mark.parametrize("shift", [0, 2])
def test_shifted_window_mask_blocks_cross_region_attention(shift):
    height, width, window = 8, 8, 4
    block = SwinBlock(num_heads=2, window=window, shift=shift)
    x = jax.random.normal(jax.random.key(0), (1, height, width, 8))
    deps = _dependency_maps(block, x)
    # Every output token depends on exactly the tokens of its own (shifted) window and
    # region: the gradient is exactly zero elsewhere, non-zero inside.
    for row in range(height):
        for col in range(width):
            expected = _expected_partners(height, width, window, shift, row, col)
            np.testing.assert_array_equal(deps[row, col] > 0, expected, err_msg=f"token {(row, col)}")
    if shift:
        # Not vacuous: (0, 0) lands in the bottom-right shifted window, 16 tokens wrapped
        # from all four corners of the grid, of which only its own 2x2 region is visible;
        # (3, 5) is in a shifted window that spans no edge and sees all 16.
        assert _expected_partners(height, width, window, shift, 0, 0).sum() == 4
        assert _expected_partners(height, width, window, shift, 3, 5).sum() == 16


# ---- the encoder -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_model():
    config = htsat.demo()
    model = HTSATEncoder(config)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, config.num_samples, 2)))
    return config, model, params


def test_demo_shapes_stereo_mono_and_resized(demo_model):
    config, model, params = demo_model
    tokens = np.prod(config.stage_resolutions[-1])
    audio = 0.1 * jax.random.normal(jax.random.key(2), (2, config.num_samples, 2))
    pooled, out = jax.jit(model.apply)(params, audio)
    assert pooled.shape == (2, config.output_dim) and out.shape == (2, tokens, config.output_dim)
    assert np.all(np.isfinite(pooled)) and np.all(np.isfinite(out))
    np.testing.assert_allclose(pooled, out.mean(axis=1), atol=1e-5)
    # Mono input is the channel mean of stereo (only the front end sees the channels).
    log_mel = jax.jit(model.apply, static_argnames="method")
    np.testing.assert_allclose(
        log_mel(params, audio.mean(axis=-1), method=HTSATEncoder.log_mel),
        log_mel(params, audio, method=HTSATEncoder.log_mel),
        atol=1e-4,
    )
    # A mono 2.0 s clip: 201 mel frames, resized to the image's 256.
    short = audio[:, : 2 * config.sample_rate].mean(axis=-1)
    assert 1 + short.shape[1] // config.hop_length != config.num_frames
    assert log_mel(params, short, method=HTSATEncoder.log_mel).shape == (2, config.num_frames, config.n_mels)
    pooled_short, out_short = jax.jit(model.apply)(params, short)
    assert pooled_short.shape == pooled.shape and out_short.shape == out.shape
    assert np.all(np.isfinite(pooled_short)) and np.all(np.isfinite(out_short))


def test_every_parameter_has_logical_axes(demo_model):
    config, _, params = demo_model
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
    assert all(len(leaf.names) == leaf.value.ndim for leaf in leaves)
    assert sum(leaf.value.size for leaf in leaves) == htsat.expected_num_params(config)


def test_fusion_tower_parameters():
    """LAION-CLAP's aff_2d fusion adds the local patch conv and AFF, each with logical axes."""
    config = htsat.htsat_tiny(fusion=True, mel_scale="htk", input_norm="affine", frame_resize="bicubic")
    shapes = jax.eval_shape(HTSATEncoder(config).init, jax.random.key(0), jnp.zeros((1, config.num_samples)))
    leaves = jax.tree.leaves(shapes["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(leaf, nn.Partitioned) and len(leaf.names) == leaf.value.ndim for leaf in leaves)
    count = sum(int(np.prod(leaf.value.shape)) for leaf in leaves)
    assert count == htsat.expected_num_params(config) == 27_534_488 + 12 * 4 * 96 + 96 + 2 * (2 * 96 * 24 + 24 + 96)


def _abstract_num_params(config: HTSATConfig) -> int:
    model = HTSATEncoder(config)
    audio = jax.ShapeDtypeStruct((1, config.num_samples), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), audio)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


def test_reference_parameter_counts():
    counts = {
        name: _abstract_num_params(fn())
        for name, fn in [("htsat_tiny", htsat.htsat_tiny), ("htsat_base", htsat.htsat_base)]
    }
    print(f"\nHTSAT parameter counts (no classification head): {counts}")
    assert counts["htsat_tiny"] == htsat.expected_num_params(htsat.htsat_tiny()) == 27_534_488
    assert counts["htsat_base"] == htsat.expected_num_params(htsat.htsat_base()) == 67_824_408


def test_drop_path_only_when_not_deterministic(demo_model):
    config, _, params = demo_model
    config = dataclasses.replace(config, drop_path_rate=0.5)
    model = HTSATEncoder(config)  # same parameter tree as the fixture's
    audio = 0.1 * jax.random.normal(jax.random.key(2), (2, config.num_samples, 2))
    apply = jax.jit(model.apply, static_argnames="deterministic")
    a, _ = apply(params, audio, rngs={"dropout": jax.random.key(1)})
    b, _ = apply(params, audio, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(a, b)
    c, _ = apply(params, audio, deterministic=False, rngs={"dropout": jax.random.key(1)})
    d, _ = apply(params, audio, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(c, a) and not np.allclose(c, d)
    np.testing.assert_array_equal(c, apply(params, audio, deterministic=False, rngs={"dropout": jax.random.key(1)})[0])
    # Rates rise linearly from 0 at the first block to drop_path_rate at the last.
    assert config.drop_path_rates == ((0.0, 0.5 / 3), (1.0 / 3, 0.5))
