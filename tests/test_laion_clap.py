"""LAION-CLAP import against laion-clap 1.1.7 (golden outputs from
tests/reference/make_laion_clap_reference.py, seeded random weights rebuilt here from the same
NumPy seed): the audio branch's front end and Swin, both projections, the text branch, the
crop / repeat-pad rule, and stable-audio-metrics' CLAP-score preprocessing."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from stable_audio_jax.convert.laion_clap_checkpoint import (
    LAION_WINDOW_SAMPLES,
    laion_clap_params_from_state_dict,
)
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader
from stable_audio_jax.models.clap import CLAP
from stable_audio_jax.models.htsat import bicubic_resize_matrix
from stable_audio_jax.models.mel import mel_filterbank
from tests.fixture_paths import FIXTURES
from tests.parity import assert_parity
from tests.reference.seeded_arrays import golden_state_dict, load_golden, music_like

GOLDEN = os.path.join(FIXTURES, "laion_clap_reference.npz")
FUSION_GOLDEN = os.path.join(FIXTURES, "laion_clap_fusion_reference.npz")
ROBERTA_DIR = os.path.join(FIXTURES, "sa1_small", "roberta")
SR = 48000


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden(GOLDEN)


def _roberta_config() -> dict:
    import json

    with open(os.path.join(ROBERTA_DIR, "config.json")) as f:
        return json.load(f)


def _checkpoint(golden: dict, prefix: str = "module.") -> dict:
    """The seeded tensors as a released checkpoint names them, with its fixed mel matrix."""
    tensors = {prefix + k: v for k, v in golden_state_dict(golden).items()}
    tensors[prefix + "audio_branch.logmel_extractor.melW"] = mel_filterbank(SR, 1024, 64, 50.0, 14000.0)
    return tensors


@pytest.fixture(scope="module")
def converted(golden):
    return laion_clap_params_from_state_dict(StateDictReader(_checkpoint(golden), "seeded"), _roberta_config())


@pytest.fixture(scope="module")
def embed_audio(converted):
    config, params = converted
    model = CLAP(config)
    return jax.jit(lambda audio: model.apply({"params": params}, audio, method=CLAP.encode_audio))


def test_bicubic_matrix_is_torch_align_corners():
    """Against the cubic-convolution formula by hand at one output (A = -0.75, clamped taps)."""
    matrix = bicubic_resize_matrix(5, 9)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(matrix[1], [0.5, 0.59375, -0.09375, 0, 0], atol=1e-7)  # position 0.5, tap -1 -> 0
    np.testing.assert_array_equal(matrix[::2], np.eye(5, dtype=np.float32))  # on-grid outputs copy


def test_layout_read_off_the_checkpoint(converted):
    config, _ = converted
    audio = config.audio
    assert (audio.embed_dim, audio.depths, audio.num_heads, audio.window_size) == (16, (2, 2), (2, 4), 8)
    assert (audio.n_mels, audio.spec_size, audio.freq_ratio, audio.sample_rate) == (64, 256, 4, 48000)
    assert (audio.input_norm, audio.frame_resize, config.embed_dim) == ("affine", "bicubic", 512)


@pytest.fixture(scope="module")
def checkpoint_file(golden, tmp_path_factory) -> str:
    """The seeded checkpoint as a file (safetensors: this environment has no torch to write a
    `.pt`; the pickle-free `.pt` reader is tested with the reference's files elsewhere)."""
    from safetensors.numpy import save_file

    path = str(tmp_path_factory.mktemp("laion") / "clap.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in _checkpoint(golden).items()}, path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint_file):
    from stable_audio_jax.inference.clap import CLAPEncoder

    return CLAPEncoder.from_laion_checkpoint(checkpoint_file, ROBERTA_DIR)


@pytest.mark.parity
def test_audio_embeddings_match_the_reference(converted, embed_audio, golden):
    config, params = converted
    exact = music_like(1, LAION_WINDOW_SAMPLES, SR)
    assert_parity(embed_audio(exact[None]), golden["embed_exact"], "10 s clip (1001 frames, bicubic to 1024)")
    pooled, _ = CLAP(config).apply({"params": params}, exact[None], method=lambda m, a: m.audio_encoder(a))
    assert_parity(pooled, golden["branch_exact"], "HTSAT pooled embedding before the projection")
    other = np.asarray(embed_audio(music_like(2, LAION_WINDOW_SAMPLES, SR)[None]))
    assert np.max(np.abs(other - golden["embed_exact"])) > 1e-2  # the comparison can fail


@pytest.mark.parity
def test_crop_and_repeat_pad_match_the_reference(encoder, golden):
    short = music_like(2, 150000, SR)
    window = encoder.crop_or_repeat(short)
    assert window.shape == (LAION_WINDOW_SAMPLES,)
    np.testing.assert_array_equal(window[150000:300000], short)  # repeated 480000 // 150000 = 3 times
    assert not np.any(window[450000:])  # then zero-padded
    assert_parity(encoder.embed_audio(window[None, :, None]), golden["embed_short"], "3.1 s clip, repeat-padded")
    long = music_like(3, 600000, SR)
    window = encoder.crop_or_repeat(long, offset=int(golden["long_offset"]))
    assert_parity(encoder.embed_audio(window[None, :, None]), golden["embed_long"], "12.5 s clip, cropped")
    # Drawn offsets: a contiguous 10 s of the clip, the same sequence for the same seed.
    drawn = [encoder.crop_or_repeat(long) for _ in range(3)]
    starts = [int(np.flatnonzero(long == w[0])[0]) for w in drawn]
    for start, w in zip(starts, drawn):
        np.testing.assert_array_equal(w, long[start : start + LAION_WINDOW_SAMPLES])
    again = type(encoder)(
        encoder.model, encoder.params, encoder.tokenizer, encoder.mesh, long_audio="crop", window_samples=480000
    )
    assert [int(np.flatnonzero(long == again.crop_or_repeat(long)[0])[0]) for _ in range(3)] == starts


@pytest.mark.parity
def test_clap_score_preprocessing_matches_stable_audio_metrics(encoder, golden, tmp_path):
    """A 7 s stereo 44.1 kHz file: mono, soxr HQ to 48 kHz, peak -1 dB, int16, repeat-padded."""
    import soundfile

    stereo = np.stack([music_like(4, 7 * 44100, 44100), music_like(5, 7 * 44100, 44100)], axis=1)
    path = str(tmp_path / "clip.wav")
    soundfile.write(path, stereo, 44100, subtype="FLOAT")
    assert_parity(encoder.embed_audio_file(path), golden["protocol"][0], "stable-audio-metrics' CLAP-score steps")
    assert_parity(encoder.embed_text([str(c) for c in golden["captions"]]), golden["text_embed"], "embed_text")


@pytest.mark.parity
def test_text_embeddings_and_tokens_match_the_reference(converted, golden):
    from stable_audio_jax.convert.laion_clap_checkpoint import load_laion_clap  # noqa: F401
    from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer

    config, params = converted
    tokenizer = TextTokenizer.from_file(ROBERTA_DIR, max_length=77)
    ids, mask = tokenizer([str(c) for c in golden["captions"]])
    np.testing.assert_array_equal(ids, golden["input_ids"])
    np.testing.assert_array_equal(mask, golden["attention_mask"].astype(bool))
    embeddings, _ = CLAP(config).apply({"params": params}, ids, mask, method=CLAP.encode_text)
    assert_parity(embeddings, golden["text_embed"], "LAION-CLAP text embeddings")


def test_other_fusion_types_are_refused(golden):
    """iAFF's second attention and a DAF (a local conv without AFF) name the tensor."""
    fusion = _checkpoint(load_golden(FUSION_GOLDEN))
    iaff = dict(fusion, **{"module.audio_branch.patch_embed.fusion_model.local_att2.0.weight": np.zeros((4, 16, 1, 1))})
    daf = {k: v for k, v in fusion.items() if ".fusion_model." not in k}
    for tensors, name in ((iaff, "fusion_model.local_att2.0.weight"), (daf, "mel_conv2d / fusion_model")):
        with pytest.raises(ConversionError, match=f"{name}: only the aff_2d fusion"):
            laion_clap_params_from_state_dict(StateDictReader(tensors, "x.pt"), _roberta_config())


@pytest.fixture(scope="module")
def fusion_encoder(tmp_path_factory):
    from safetensors.numpy import save_file

    from stable_audio_jax.inference.clap import CLAPEncoder

    path = str(tmp_path_factory.mktemp("laion_fusion") / "clap.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in _checkpoint(load_golden(FUSION_GOLDEN)).items()}, path)
    return CLAPEncoder.from_laion_checkpoint(path, ROBERTA_DIR)


@pytest.mark.parity
def test_fusion_matches_the_reference(fusion_encoder):
    """630k-audioset-fusion-best's layout: a 15 s clip fused (HTK mel, the whole clip shrunk with
    antialiasing, three crops) and a 3.1 s clip (repeat-padded, not fused) in one batch."""
    from stable_audio_jax.models.htsat import FusionViews

    golden = load_golden(FUSION_GOLDEN)
    config = fusion_encoder.model.config.audio
    assert config.fusion and config.mel_scale == "htk"
    long_views = fusion_encoder.fusion_views(music_like(6, 15 * SR, SR), starts=golden["fusion_starts"])
    short_views = fusion_encoder.fusion_views(music_like(2, 150000, SR))
    assert bool(long_views.fused) and not bool(short_views.fused)
    views = np.concatenate([long_views.global_mel[None], long_views.local_mels])[:, ::50]
    assert_parity(views, golden["fusion_views"], "the four mel views (torchaudio HTK mel, torchvision shrink)")
    batch = FusionViews(*(np.stack([a, b]) for a, b in zip(long_views, short_views)))
    assert_parity(fusion_encoder.embed_fusion_views(batch), golden["fusion_embed"], "fused and plain embeddings")
    unfused = fusion_encoder.embed_fusion_views(batch._replace(fused=np.array([False, False])))
    assert np.max(np.abs(unfused[0] - golden["fusion_embed"][0])) > 1e-2  # the local views count
    # Without given starts, each call draws new crops.
    drawn = [fusion_encoder.fusion_views(music_like(6, 15 * SR, SR)) for _ in range(2)]
    assert not np.array_equal(drawn[0].local_mels, drawn[1].local_mels)


def test_evaluate_script_scores_captioned_files(encoder, checkpoint_file, tmp_path):
    """`launch/evaluate.py --metrics=clap_laion` on a two-caption manifest: the table row and the
    JSON, equal to the cosines computed here with the same encoder."""
    import json

    import soundfile

    from tests.bad_input import run_script

    captions = ["warm analog pads, 90 BPM", "a dry snare"]
    rows = []
    for i, caption in enumerate(captions):
        soundfile.write(str(tmp_path / f"{i}.wav"), music_like(10 + i, 3 * SR, SR), SR, subtype="FLOAT")
        rows.append(json.dumps({"path": f"{i}.wav", "caption": caption}))
    (tmp_path / "generated.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval.json"
    result = run_script(
        "launch/evaluate.py",
        f"--generated={tmp_path / 'generated.jsonl'}",
        "--metrics=clap_laion",
        f"--laion_clap_checkpoint={checkpoint_file}",
        f"--roberta_dir={ROBERTA_DIR}",
        f"--output_json={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "clap_laion" in result.stdout and "2 captioned files" in result.stdout, result.stdout
    report = json.loads(out.read_text())["clap_laion"]
    text = encoder.embed_text(captions)
    audio = np.stack([encoder.embed_audio_file(str(tmp_path / f"{i}.wav")) for i in range(2)])
    np.testing.assert_allclose(report["per_item"], np.sum(text * audio, axis=-1), atol=1e-5)
    np.testing.assert_allclose(
        report["shuffled_clap_score"], np.mean([text[0] @ audio[1], text[1] @ audio[0]]), atol=1e-5
    )
    assert report["embedder"] == "laion-clap-htsat" and len(report["embedder_fingerprint"]) == 16
