"""Offline captioned music dataset: music21 scores and generated material through a GM soundfont.

Half the clips come from music21's bundled score corpus (Bach chorales, fiddle tunes, folk songs,
Renaissance polyphony; :mod:`~stable_audio_jax.demo_corpus.corpus_music`) with randomised General
MIDI instruments, tempo, transposition and pan; the other half are generated (scales, arpeggios,
chord progressions, drum grooves, small bands; :mod:`~stable_audio_jax.demo_corpus.generated_music`),
so that captions vary and tempo/timing are easy to learn. Everything is rendered with
tinysoundfont through the ``TimGM6mb.sf2`` soundfont shipped inside the ``pretty_midi`` wheel
(:mod:`~stable_audio_jax.demo_corpus.soundfont`), so no network and no system packages are needed.

This module is the recipe for one clip (source, ambience, cut/fade/normalise via
:mod:`~stable_audio_jax.demo_corpus.audio_effects`, caption via
:mod:`~stable_audio_jax.demo_corpus.captions`); :mod:`~stable_audio_jax.demo_corpus.manifest` writes the
``audio/*.flac`` + ``train.jsonl`` / ``valid.jsonl`` layout. Audio arrays are float32
``[num_samples, 2]`` (channels last). Every random choice comes from a ``numpy.random.Generator``
seeded with ``(seed, clip_index)``, so the same seed gives identical files and captions.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np

from stable_audio_jax.demo_corpus.audio_effects import add_reverb, finish_clip
from stable_audio_jax.demo_corpus.captions import format_caption
from stable_audio_jax.demo_corpus.corpus_music import draw_piece, render_corpus_piece
from stable_audio_jax.demo_corpus.generated_music import choose, generate_arrangement, track_names
from stable_audio_jax.demo_corpus.manifest import num_valid_clips, write_dataset
from stable_audio_jax.demo_corpus.soundfont import RELEASE_TAIL_SECONDS, arrangement_events, render_events

logger = logging.getLogger(__name__)

# (caption word, RT60 range in seconds, wet-gain range). Even "dry" gets a faint room so that
# single-instrument renders are not perfectly mono.
AMBIENCES: tuple[tuple[str, tuple[float, float], tuple[float, float]], ...] = (
    ("dry", (0.15, 0.3), (0.03, 0.08)),
    ("roomy", (0.4, 0.9), (0.12, 0.25)),
    ("spacious", (1.4, 2.5), (0.18, 0.35)),
)


def random_ambience(rng: np.random.Generator, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str]:
    """Applies a randomly chosen :data:`AMBIENCES` entry (reverb with drawn RT60 and wet gain).

    Args:
      audio: float32 ``[num_samples, 2]``.
    Returns:
      (float32 ``[num_samples, 2]``, the ambience's caption word).
    """
    name, rt60, wet = choose(rng, AMBIENCES)
    return add_reverb(audio, sample_rate, rng, float(rng.uniform(*rt60)), float(rng.uniform(*wet))), name


class _DemoClipMaker:
    """Makes demo clips: even indices from the corpus, odd ones generated (about half each)."""

    def __init__(self, sample_rate: int, min_seconds: float, corpus_attempts: int = 3):
        self.sample_rate = sample_rate
        self.min_seconds = min_seconds
        self.corpus_attempts = corpus_attempts
        self.used_pieces: set[str] = set()
        self.failures: list[str] = []

    def __call__(
        self, rng: np.random.Generator, index: int, target_seconds: float
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One finished clip: (float32 ``[num_samples, 2]``, metadata with ``"caption"``).

        ``num_samples`` lies in ``[ceil(min_seconds * sample_rate), round(target_seconds * sample_rate)]``.
        """
        max_samples = int(round(target_seconds * self.sample_rate))
        result = None
        if index % 2 == 0:
            for _ in range(self.corpus_attempts):
                piece = draw_piece(rng, self.used_pieces)
                try:
                    result = render_corpus_piece(piece, rng, max_samples, self.sample_rate)
                    break
                except Exception as e:  # some pieces fail to parse or expand repeats: skip them
                    logger.warning("Skipping corpus piece %s: %s: %s", piece.piece_id, type(e).__name__, e)
                    self.failures.append(piece.piece_id)
        if result is None:  # generated clip (or every corpus attempt failed)
            # A natural ending (fit) must finish inside the clip, release tail included.
            fit = bool(rng.random() < 0.4)
            seconds = max(0.5, target_seconds - RELEASE_TAIL_SECONDS) if fit else target_seconds
            arrangement = generate_arrangement(rng, seconds, fit=fit)
            audio = render_events(arrangement_events(arrangement), rng, max_samples, self.sample_rate)
            result = audio, {"source": "generated", **arrangement.info, "instruments": track_names(arrangement.tracks)}
        audio, metadata = result
        audio, metadata["ambience"] = random_ambience(rng, audio, self.sample_rate)
        min_samples = math.ceil(self.min_seconds * self.sample_rate)
        audio = finish_clip(audio, self.sample_rate, max_samples, min_samples)
        metadata["caption"] = format_caption(rng, metadata)
        return audio, metadata


def render_demo_dataset(
    output_dir: str | os.PathLike,
    num_clips: int = 48,
    *,
    seed: int = 0,
    min_seconds: float = 2.0,
    max_seconds: float = 30.0,
    sample_rate: int = 44100,
    valid_fraction: float = 0.125,
    progress: bool = True,
) -> dict:
    """Renders the offline demo dataset (about half corpus pieces, half generated material).

    Writes ``output_dir/audio/clip_XXXX.flac`` (stereo, ``sample_rate``, 24-bit FLAC, durations in
    ``[min_seconds, max_seconds]``) and ``train.jsonl`` / ``valid.jsonl`` manifests whose lines hold
    ``"path"`` (relative to the manifest), ``"caption"`` and metadata (``source``, ``genre``,
    ``composer``, ``instruments``, ``key``, ``bpm``, ``time_signature``, ``duration_seconds``, ...).
    The same ``seed`` gives identical files and captions.

    Returns:
      Summary dict: clip counts and seconds per split, sources, corpus failures, elapsed time.
    """
    start = time.perf_counter()
    maker = _DemoClipMaker(sample_rate, min_seconds)
    summary = write_dataset(
        output_dir,
        num_clips,
        maker,
        seed=seed,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        sample_rate=sample_rate,
        num_valid=num_valid_clips(num_clips, valid_fraction),
        progress=progress,
        desc="demo clips",
    )
    summary.update(
        failures=len(maker.failures),
        failed_pieces=maker.failures,
        elapsed_seconds=round(time.perf_counter() - start, 2),
    )
    if maker.failures:
        logger.warning("%d corpus pieces failed and were replaced", len(maker.failures))
    return summary
