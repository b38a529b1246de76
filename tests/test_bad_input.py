"""Bad input to the launch and data scripts, typed the way a user would: exit status 2, one
`error: ...` line on stderr naming the flag, key or path, no traceback, nothing written.

The script cases run as subprocesses through `bad_input.check_cases`, a few at a time (most
fail before JAX is imported); the config validation and the shard report's repair counters are
also tested in-process.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from stable_audio_jax import config_lib
from stable_audio_jax.errors import UserError
from stable_audio_jax.input_pipeline import audio_io, records, shard_writer
from tests.bad_input import Case, check_cases

VAE_TINY = "--config=configs/vae_tiny.py"


# ------------------------------------------------------------------------------ launch scripts
@pytest.mark.slow
def test_train_bad_flags_and_config(tmp_path):
    workdir = str(tmp_path / "run")
    train = lambda *args: ["--workdir=" + workdir, *args]  # noqa: E731
    check_cases(
        [
            Case(
                "launch/train.py",
                train(VAE_TINY, "--config.trainer.num_stepz=5"),
                ["--config.trainer.num_stepz", "trainer.num_steps"],
                [workdir],
            ),
            Case("launch/train.py", train("--config=configs/nope.py"), ["configs/nope.py"], [workdir]),
            Case(
                "launch/train.py",
                train("--config=configs/nope.py", "--config.trainer.num_steps=5"),
                ["configs/nope.py"],
            ),
            # Every out-of-range trainer/data field, named on the one line.
            Case(
                "launch/train.py",
                train(
                    VAE_TINY,
                    "--config.trainer.checkpoint_every=0",
                    "--config.data.batch_size=0",
                    "--config.trainer.num_steps=0",
                    "--config.trainer.log_every=-1",
                    "--config.trainer.eval_every=-1",
                    "--config.trainer.max_checkpoints=0",
                ),
                [
                    "trainer.checkpoint_every",
                    "data.batch_size",
                    "trainer.num_steps",
                    "trainer.log_every",
                    "trainer.eval_every",
                    "trainer.max_checkpoints",
                ],
                [workdir],
            ),
            Case(
                "launch/train.py",
                train(VAE_TINY, f"--config.data.train_shards={tmp_path / 'no_shards'}"),
                ["train_shards", "no_shards"],
                [workdir],
            ),
        ]
    )


@pytest.mark.slow
def test_sample_bad_settings_fail_before_loading(tmp_path):
    # The run directory exists but holds no model: every case must fail before loading one.
    model = tmp_path / "diffusion"
    model.mkdir()
    out = str(tmp_path / "samples")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    sample = lambda *args: [f"--diffusion_dir={model}", "--prompt=drums", *args]  # noqa: E731
    check_cases(
        [
            Case("launch/sample.py", sample("--steps=0", f"--output_dir={out}"), ["--steps"], [out]),
            Case("launch/sample.py", sample("--steps=-3", f"--output_dir={out}"), ["--steps"], [out]),
            Case("launch/sample.py", sample("--seconds_total=0", f"--output_dir={out}"), ["--seconds_total"], [out]),
            Case("launch/sample.py", sample("--seconds_total=-2", f"--output_dir={out}"), ["--seconds_total"], [out]),
            Case("launch/sample.py", sample("--cfg_scale=-1", f"--output_dir={out}"), ["--cfg_scale"], [out]),
            Case("launch/sample.py", sample(f"--output_dir={a_file}"), ["--output_dir", str(a_file)]),
            Case("launch/sample.py", sample(f"--output_dir={a_file / 'sub'}"), ["--output_dir", str(a_file)]),
            Case("launch/sample.py", sample("--output_dir=/sys/samples"), ["--output_dir", "/sys/samples"]),
            Case(
                "launch/sample.py",
                ["--diffusion_dir=" + str(tmp_path / "nope"), "--prompt=x", f"--output_dir={out}"],
                ["--diffusion_dir", "nope"],
                [out],
            ),
            # absl's own flag errors, through the same one-line parser.
            Case("launch/sample.py", sample("--steps=abc", f"--output_dir={out}"), ["--steps", "abc"], [out]),
            Case("launch/sample.py", sample("--stepz=10", f"--output_dir={out}"), ["stepz", "steps"], [out]),
        ]
    )


@pytest.mark.slow
def test_other_launch_scripts(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    check_cases(
        [
            Case(
                "launch/convert_sao.py",
                [
                    f"--checkpoint={a_file}",
                    f"--model_config={a_file}",
                    f"--t5_dir={tmp_path}",
                    f"--output_dir={a_file}",
                ],
                ["--output_dir", str(a_file)],
            ),
            Case("launch/clap_score.py", [f"--clap_dir={tmp_path}"], ["--input"]),
            Case(
                "launch/benchmark.py",
                [VAE_TINY, "--config.model.latent_dimm=4"],
                ["--config.model.latent_dimm", "model.latent_dim"],
            ),
        ]
    )


# ------------------------------------------------------------------------------ data scripts
@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> dict[str, str]:
    """A VAE and a CLAP run directory: one checkpoint each, of a dummy state and the task's config."""
    from stable_audio_jax.training.checkpointing import Checkpointer

    root = tmp_path_factory.mktemp("runs")
    for task in ("vae", "clap"):
        checkpointer = Checkpointer(root / task / "checkpoints", async_save=False)
        checkpointer.save(1, {"w": np.zeros(2, np.float32)}, None, {"task": task})
        checkpointer.close()
    return {task: str(root / task) for task in ("vae", "clap")}


@pytest.mark.slow
def test_wrong_run_directories(run_dirs, tmp_path):
    shards = tmp_path / "shards"
    with records.ShardWriter(shards, "train", 1) as writer:
        writer.write(b"record")
    out = str(tmp_path / "latents")
    pre = lambda vae, clap: [
        f"--input={shards}",
        f"--output_dir={out}",
        "--sample_size=4096",  # noqa: E731
        f"--vae_dir={vae}",
        f"--clap_dir={clap}",
    ]
    check_cases(
        [
            Case(
                "data/pre_encode.py",
                pre(run_dirs["clap"], run_dirs["vae"]),
                ["--vae_dir", "--clap_dir", "swapped"],
                [out],
            ),
            Case(
                "data/pre_encode.py",
                pre(run_dirs["vae"], run_dirs["vae"]),
                [f"--clap_dir={run_dirs['vae']}", "vae run"],
                [out],
            ),
            Case(
                "data/pre_encode.py", pre(str(tmp_path / "missing"), run_dirs["clap"]), ["--vae_dir", "missing"], [out]
            ),
            Case("data/pre_encode.py", [*pre(run_dirs["vae"], run_dirs["clap"])[:-1]], ["--clap_dir"], [out]),
            # The same check in the scripts that load runs.
            Case(
                "launch/sample.py",
                [f"--diffusion_dir={run_dirs['vae']}", "--prompt=x", f"--output_dir={out}"],
                [f"--diffusion_dir={run_dirs['vae']}", "vae run", "diffusion"],
                [out],
            ),
            Case(
                "launch/clap_score.py",
                [f"--clap_dir={run_dirs['vae']}", f"--input={shards}"],
                [f"--clap_dir={run_dirs['vae']}", "vae run"],
            ),
        ]
    )


def test_make_shards_without_decodable_audio(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_bytes(b"not audio at all")
    (bad / "b.flac").write_bytes(b"")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": "gone.wav", "caption": "x"}) + "\n" + "{not json\n")
    existing = tmp_path / "existing"  # an output folder that exists keeps existing, with no shards in it
    existing.mkdir()
    out = str(tmp_path / "out" / "shards")
    check_cases(
        [
            Case("data/make_shards.py", [f"--input={bad}", f"--output_dir={out}"], [str(bad)], [str(tmp_path / "out")]),
            Case("data/make_shards.py", [f"--input={manifest}", f"--output_dir={existing}"], [str(manifest)]),
            Case(
                "data/make_shards.py",
                [f"--input={tmp_path / 'nope'}", f"--output_dir={out}"],
                ["--input", "nope"],
                [str(tmp_path / "out")],
            ),
            Case("data/make_shards.py", [f"--input={bad}", f"--output_dir={out}", "--num_shards=0"], ["--num_shards"]),
            Case(
                "data/make_shards.py", [f"--input={bad}", f"--output_dir={manifest}"], ["--output_dir", str(manifest)]
            ),
            Case(
                "data/build_tfds.py",
                [f"--input={tmp_path / 'nope'}", f"--data_dir={out}"],
                ["--input", "nope"],
                [str(tmp_path / "out")],
            ),
            # Found but undecodable: tfds has made its empty downloads/ folder by then, nothing else.
            Case("data/build_tfds.py", [f"--input={bad}", f"--data_dir={tmp_path / 'tfds'}"], [str(bad)]),
            Case(
                "data/train_tokenizer.py",
                [f"--manifest={tmp_path / 'nope.jsonl'}", f"--output={out}"],
                ["--manifest", "nope.jsonl"],
                [str(tmp_path / "out")],
            ),
            Case(
                "data/render_demo.py",
                [f"--output_dir={out}", "--num_clips=many"],
                ["--num_clips"],
                [str(tmp_path / "out")],
            ),
            Case("data/render_demo.py", [f"--output_dir={manifest / 'sub'}", "--synthetic"], ["--output_dir"]),
        ]
    )
    assert os.listdir(existing) == []


# ------------------------------------------------------------------------------ in-process units
def _vae_tiny():
    from configs import vae_tiny

    return vae_tiny.get_config()


def test_validate_names_every_bad_field():
    config = _vae_tiny()
    config_lib.validate(config)  # the shipped config is valid
    config.trainer.eval_every = 0  # 0 turns evaluation off: allowed
    config_lib.validate(config)
    config.trainer.checkpoint_every = 0
    config.trainer.eval_every = -1
    config.data.batch_size = 0
    with pytest.raises(UserError) as error:
        config_lib.validate(config)
    message = str(error.value)
    for key in ("trainer.checkpoint_every=0", "trainer.eval_every=-1", "data.batch_size=0"):
        assert key in message
    assert "num_steps" not in message and "\n" not in message


def test_trainer_validates_before_building(tmp_path):
    from stable_audio_jax.training.trainer import Trainer

    config = _vae_tiny()
    config.trainer.max_checkpoints = 0
    with pytest.raises(UserError, match="trainer.max_checkpoints"):
        Trainer(config, str(tmp_path / "run"), task=None)  # fails before the task is ever used
    assert not (tmp_path / "run").exists()


def test_config_key_suggestions():
    config = _vae_tiny()
    assert config_lib.has_key(config, "trainer.num_steps") and config_lib.has_key(config, "loss.stft")
    assert not config_lib.has_key(config, "trainer.num_stepz")
    assert not config_lib.has_key(config, "trainer.num_steps.deeper")
    assert config_lib.closest_key(config, "trainer.num_stepz") == "trainer.num_steps"
    assert config_lib.closest_key(config, "num_steps") == "trainer.num_steps"
    assert config_lib.closest_key(config, "qqqqqqqq") is None


SR = 8000


def _tone(scale: float) -> np.ndarray:
    t = np.arange(SR) / SR
    return (scale * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None].repeat(2, axis=1)


def test_report_counts_peak_normalised_and_non_utf8_captions(tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    loud = _tone(1e6)
    sf.write(folder / "loud.wav", loud, SR, subtype="FLOAT")
    sf.write(folder / "fine.wav", _tone(0.5), SR, subtype="PCM_16")
    (folder / "loud.txt").write_bytes(b"caf\xe9 piano")  # Latin-1, not UTF-8
    (folder / "fine.txt").write_bytes("café piano".encode())
    with caplog.at_level(logging.WARNING):
        report = shard_writer.write_shards(folder, tmp_path / "out", num_shards=1, progress=False)
    assert report["written"] == 2
    assert report["peak_normalised"] == 1 and report["peak_normalised_examples"] == ["loud.wav"]
    assert report["not_utf8"] == 1 and report["not_utf8_examples"] == ["loud.wav"]
    with open(tmp_path / "out" / "train_report.json") as f:
        assert json.load(f)["peak_normalised_examples"] == ["loud.wav"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("scaled to peak 1.0" in w and "loud.wav" in w for w in warnings)
    assert any("not UTF-8" in w and "loud.wav" in w for w in warnings)

    reader_records = {}
    from array_record.python.array_record_module import ArrayRecordReader

    for shard in records.list_shards(tmp_path / "out"):
        reader = ArrayRecordReader(shard)
        for _ in range(reader.num_records()):
            flac, meta = records.decode_record(reader.read())
            reader_records[meta["id"]] = (flac, meta)
        reader.close()
    flac, meta = reader_records["loud"]
    audio, _ = audio_io.decode_audio(flac)
    # Scaled, not clipped: the waveform is the original's over its peak (to 24-bit precision).
    np.testing.assert_allclose(audio, loud / np.abs(loud).max(), atol=1e-6)
    assert meta["gain"] == pytest.approx(1 / np.abs(loud).max())
    assert meta["caption"] == "caf\ufffd piano"
    assert reader_records["fine"][1]["caption"] == "café piano" and "gain" not in reader_records["fine"][1]


def test_manifests_count_non_utf8_lines(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(0.5), SR, subtype="PCM_16")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b'{"path": "a.wav", "caption": "ok"}\n{"path": "a.wav", "caption": "caf\xe9"}\n')
    csv_path = tmp_path / "m.csv"
    csv_path.write_bytes(b'path,caption\na.wav,ok\na.wav,"caf\xe9"\n')
    for manifest, where in ((jsonl, f"{jsonl}:2"), (csv_path, f"{csv_path}:3")):
        report = shard_writer.ConversionReport()
        items = shard_writer.discover_audio(manifest, report)
        assert [item.caption for item in items] == ["ok", "caf\ufffd"]
        assert report.as_dict()["not_utf8_examples"] == [where]


def test_shard_writer_leaves_nothing_on_error(tmp_path):
    new = tmp_path / "new" / "shards"
    with pytest.raises(RuntimeError):
        with records.ShardWriter(new, "train", 2) as writer:
            writer.write(b"record")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "new").exists()  # the folders it created are gone too
    with records.ShardWriter(tmp_path, "train", 2) as writer:
        writer.write(b"record")
    assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00002.array_record", "train-00001-of-00002.array_record"]
