"""Numpy-only synthetic captioned music: a fast, deterministic fallback dataset for unit tests.

It renders the same generated material as the demo dataset
(:mod:`stable_audio_jax.demo_corpus.generated_music`: scales, arpeggios, chord progressions, drum
grooves, small bands) with simple synthesisers instead of the soundfont: additive sine / saw /
square oscillators with ADSR envelopes, a pitch-drop kick, noise snare and high-passed-noise hats,
constant-power pan and an optional short reverb. It needs neither music21 nor tinysoundfont.
Captions come from the generator parameters, and the on-disk layout (``audio/*.flac`` +
``train.jsonl`` / ``valid.jsonl``, :mod:`stable_audio_jax.demo_corpus.manifest`) matches the demo
dataset.

Audio arrays are float32 ``[num_samples, 2]`` (channels last).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from stable_audio_jax.demo_corpus.audio_effects import add_reverb, finish_clip
from stable_audio_jax.demo_corpus.captions import format_caption
from stable_audio_jax.demo_corpus.generated_music import (
    CLAP,
    CRASH,
    KICK,
    OPEN_HAT,
    RIDE,
    SIDE_STICK,
    SNARE,
    Arrangement,
    generate_arrangement,
)
from stable_audio_jax.demo_corpus.manifest import write_dataset

WAVEFORMS = ("sine", "saw", "square")
_ROLE_NAMES = {"lead": "lead", "harmony": "pad", "arp": "pluck", "bass": "bass"}
_MAX_HARMONICS = 12  # enough brightness for a test signal, and keeps rendering fast


def oscillator(waveform: str, frequency: float, num_samples: int, sample_rate: int) -> np.ndarray:
    """Band-limited additive oscillator. Returns float32 ``[num_samples]`` with peak about 1."""
    num_harmonics = max(1, min(_MAX_HARMONICS, int(0.5 * sample_rate / frequency)))
    if waveform == "sine":
        k = np.array([1.0])
    elif waveform == "saw":
        k = np.arange(1, num_harmonics + 1, dtype=np.float64)
    elif waveform == "square":
        k = np.arange(1, num_harmonics + 1, 2, dtype=np.float64)  # odd harmonics only
    else:
        raise ValueError(f"unknown waveform {waveform!r}")
    phase = 2 * np.pi * frequency * np.arange(num_samples) / sample_rate
    wave = (np.sin(k[:, None] * phase[None, :]) / k[:, None]).sum(axis=0)
    return (wave / (np.max(np.abs(wave)) + 1e-9)).astype(np.float32)


def adsr(
    hold_samples: int, sample_rate: int, attack: float, decay: float, sustain: float, release: float
) -> np.ndarray:
    """ADSR envelope ``[hold_samples + release_samples]``: the note is held for ``hold_samples``."""
    a = max(1, min(int(attack * sample_rate), hold_samples))
    d = max(1, min(int(decay * sample_rate), hold_samples - a)) if hold_samples > a else 0
    held = np.full(hold_samples, sustain, np.float32)
    held[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    held[a : a + d] = np.linspace(1.0, sustain, d, endpoint=False)
    level = held[-1] if hold_samples else 0.0
    tail = np.linspace(level, 0.0, max(1, int(release * sample_rate)), dtype=np.float32)
    return np.concatenate([held, tail])


@dataclasses.dataclass(frozen=True)
class _Voice:
    waveform: str
    attack: float
    decay: float
    sustain: float
    release: float
    pan: float  # -1 (left) .. 1 (right)


def _random_voice(rng: np.random.Generator, role: str) -> _Voice:
    plucked = role in ("arp", "bass")
    return _Voice(
        waveform=WAVEFORMS[int(rng.integers(len(WAVEFORMS)))],
        attack=float(rng.uniform(0.002, 0.01 if plucked else 0.08)),
        decay=float(rng.uniform(0.05, 0.3)),
        sustain=float(rng.uniform(0.2, 0.5) if plucked else rng.uniform(0.5, 0.9)),
        release=float(rng.uniform(0.05, 0.4)),
        pan=float(rng.uniform(-0.25, 0.25) if role == "bass" else rng.uniform(-0.8, 0.8)),
    )


def _exp_decay(num_samples: int, sample_rate: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(num_samples) / (tau * sample_rate)).astype(np.float32)


def _highpassed_noise(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    return np.diff(rng.standard_normal(num_samples + 2), n=2).astype(np.float32) / 4  # 2nd difference ~ HPF


def drum_hit(key: int, rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, float]:
    """A synthesised GM percussion sound: returns (mono float32 ``[n]``, pan in [-1, 1])."""
    if key in (KICK, 35):  # exponential pitch drop from ~150 Hz to ~50 Hz
        n = int(0.35 * sample_rate)
        freq = 50.0 + 100.0 * _exp_decay(n, sample_rate, 0.03)
        return np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * _exp_decay(n, sample_rate, 0.15), 0.0
    if key in (SNARE, CLAP, 40):  # noise burst plus a body tone
        n = int(0.25 * sample_rate)
        tone = np.sin(2 * np.pi * 185.0 * np.arange(n) / sample_rate) * _exp_decay(n, sample_rate, 0.05)
        return 0.7 * _highpassed_noise(rng, n) * _exp_decay(n, sample_rate, 0.08) + 0.5 * tone, 0.05
    if key == SIDE_STICK:
        n = int(0.06 * sample_rate)
        click = np.sin(2 * np.pi * 900.0 * np.arange(n) / sample_rate) * _exp_decay(n, sample_rate, 0.01)
        return click + 0.3 * _highpassed_noise(rng, n) * _exp_decay(n, sample_rate, 0.004), -0.1
    if key in (CRASH, RIDE, 53, 57, 59):  # long cymbal wash
        n = int(1.2 * sample_rate)
        return 0.5 * _highpassed_noise(rng, n) * _exp_decay(n, sample_rate, 0.4), -0.35
    open_hat = key == OPEN_HAT
    n = int((0.4 if open_hat else 0.08) * sample_rate)
    return 0.6 * _highpassed_noise(rng, n) * _exp_decay(n, sample_rate, 0.12 if open_hat else 0.02), 0.35


def _pan_gains(pan: float) -> np.ndarray:
    """Constant-power pan gains ``[2]`` (left, right)."""
    theta = (pan + 1.0) * np.pi / 4
    return np.array([np.cos(theta), np.sin(theta)], np.float32)


def render_arrangement(
    arrangement: Arrangement, rng: np.random.Generator, num_samples: int, sample_rate: int
) -> tuple[np.ndarray, list[str]]:
    """Renders an arrangement with numpy synths into ``[num_samples, 2]``; also returns instrument names."""
    out = np.zeros((num_samples, 2), np.float32)
    voices = [None if t.role == "drums" else _random_voice(rng, t.role) for t in arrangement.tracks]
    for note in sorted(arrangement.notes, key=lambda n: (n.start, n.track, n.pitch)):
        start = int(note.start * sample_rate)
        if start >= num_samples:
            continue
        voice = voices[note.track]
        if voice is None:
            sound, pan = drum_hit(note.pitch, rng, sample_rate)
        else:
            hold = max(1, int(note.duration * sample_rate))
            env = adsr(hold, sample_rate, voice.attack, voice.decay, voice.sustain, voice.release)
            frequency = 440.0 * 2.0 ** ((note.pitch - 69) / 12)
            sound, pan = oscillator(voice.waveform, frequency, env.shape[0], sample_rate) * env, voice.pan
        sound = sound[: num_samples - start] * (note.velocity / 127.0) * 0.3
        out[start : start + sound.shape[0]] += sound[:, None] * _pan_gains(pan)[None, :]
    names = []
    for track, voice in zip(arrangement.tracks, voices):
        names.append("drum machine" if voice is None else f"{voice.waveform} {_ROLE_NAMES[track.role]}")
    return out, list(dict.fromkeys(sorted(names, key=lambda n: n == "drum machine")))


def synth_clip(rng: np.random.Generator, seconds: float, sample_rate: int = 44100) -> tuple[np.ndarray, dict]:
    """One synthetic captioned clip.

    Returns:
      audio: float32 ``[round(seconds * sample_rate), 2]`` (channels last), peak -1 dBFS, in [-1, 1].
      metadata: generator parameters plus ``"caption"``, ``"instruments"``, ``"ambience"``, ``"source"``.
    """
    num_samples = max(1, int(round(seconds * sample_rate)))
    fit = bool(rng.random() < 0.4)
    arrangement = generate_arrangement(rng, max(0.25, seconds - 0.5) if fit else seconds, fit=fit)
    audio, names = render_arrangement(arrangement, rng, num_samples, sample_rate)
    ambience = "dry"
    if rng.random() < 0.5:  # optional short room reverb
        rt60, wet = float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.1, 0.3))
        audio = add_reverb(audio, sample_rate, rng, rt60, wet)
        ambience = "roomy"
    audio = finish_clip(audio, sample_rate, num_samples, num_samples)
    metadata: dict[str, Any] = {k: v for k, v in arrangement.info.items() if k != "kit"}  # no GM kits here
    metadata.update(source="synthetic", instruments=names, ambience=ambience)
    metadata["caption"] = format_caption(rng, metadata)
    return audio, metadata


def write_synthetic_dataset(
    output_dir: str | os.PathLike,
    num_clips: int = 8,
    *,
    seed: int = 0,
    min_seconds: float = 0.5,
    max_seconds: float = 3.0,
    sample_rate: int = 44100,
) -> dict:
    """Writes a synthetic dataset with the demo layout (``audio/*.flac``, ``train.jsonl``, ``valid.jsonl``).

    One clip in eight (rounded down) goes to ``valid.jsonl``, which may therefore be empty.
    Returns the same kind of summary dict as ``render_demo_dataset``.
    """
    return write_dataset(
        output_dir,
        num_clips,
        lambda rng, index, target: synth_clip(rng, target, sample_rate),
        seed=seed,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        sample_rate=sample_rate,
        num_valid=num_clips // 8,
        desc="synthetic clips",
    )
