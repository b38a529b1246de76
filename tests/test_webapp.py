"""`webapp/service.py` on the converted SAO fixture: the form checks (one message each), a run's
files and settings, per-request folders, the compile note, and the edit modes."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from stable_audio_jax.input_pipeline.audio_io import write_wav
from stable_audio_jax.webapp.service import FormError, GenerationService


@pytest.fixture(scope="module")
def service(converted, tmp_path_factory):
    from stable_audio_jax.inference.generate import AudioGenerator

    generator = AudioGenerator.from_pretrained(converted)
    return GenerationService(generator, str(tmp_path_factory.mktemp("app")), model_dirs={"pretrained": converted})


@pytest.fixture(scope="module")
def clip_path(service, tmp_path_factory) -> str:
    rate = service.generator.sample_rate
    t = np.arange(int(0.3 * rate)) / rate
    path = str(tmp_path_factory.mktemp("upload") / "tone.wav")
    write_wav(path, (0.3 * np.sin(2 * np.pi * 440 * t))[:, None].astype(np.float32), rate)
    return path


def test_bad_form_values_are_one_message_each(service, clip_path, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    window = service.generator.window_seconds
    cases = [
        (dict(steps=0), "steps must be a whole number >= 1"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(steps="many"), "steps: expected a number"),
        (dict(seconds_total=window + 5), "is outside (0,"),
        (dict(seconds_total=0), "is outside (0,"),
        (dict(batch_size=9), "batch size must be a whole number from 1 to 8"),
        (dict(seed=-5), "seed must be from 0"),
        (dict(sampler="pingpong"), "pingpong"),  # a rectified-flow sampler on this v-model
        (dict(mode="inpaint"), "needs an audio file"),
        (dict(mode="inpaint", audio_path=str(text)), "notes.txt: not an audio file"),
        (dict(mode="inpaint", audio_path=clip_path, region_start=0.1, region_end=9.0), "region"),
        (dict(mode="audio-to-audio", audio_path=clip_path, init_noise_level=0), "noise level must be > 0"),
        (dict(mode="continue", audio_path=clip_path, seconds_total=0.2), "must be longer than the audio"),
        (dict(mode="remix"), "mode: one of"),
    ]
    for form, message in cases:
        with pytest.raises(FormError) as info:
            service.check(**form)
        assert message in str(info.value) and "\n" not in str(info.value), (form, str(info.value))


def test_a_run_writes_clips_spectrograms_and_settings(service):
    request = service.check(prompt="", steps=3, seed=-1, batch_size=2, seconds_total=0.1)
    assert 0 <= request.seed < 2**31 and request.prompt == ""
    result = service.run(request, progress=False)
    assert len(result.audio_paths) == len(result.spectrogram_paths) == 2
    assert all(os.path.getsize(p) > 0 for p in result.audio_paths + result.spectrogram_paths)
    settings = json.loads(open(result.settings_path).read())
    assert settings["steps"] == 3 and settings["seed"] == request.seed and settings["batch_size"] == 2
    assert settings["pretrained"] and settings["files"] == [os.path.basename(p) for p in result.audio_paths]
    assert any("unconditional" in n for n in result.notes)  # the empty prompt is said
    assert result.first_compile and any("compiled" in n for n in result.notes)
    again = service.run(
        service.check(prompt="a tone", steps=3, seed=1, batch_size=2, seconds_total=0.1), progress=False
    )
    assert not again.first_compile and again.folder != result.folder and not again.notes


def test_requests_from_two_threads_get_their_own_folders(service):
    results = []

    def one(seed: int) -> None:
        results.append(service.run(service.check(prompt="x", steps=2, seed=seed, seconds_total=0.1), progress=False))

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.folder for r in results}) == 2
    assert sorted(r.settings["seed"] for r in results) == [3, 4]


def test_edit_modes_run(service, clip_path):
    for form in (
        dict(mode="audio-to-audio", init_noise_level=0.5),
        dict(mode="inpaint", region_start=0.05, region_end=0.1),
        dict(mode="continue", seconds_total=0.4),
    ):
        result = service.run(service.check(prompt="a tone", steps=2, audio_path=clip_path, **form), progress=False)
        assert result.settings["mode"] == form["mode"] and result.settings["audio"] == "tone.wav"
        assert len(result.audio_paths) == 1


def test_app_script_bad_flags_are_one_line(tmp_path):
    from tests.bad_input import run_script

    for args, message in (
        ([], "give --diffusion_dir"),
        ([f"--pretrained={tmp_path / 'missing'}"], "does not exist"),
        (["--lora=runs/x"], "--lora needs --pretrained"),
        (["--port=0", f"--pretrained={tmp_path}"], "--port"),
    ):
        result = run_script("launch/app.py", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and message in lines[-1], (args, result.stderr[-1500:])
