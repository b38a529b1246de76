"""`launch/evaluate.py` and `inference/evaluation.py` on a micro CLAP run: the frame embedder's stereo
protocol, FD against audio or saved statistics, the CLAP score, and the one-line errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from stable_audio_jax.errors import UserError
from stable_audio_jax.input_pipeline.audio_io import write_wav
from tests.bad_input import run_script
from tests.captioned_data import write_captioned_data
from tests.micro_configs import micro_clap_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clap_setup(tmp_path_factory):
    """Synthetic captioned clips, a micro CLAP trained 2 steps on them, and a generated-looking set."""
    from stable_audio_jax.training.clap_task import CLAPTask
    from stable_audio_jax.training.trainer import Trainer

    root = tmp_path_factory.mktemp("evaluate")
    data = write_captioned_data(root, num_clips=24, seed=5, min_seconds=1.0, max_seconds=2.0)
    captions = data["captions"]
    config = micro_clap_config(
        {"tokenizer": data["tokenizer"], "train": data["shards"]["train"], "valid": ""}, num_steps=2
    )
    Trainer(config, str(root / "clap"), CLAPTask(config)).train()
    generated = root / "generated"
    generated.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        t = np.arange(int(1.5 * 16000)) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)[:, None] + 0.05 * rng.normal(size=(len(t), 2))
        write_wav(generated / f"{i:02d}.wav", tone.astype(np.float32), 16000)
        (generated / f"{i:02d}.txt").write_text(captions[i] + "\n")
    return {
        "root": root,
        "clap": str(root / "clap"),
        "reference": str(root / "raw" / "train.jsonl"),
        "generated": str(generated),
    }


def test_clap_embedder_embeds_each_channel_alone(clap_setup, tmp_path):
    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.inference.evaluation import ClapAudioEmbedder

    encoder = CLAPEncoder.from_run(clap_setup["clap"])
    embedder = ClapAudioEmbedder(encoder)
    rate, window = embedder.sample_rate, encoder.window_samples
    rng = np.random.default_rng(1)
    left, right = rng.normal(size=(int(2.5 * window), 1)) * 0.2, rng.normal(size=(int(2.5 * window), 1)) * 0.2
    write_wav(tmp_path / "stereo.wav", np.concatenate([left, right], axis=1).astype(np.float32), rate)
    write_wav(tmp_path / "mono.wav", left.astype(np.float32), rate)
    stereo, mono = embedder.embed_file(str(tmp_path / "stereo.wav")), embedder.embed_file(str(tmp_path / "mono.wav"))
    dim = encoder.model.config.embed_dim
    assert stereo.shape == mono.shape == (3, 2 * dim)  # 2.5 windows -> 3 frames, [left || right]
    np.testing.assert_allclose(mono[:, :dim], mono[:, dim:], atol=1e-6)  # mono: both halves alike
    assert np.abs(stereo[:, :dim] - stereo[:, dim:]).max() > 1e-3
    assert len(embedder.fingerprint) == 16


def test_embed_audio_in_chunks_equals_window_by_window(clap_setup):
    """Any number of windows goes through padded chunks; each row is that window's embedding."""
    from stable_audio_jax.inference.clap import CLAPEncoder

    encoder = CLAPEncoder.from_run(clap_setup["clap"])
    windows = np.random.default_rng(2).normal(size=(encoder.AUDIO_CHUNK + 3, encoder.window_samples, 1)) * 0.2
    together = encoder.embed_audio(windows)
    one_by_one = np.concatenate([encoder.embed_audio(w[None]) for w in windows])
    assert together.shape == (len(windows), encoder.model.config.embed_dim)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-3  # rows are not copies of the padding


def test_evaluate_script_fd_and_clap_score(clap_setup, tmp_path):
    common = [f"--generated={clap_setup['generated']}", f"--clap_dir={clap_setup['clap']}"]
    stats = tmp_path / "reference_stats.npz"
    first = run_script(
        "launch/evaluate.py",
        *common,
        f"--reference={clap_setup['reference']}",
        f"--save_stats={stats}",
        f"--output_json={tmp_path / 'a.json'}",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "fd_clap" in first.stdout and "clap " in first.stdout and stats.exists()
    again = run_script(
        "launch/evaluate.py",
        *common,
        f"--reference={stats}",
        "--metrics=fd_clap",
        f"--output_json={tmp_path / 'b.json'}",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert a["fd_clap"]["fd"] == pytest.approx(b["fd_clap"]["fd"], rel=1e-9) and a["fd_clap"]["fd"] > 0
    assert a["fd_clap"]["generated_files"] == 6 and a["fd_clap"]["reference_frames"] >= 24
    assert a["clap"]["num_items"] == 6 and "shuffled_clap_score" in a["clap"] and "clap" not in b


def test_reference_against_itself_is_zero(clap_setup):
    from stable_audio_jax.inference import evaluation
    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.metrics.frechet import frechet_distance

    embedder = evaluation.ClapAudioEmbedder(CLAPEncoder.from_run(clap_setup["clap"]))
    reference = evaluation.embedding_statistics(embedder, clap_setup["reference"])
    report = evaluation.frechet_report(embedder, clap_setup["reference"], reference)
    assert abs(report["fd"]) < 1e-6 * np.trace(reference.covariance)
    noise = evaluation.embedding_statistics(embedder, clap_setup["generated"])
    assert frechet_distance(noise, reference) > 1e-3 * np.trace(reference.covariance)


def test_statistics_of_other_weights_are_refused(clap_setup, tmp_path):
    from stable_audio_jax.inference import evaluation
    from stable_audio_jax.inference.clap import CLAPEncoder

    embedder = evaluation.ClapAudioEmbedder(CLAPEncoder.from_run(clap_setup["clap"]))
    stats = evaluation.embedding_statistics(embedder, clap_setup["generated"])
    path = str(tmp_path / "s.npz")
    evaluation.save_statistics(path, stats, embedder, clap_setup["generated"])
    assert evaluation.load_statistics(path, embedder).count == stats.count
    embedder.fingerprint = "0" * 16  # as another CLAP's weights would be
    with pytest.raises(UserError, match="embed the reference again"):
        evaluation.load_statistics(path, embedder)


def test_evaluate_bad_input_is_one_line(clap_setup, tmp_path):
    cases = [
        ([f"--reference={clap_setup['reference']}", "--metrics=fd_openl3"], "needs --openl3_weights"),
        (
            [f"--reference={clap_setup['reference']}", "--metrics=fd_openl3", f"--openl3_weights={tmp_path}/w.pth.tar"],
            "torchopenl3_mel256_music_512.pth.tar",
        ),
        ([f"--reference={clap_setup['reference']}", "--metrics=kl_passt"], "needs --passt_weights"),
        (
            [f"--reference={clap_setup['reference']}", "--metrics=kl_passt", f"--passt_weights={tmp_path}/p.pt"],
            "passt-s-f128-p16-s10-ap.476-swa.pt",
        ),
        (["--metrics=clap", f"--save_stats={tmp_path}/s.npz"], "--save_stats needs one of"),
        (["--metrics=clap_laion"], "needs --laion_clap_checkpoint"),
        (
            ["--metrics=clap_laion", f"--laion_clap_checkpoint={tmp_path}/c.pt", f"--roberta_dir={tmp_path}"],
            "630k-audioset-fusion-best.pt or music_speech_audioset_epoch_15_esc_89.98.pt from huggingface.co",
        ),
        (["--metrics=fd_clap"], "needs --reference"),
        (["--metrics=nope"], "unknown metric 'nope'"),
        ([f"--reference={tmp_path / 'missing'}"], "does not exist"),
        ([f"--reference={clap_setup['reference']}", f"--clap_dir={tmp_path}"], "clap_dir"),
    ]
    for extra, message in cases:
        args = [f"--generated={clap_setup['generated']}", f"--clap_dir={clap_setup['clap']}", *extra]
        result = run_script("launch/evaluate.py", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and message in lines[-1], (extra, result.stderr[-2000:])
        assert lines[-1].startswith("error: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(
        "launch/evaluate.py",
        f"--generated={empty}",
        f"--reference={clap_setup['reference']}",
        f"--clap_dir={clap_setup['clap']}",
    )
    assert result.returncode == 2 and "no audio files" in result.stderr, result.stderr[-2000:]


def test_autoencoder_evaluation_of_a_pretrained_vae(converted, tmp_path):
    rate = 44100
    clips = tmp_path / "clips"
    clips.mkdir()
    t = np.arange(int(0.5 * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 330 * t)
    write_wav(clips / "tone_then_silence.wav", np.concatenate([tone, np.zeros_like(tone)])[:, None], rate)
    write_wav(clips / "mono_22k.wav", tone[::2, None].astype(np.float32), rate // 2)  # converted on reading
    out = tmp_path / "vae.json"
    result = run_script("launch/evaluate.py", f"--vae={converted}", f"--reference={clips}", f"--output_json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean" in result.stdout and "si_sdr" in result.stdout
    report = json.loads(out.read_text())
    assert report["files"] == 2 and set(report["overall"]) >= {"mrstft", "si_sdr_db", "mel_distance"}
    silent = {os.path.basename(r["file"]): r["silent_frames_output_db"] for r in report["per_file"]}
    assert silent["tone_then_silence.wav"] is not None and silent["mono_22k.wav"] is None
    bad = run_script("launch/evaluate.py", f"--vae={tmp_path}", f"--reference={clips}")
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1].startswith(f"error: --vae={tmp_path}"), bad.stderr


def test_fd_openl3_from_a_weights_file(clap_setup, tmp_path):
    """The paper's FD_openl3 through the script, with seeded weights in a local file."""
    from safetensors.numpy import save_file

    from tests.fixture_paths import FIXTURES
    from tests.reference.seeded_arrays import golden_state_dict, load_golden

    weights = tmp_path / "openl3.safetensors"
    save_file(golden_state_dict(load_golden(os.path.join(FIXTURES, "openl3_reference.npz"))), str(weights))
    sets = {}
    for name, seed in (("a", 0), ("b", 1)):
        folder = tmp_path / name
        folder.mkdir()
        rng = np.random.default_rng(seed)
        for i in range(2):
            write_wav(folder / f"{i}.wav", (0.2 * rng.normal(size=(44100, 2))).astype(np.float32), 44100)
        sets[name] = str(folder)
    out = tmp_path / "fd.json"
    result = run_script(
        "launch/evaluate.py",
        f"--generated={sets['a']}",
        f"--reference={sets['b']}",
        "--metrics=fd_openl3",
        f"--openl3_weights={weights}",
        f"--output_json={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())["fd_openl3"]
    # 1 s files: 2 windows each (half a window of zeros first, hop 0.5 s), [left || right] = 1024-d.
    assert report["generated_frames"] == 4 and report["dims"] == 1024 and report["fd"] > 0
    assert report["embedder"] == "openl3-mel256-music-512"


def test_kl_passt_from_a_weights_file(tmp_path):
    """The paper's KL_passt through the script, with seeded weights of a small PaSST in a local
    file (its layout read off the file): files pair by name, unpaired ones are listed, a set
    against itself is 0, and saved reference distributions give the same figure."""
    from safetensors.numpy import save_file

    from tests.fixture_paths import FIXTURES
    from tests.reference.seeded_arrays import golden_state_dict, load_golden, music_like

    weights = tmp_path / "passt.safetensors"
    save_file(golden_state_dict(load_golden(os.path.join(FIXTURES, "passt_reference.npz"))), str(weights))
    folders = {name: tmp_path / name for name in ("generated", "reference")}
    for folder in folders.values():
        folder.mkdir()
    for seed, name in enumerate(("a", "b", "c")):
        write_wav(folders["reference"] / f"{name}.wav", music_like(seed, 3 * 44100, 44100)[:, None], 44100)
    for seed, name in ((7, "a"), (8, "b"), (9, "d")):  # d has no reference; c is not generated
        stereo = np.stack([music_like(seed, 3 * 48000, 48000), music_like(seed + 10, 3 * 48000, 48000)], axis=1)
        write_wav(folders["generated"] / f"{name}.wav", stereo, 48000)

    def kl(generated: str, reference: str, *extra: str) -> dict:
        out = tmp_path / "kl.json"
        args = [
            f"--generated={generated}",
            f"--reference={reference}",
            "--metrics=kl_passt",
            f"--passt_weights={weights}",
        ]
        result = run_script("launch/evaluate.py", *args, *extra, f"--output_json={out}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "kl_passt" in result.stdout
        return json.loads(out.read_text())["kl_passt"]

    stats = tmp_path / "labels.npz"
    report = kl(str(folders["generated"]), str(folders["reference"]), f"--save_stats={stats}")
    assert report["pairs"] == 2 and set(report["per_file"]) == {"a", "b"}
    assert report["generated_without_reference"] == ["d"] and report["kl"] > 1e-4
    again = kl(str(folders["generated"]), str(stats))
    assert again["kl"] == pytest.approx(report["kl"], rel=1e-9)
    itself = kl(str(folders["reference"]), str(folders["reference"]))
    # KL(p || p) with the reference's 1e-6 on p_ref: -sum_c p_c log(1 + 1e-6 / p_c) ~ -527e-6 (527 labels).
    assert itself["pairs"] == 3 and itself["kl"] == pytest.approx(-527e-6, rel=1e-2)
