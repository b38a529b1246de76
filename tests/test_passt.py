"""PaSST in JAX against hear21passt 0.0.26 (golden outputs from tests/reference/make_passt_reference.py,
seeded random weights rebuilt here from the same NumPy seed), and the KL_passt protocol."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from stable_audio_jax.convert.passt_checkpoint import passt_params_from_state_dict
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader
from stable_audio_jax.metrics.label_divergence import clip_distribution, kl_divergence
from stable_audio_jax.models import passt
from tests.fixture_paths import FIXTURES
from tests.parity import assert_parity
from tests.reference.seeded_arrays import golden_state_dict, load_golden, music_like

GOLDEN = os.path.join(FIXTURES, "passt_reference.npz")
# The fixture's network: the AudioSet model's layout at a small width.
CONFIG = passt.PaSSTConfig(embed_dim=64, depth=2, num_heads=4)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden(GOLDEN)


@pytest.fixture(scope="module")
def tagger(golden):
    params = passt_params_from_state_dict(StateDictReader(golden_state_dict(golden), "seeded"), CONFIG)
    model = passt.PaSST(CONFIG)
    return jax.jit(lambda x: model.apply({"params": params}, x))


def _windows() -> np.ndarray:
    return np.stack([music_like(s, 10 * passt.SAMPLE_RATE, passt.SAMPLE_RATE) for s in (1, 2)])


@pytest.mark.parity
def test_front_end_matches_the_reference(golden):
    mel = np.asarray(passt.mel_front_end(_windows()))[..., 0]
    assert mel.shape == (2, 128, 1000)
    edges = np.concatenate([mel[..., :50], mel[..., -50:]], axis=-1)
    assert_parity(edges, golden["mel_edges"], "PaSST log-mel front end")


@pytest.mark.parity
def test_logits_match_the_reference(tagger, golden):
    assert_parity(tagger(_windows()), golden["windows_logits"], "PaSST logits of 10 s windows")
    short = music_like(5, int(1.2 * passt.SAMPLE_RATE), passt.SAMPLE_RATE)[None]
    assert_parity(tagger(short), golden["short_logits"], "PaSST logits of a 1.2 s window (positions cut)")


@pytest.mark.parity
def test_clip_distribution_and_kl_match_the_reference(tagger, golden):
    """The whole protocol on arrays: 44.1 kHz -> 32 kHz (soxr HQ, as librosa's soxr_hq), peak
    -1 dB, 10 s windows every 5 s, mean logits, softmax; then the reference's KL."""
    from stable_audio_jax.input_pipeline.audio_io import peak_normalise, resample

    def distribution(seed: int, seconds: float) -> tuple[np.ndarray, int]:
        audio = music_like(seed, int(seconds * 44100), 44100)[:, None]
        audio = peak_normalise(resample(audio, 44100, passt.SAMPLE_RATE))[:, 0]
        windows = passt.analysis_windows(audio)
        logits = np.concatenate([np.asarray(tagger(w[None])) for w in windows])
        return clip_distribution(logits), len(windows)

    clip, count = distribution(3, 23.0)
    assert count == int(golden["clip_windows"]) == 4
    # On log-probabilities: the probabilities themselves are all far below the tolerance's floor of 1.
    assert_parity(np.log(clip), np.log(golden["clip_distribution"]), "PaSST log label distribution of a 23 s clip")
    other, _ = distribution(4, 6.0)
    assert_parity(np.log(other), np.log(golden["other_distribution"]), "PaSST log label distribution of a 6 s clip")
    kl = kl_divergence(other[None], clip[None])[0]
    print(f"KL(other || clip) {kl:.6f}, reference {float(golden['kl']):.6f}")
    assert kl == pytest.approx(float(golden["kl"]), rel=1e-4)


def test_analysis_windows_follow_the_reference_loop():
    rate = passt.SAMPLE_RATE
    lengths = lambda seconds: [len(w) / rate for w in passt.analysis_windows(np.ones(int(seconds * rate)))]  # noqa: E731
    assert lengths(3.0) == [10.0]  # padded: longer than 15 % of the window
    assert lengths(1.2) == [1.2]  # kept short, as the reference does
    assert lengths(12.0) == [10.0, 10.0]  # starts 0, 5 s: the second padded
    assert lengths(30.0) == [10.0] * 5  # starts 0, 5, 10, 15, 20 s
    with pytest.raises(ValueError, match="mono"):
        passt.analysis_windows(np.ones((10, 2)))


def test_kaldi_filterbank_shape_and_band_edges():
    banks = passt.kaldi_mel_banks()
    assert banks.shape == (513, 128)
    assert np.all(banks[-1] == 0)  # the reference's zero Nyquist column
    assert np.all(banks >= 0) and banks.max() <= 1.0
    top_bin = int(np.nonzero(banks.any(axis=1))[0].max())
    assert top_bin * passt.SAMPLE_RATE / passt.N_FFT < passt.F_MAX  # nothing above 15 kHz


def test_converter_names_bad_keys(golden):
    tensors = golden_state_dict(golden)
    missing = {k: v for k, v in tensors.items() if k != "blocks.1.mlp.fc1.weight"}
    with pytest.raises(ConversionError, match="blocks.1.mlp.fc1.weight"):
        passt_params_from_state_dict(StateDictReader(missing, "seeded"), CONFIG)
    extra = dict(tensors, **{"blocks.2.norm1.weight": np.zeros((64,), np.float32)})
    with pytest.raises(ConversionError, match="blocks.2.norm1.weight"):
        passt_params_from_state_dict(StateDictReader(extra, "seeded"), CONFIG)
    with pytest.raises(ConversionError, match="patch_embed.proj.weight"):
        passt_params_from_state_dict(
            StateDictReader(tensors, "seeded"), passt.PaSSTConfig(embed_dim=32, num_heads=4, depth=2)
        )
    # The wrapper's state dict (net. prefix, front-end buffers) converts to the same params.
    wrapped = {f"net.{k}": v for k, v in tensors.items()} | {"device_proxy": np.zeros((1,), np.float32)}
    a = passt_params_from_state_dict(StateDictReader(tensors, "seeded"), CONFIG)
    b = passt_params_from_state_dict(StateDictReader(wrapped, "wrapped"), CONFIG)
    assert jax.tree.all(jax.tree.map(np.array_equal, a, b))


def _reference_shapes(config: passt.PaSSTConfig) -> dict[str, tuple[int, ...]]:
    """hear21passt's `PaSST` state-dict shapes for `config` (distilled, one input channel)."""
    e, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    shapes = {
        "cls_token": (1, 1, e),
        "dist_token": (1, 1, e),
        "new_pos_embed": (1, 2, e),
        "freq_new_pos_embed": (1, e, config.freq_patches, 1),
        "time_new_pos_embed": (1, e, 1, config.time_patches),
        "patch_embed.proj.weight": (e, 1, 16, 16),
        "patch_embed.proj.bias": (e,),
        "norm.weight": (e,),
        "norm.bias": (e,),
        "head.0.weight": (e,),
        "head.0.bias": (e,),
        "head.1.weight": (config.num_classes, e),
        "head.1.bias": (config.num_classes,),
        "head_dist.weight": (config.num_classes, e),
        "head_dist.bias": (config.num_classes,),
    }
    for i in range(config.depth):
        for name, shape in {
            "norm1.weight": (e,), "norm1.bias": (e,), "norm2.weight": (e,), "norm2.bias": (e,),
            "attn.qkv.weight": (3 * e, e), "attn.qkv.bias": (3 * e,), "attn.proj.weight": (e, e),
            "attn.proj.bias": (e,), "mlp.fc1.weight": (hidden, e), "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (e, hidden), "mlp.fc2.bias": (e,),
        }.items():  # fmt: skip
            shapes[f"blocks.{i}.{name}"] = shape
    return shapes


def test_layout_is_read_off_the_checkpoint(golden):
    from stable_audio_jax.convert.passt_checkpoint import passt_config_from_state_dict

    for config in (
        passt.PaSSTConfig(embed_dim=128, depth=3, num_heads=2),
        passt.PaSSTConfig(embed_dim=64, depth=1, num_heads=1, stride=16, time_patches=62),
    ):
        tensors = {k: np.zeros(s, np.float32) for k, s in _reference_shapes(config).items()}
        assert passt_config_from_state_dict(StateDictReader(tensors, "zeros")) == config
        passt_params_from_state_dict(StateDictReader(tensors, "zeros"), config)  # and converts
    # The fixture's own shapes agree with the formula above.
    assert {str(n) for n in golden["names"]} == set(_reference_shapes(CONFIG))
    with pytest.raises(ConversionError, match="not a PaSST checkpoint"):
        passt_config_from_state_dict(StateDictReader({"conv.weight": np.zeros((1,))}, "other"))
