"""Training-free inpainting (`diffusion/inpainting.py`): regions, masks, the replacement
wrappers on every sampler, and `AudioGenerator.generate(inpaint_audio=...)` on converted
stable-audio-tools checkpoints (SAO's v-model and SAO Small's rectified flow)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from stable_audio_jax.convert import sao_checkpoint
from stable_audio_jax.diffusion import flow_samplers, inpainting, samplers, schedule
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference.continuation import continue_audio
from stable_audio_jax.inference.generate import AudioGenerator
from stable_audio_jax.input_pipeline.audio_io import write_wav
from stable_audio_jax.metrics.spectral_distance import log_spectral_distance
from tests.bad_input import Case, check_cases, run_script
from tests.fixture_paths import CHECKPOINT, FIXTURES, MODEL_CONFIG, T5_DIR

OPEN_SMALL = os.path.join(FIXTURES, "sao_open_small")


def test_regions_are_checked_sorted_and_merged():
    assert inpainting.check_regions([(3, 4), (1, 2), (1.5, 2.5), (4, 5)], 6) == [(1.0, 2.5), (3.0, 5.0)]
    for regions, message in [
        ([], "no inpainting region"),
        ([(2, 2)], "start < end"),
        ([(3, 1)], "start < end"),
        ([(-1, 1)], "outside the audio"),
        ([(5, 7)], "outside the audio"),
    ]:
        with pytest.raises(UserError, match=message):
            inpainting.check_regions(regions, 6)


def test_region_mask_ramps_inside_the_region_only():
    mask = inpainting.region_mask([(1.0, 2.0)], frames=30, frame_seconds=0.1, crossfade_frames=3)
    assert np.all(mask[:10] == 0) and np.all(mask[20:] == 0)  # outside: kept exactly
    np.testing.assert_allclose(mask[10:14], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(mask[16:20], [1.0, 0.75, 0.5, 0.25])
    # At the window's edges there is nothing to blend with: no ramp.
    edge = inpainting.region_mask([(0.0, 0.5)], frames=30, frame_seconds=0.1, crossfade_frames=3)
    assert edge[0] == 1.0 and edge[4] == 0.25 and np.all(edge[5:] == 0)
    hard = inpainting.region_mask([(1.05, 1.31)], frames=30, frame_seconds=0.1)
    assert np.flatnonzero(hard).tolist() == [10, 11, 12, 13]  # every frame a region touches


def _toy_problem(batch: int = 2, frames: int = 24, channels: int = 3):
    keys = jax.random.split(jax.random.key(0), 3)
    known = jax.random.normal(keys[0], (batch, frames, channels))
    noise = jax.random.normal(keys[1], (batch, frames, channels))
    mask = jnp.asarray(inpainting.region_mask([(8, 16)], frames, 1.0, crossfade_frames=2))[None, :, None]
    weights = 0.5 * jax.random.normal(keys[2], (channels, channels))
    return known, noise, jnp.broadcast_to(mask, (batch, frames, 1)), weights


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "dpmpp_3m_sde", "heun", "lms", "dpmpp_2s_ancestral"])
def test_every_v_sampler_keeps_the_known_frames(sampler):
    known, noise, mask, w = _toy_problem()

    def denoiser(x, sigma):  # any smooth network stands in for the model
        return jnp.tanh(x @ w) / (1.0 + schedule_level(sigma, x))

    sigmas = schedule.polyexponential_sigmas(12, 0.03, 80.0)
    wrapped = inpainting.masked_denoiser(denoiser, known, noise, mask)
    x_init = jnp.where(mask > 0, noise * 80.0, known + noise * 80.0)
    raw = samplers.sample(wrapped, x_init, sigmas, sampler=sampler, rng=jax.random.key(1))
    out = inpainting.blend(raw, known, mask)
    keep = np.asarray(mask[..., 0] == 0)
    np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(known)[keep])
    # Replacement keeps the frames on their own path: even before the blend they land on
    # the known latents (up to the last step's sigma_min).
    assert np.abs(np.asarray(raw - known))[keep].max() < 0.1
    inside = np.asarray(mask[..., 0] == 1)
    assert np.abs(np.asarray(out - known))[inside].mean() > 0.3  # the region is regenerated


def schedule_level(sigma, x):
    return jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))[:, None, None]


@pytest.mark.parametrize("sampler", ["euler", "rk4", "dpmpp", "pingpong"])
def test_every_flow_sampler_keeps_the_known_frames(sampler):
    known, noise, mask, w = _toy_problem()
    wrapped = inpainting.masked_velocity(lambda x, t: jnp.tanh(x @ w), known, noise, mask)
    ts = flow_samplers.sampler_times(sampler, 8)
    raw = flow_samplers.sample(wrapped, noise, ts, sampler=sampler, rng=jax.random.key(2))
    out = inpainting.blend(raw, known, mask)
    keep = np.asarray(mask[..., 0] == 0)
    np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(known)[keep])
    if sampler != "pingpong":  # pingpong re-noises with fresh noise; the next input replaces it
        np.testing.assert_allclose(np.asarray(raw)[keep], np.asarray(known)[keep], atol=1e-5)
    assert np.abs(np.asarray(out - known))[np.asarray(mask[..., 0] == 1)].mean() > 0.3


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[str, AudioGenerator]]:
    """The tiny SAO (v) and SAO Small (rectified flow) checkpoints, converted and loaded."""
    out = {}
    for name, (checkpoint, model_config) in {
        "v": (CHECKPOINT, MODEL_CONFIG),
        "flow": (os.path.join(OPEN_SMALL, "model.safetensors"), os.path.join(OPEN_SMALL, "model_config.json")),
    }.items():
        target = str(tmp_path_factory.mktemp(name) / "pretrained")
        sao_checkpoint.convert_checkpoint(checkpoint, model_config, target, t5_dir=T5_DIR, log=lambda _: None)
        out[name] = (target, AudioGenerator.from_pretrained(target))
    return out


def _clip(seconds: float = 0.17, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t))[:, None].repeat(2, axis=1).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["v", "flow"])
def test_generator_keeps_the_latents_outside_the_region(converted, kind):
    generator = converted[kind][1]
    clip = _clip()
    region = (0.06, 0.12)
    kw = dict(seconds_total=0.17, steps=4, seed=5, inpaint_audio=clip, inpaint_regions=[region])
    latents = generator.generate(["a bell", "a drum"], return_latents=True, **kw)
    known = np.asarray(generator._encode_init(clip, 2, generator.window_samples))
    frame_seconds = generator.autoencoder.config.downsampling_ratio / generator.sample_rate
    mask = inpainting.region_mask([region], generator.latent_frames, frame_seconds)
    np.testing.assert_array_equal(latents[:, mask == 0], known[:, mask == 0])  # exactly the input's
    assert np.abs(latents[:, mask == 1] - known[:, mask == 1]).mean() > 0.1
    # Decoded: far from the region the audio is the VAE reconstruction of the input.
    audio = generator.generate(["a bell", "a drum"], cut=False, **kw)
    vae = generator.autoencoder
    recon = np.asarray(
        vae.apply({"params": generator.vae_params}, known / generator.latent_scale, method=type(vae).decode)
    )
    head = int(0.02 * generator.sample_rate)
    np.testing.assert_allclose(audio[:, :head], recon[:, :head], atol=1e-4 * np.abs(recon).max())
    assert np.abs(audio - recon).max() > 1e-2 * np.abs(recon).max()


@pytest.mark.slow
def test_generator_inpaints_one_clip_per_prompt(converted):
    generator = converted["v"][1]
    clips = [_clip(), -0.5 * _clip()]
    region = (0.06, 0.12)
    kw = dict(seconds_total=0.17, steps=3, seed=2, inpaint_regions=[region], return_latents=True)
    latents = generator.generate(["a bell", "a drum"], inpaint_audio=clips, **kw)
    frame_seconds = generator.autoencoder.config.downsampling_ratio / generator.sample_rate
    kept = inpainting.region_mask([region], generator.latent_frames, frame_seconds) == 0
    for row, clip in enumerate(clips):
        known = np.asarray(generator._encode_init(clip, 1, generator.window_samples))[0]
        np.testing.assert_array_equal(latents[row, kept], known[kept])
    np.testing.assert_array_equal(generator.generate(["a bell"], inpaint_audio=np.stack(clips[:1]), **kw), latents[:1])
    with pytest.raises(UserError, match="3 inpainting clips for 2 prompts"):
        generator.generate(["a bell", "a drum"], inpaint_audio=clips + clips[:1], **kw)
    # What inpainting keeps is the VAE reconstruction.
    audio = generator.generate(["a bell", "a drum"], inpaint_audio=clips, **dict(kw, return_latents=False, cut=False))
    reconstruction = generator.reconstruct(clips[1])
    assert reconstruction.shape == (generator.window_samples, 2)
    head = int(0.02 * generator.sample_rate)
    np.testing.assert_allclose(audio[1, :head], reconstruction[:head], atol=1e-4 * np.abs(reconstruction).max())


def test_log_spectral_distance_inside_and_outside_regions():
    rate = 8000
    rng = np.random.default_rng(0)
    a = rng.normal(size=(rate * 2, 2)) * 0.1
    b = a.copy()
    b[int(0.8 * rate) : int(1.2 * rate)] = rng.normal(size=(int(0.4 * rate), 2)) * 0.1
    region = [(0.8, 1.2)]
    kw = dict(n_fft=256)
    assert log_spectral_distance(a, a, rate, **kw) == 0.0
    assert log_spectral_distance(a, b, rate, regions=region, margin=0.02, **kw) == 0.0
    inside = log_spectral_distance(a, b, rate, regions=region, inside=True, **kw)
    assert inside > 3.0  # independent noise: several dB per bin
    # A 6 dB level change moves every bin by 6 dB (but the few near the 1e-10 power floor).
    assert abs(log_spectral_distance(a, 2 * a, rate, **kw) - 20 * np.log10(2)) < 1e-3
    with pytest.raises(ValueError, match="no STFT frame"):
        log_spectral_distance(a, b, rate, regions=[(0.0, 2.0)], **kw)


@pytest.mark.slow
def test_generator_inpainting_bad_inputs(converted):
    generator = converted["flow"][1]
    clip = _clip(0.1)
    kw = dict(seconds_total=0.1, steps=2)
    with pytest.raises(UserError, match="outside the audio"):
        generator.generate(["x"], inpaint_audio=clip, inpaint_regions=[(0.05, 0.15)], **kw)
    with pytest.raises(UserError, match="both the audio and its regions"):
        generator.generate(["x"], inpaint_audio=clip, **kw)
    with pytest.raises(UserError, match="cannot be combined"):
        generator.generate(["x"], inpaint_audio=clip, inpaint_regions=[(0, 0.05)], init_audio=clip, **kw)


@pytest.mark.e2e
def test_sample_script_inpaints_regions_and_rejects_bad_ones(converted, tmp_path):
    pretrained = converted["flow"][0]
    source, text = str(tmp_path / "clip.wav"), str(tmp_path / "notes.wav")
    write_wav(source, _clip()[:, :1], 22050)  # mono at 22.05 kHz: converted on the way in
    with open(text, "w") as f:
        f.write("not audio")
    out = tmp_path / "samples"
    common = [f"--pretrained={pretrained}", "--prompt=a bell", "--seconds_total=0.15", "--steps=2"]
    result = run_script(
        "launch/sample.py",
        *common,
        f"--inpaint_audio={source}",
        "--inpaint_region=0.02:0.05",
        "--inpaint_region=0.04:0.08",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "settings.json") as f:
        settings = json.load(f)
    assert settings["inpaint_regions"] == [[0.02, 0.05], [0.04, 0.08]] and len(settings["files"]) == 1
    continued = tmp_path / "continued"
    result = run_script(
        "launch/sample.py",
        *common[:2],
        "--seconds_total=0.4",
        "--steps=2",
        f"--continue_audio={source}",
        f"--output_dir={continued}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = sf.info(str(continued / "000_a_bell.wav"))
    assert info.frames == round(0.4 * 44100)
    bad = str(tmp_path / "bad")
    inpaint = lambda *flags: common + [f"--output_dir={bad}", *flags]  # noqa: E731
    check_cases(
        [
            Case(
                "launch/sample.py",
                inpaint(f"--inpaint_audio={source}", "--inpaint_region=0.1:0.05"),
                ["start < end"],
                [bad],
            ),
            Case(
                "launch/sample.py",
                inpaint(f"--inpaint_audio={source}", "--inpaint_region=0.1:0.5"),
                ["outside the audio"],
                [bad],
            ),
            Case(
                "launch/sample.py",
                inpaint(f"--inpaint_audio={source}", "--inpaint_region=4-8"),
                ["--inpaint_region=4-8"],
                [bad],
            ),
            Case(
                "launch/sample.py", inpaint(f"--inpaint_audio={text}", "--inpaint_region=0:0.05"), ["notes.wav"], [bad]
            ),
            Case("launch/sample.py", inpaint("--inpaint_region=0:0.05"), ["--inpaint_audio"], [bad]),
            Case("launch/sample.py", [*common[:2], f"--continue_audio={source}"], ["--seconds_total"]),
            Case(
                "launch/sample.py",
                inpaint(f"--continue_audio={source}", f"--inpaint_audio={source}", "--inpaint_region=0:0.05"),
                ["--continue_audio"],
                [bad],
            ),
            Case(
                "launch/sample.py",
                [*common[:2], "--seconds_total=0.1", f"--continue_audio={source}", f"--output_dir={bad}"],
                ["longer than the audio"],
                [bad],
            ),
            Case(
                "launch/sample.py",
                inpaint(f"--inpaint_audio={tmp_path}/missing.wav", "--inpaint_region=0:1"),
                ["missing.wav"],
                [bad],
            ),
        ]
    )


class _Recording:
    """The generator, with every `generate` call's keyword arguments recorded."""

    def __init__(self, generator: AudioGenerator):
        self.generator, self.calls = generator, []

    def __getattr__(self, name):
        return getattr(self.generator, name)

    def generate(self, prompts, **kwargs):
        self.calls.append(kwargs)
        return self.generator.generate(prompts, **kwargs)


def _max_jump_near(audio: np.ndarray, joins: list[int], reach: int = 64) -> tuple[float, float]:
    """(largest sample-to-sample step within `reach` of a join, the output's 99th-percentile step)."""
    steps = np.abs(np.diff(audio.astype(np.float64), axis=0)).max(axis=-1)
    return max(steps[max(0, j - reach) : j + reach].max() for j in joins), float(np.percentile(steps, 99))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["v", "flow"])
def test_continuation_past_the_window(converted, kind):
    generator = _Recording(converted[kind][1])
    rate, window = generator.sample_rate, generator.window_samples  # 8192 samples, 0.19 s
    clip = _clip(0.1)
    out = continue_audio(generator, "a bell", clip, seconds_total=0.5, steps=3)
    assert out.shape == (round(0.5 * rate), 2)
    np.testing.assert_array_equal(out[: len(clip) - int(0.05 * rate)], clip[: len(clip) - int(0.05 * rate)])
    # Each window keeps the last half window and says where it lies in the 0.5 s file.
    starts = [call["seconds_start"] for call in generator.calls]
    assert len(starts) >= 3 and starts[0] == pytest.approx((len(clip) - window // 2) / rate)
    assert all(call["seconds_total"] == pytest.approx(0.5) for call in generator.calls)
    assert all(call["inpaint_regions"][0][0] == pytest.approx(window // 2 / rate) for call in generator.calls)
    joins = [len(clip)] + [round(s * rate) + window for s in starts[:-1]]
    jump, typical = _max_jump_near(out, [j for j in joins if j < len(out)])
    assert jump <= 2 * typical, (jump, typical)


@pytest.mark.slow
def test_continuation_bad_inputs(converted):
    generator = converted["flow"][1]
    with pytest.raises(UserError, match="longer than the audio"):
        generator.continue_audio("x", _clip(0.1), seconds_total=0.05)
    with pytest.raises(UserError, match="shorter than the model's window"):
        generator.continue_audio("x", _clip(0.1), seconds_total=0.5, context_seconds=0.3)


def test_spectrogram_outlines_the_regions(tmp_path):
    from PIL import Image

    from stable_audio_jax.inference.generate import spectrogram_png

    clip = _clip(1.0)
    plain, marked = str(tmp_path / "plain.png"), str(tmp_path / "marked.png")
    spectrogram_png(clip, 44100, plain, "bell")
    spectrogram_png(clip, 44100, marked, "bell", regions=[(0.25, 0.5)])
    a, b = (np.asarray(Image.open(p).convert("RGB"), np.int32) for p in (plain, marked))
    assert a.shape == b.shape and np.abs(a - b).sum(axis=-1).astype(bool).mean() > 0.001
