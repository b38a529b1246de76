"""music21 corpus pieces: selection, re-orchestration with General MIDI instruments, rendering.

Pieces come from music21's bundled score corpus (Bach chorales, fiddle tunes, folk songs,
Renaissance polyphony). Each is given random GM instruments, tempo, transposition and pan, then
rendered through the soundfont (:mod:`stable_audio_jax.demo_corpus.soundfont`). music21 and
tinysoundfont are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import warnings
from typing import Any, Sequence

import numpy as np

from stable_audio_jax.demo_corpus.generated_music import GMInstrument, choose, key_name, pick_instrument
from stable_audio_jax.demo_corpus.soundfont import render_events

MIN_CORPUS_BPM, MAX_CORPUS_BPM = 60, 140


@dataclasses.dataclass(frozen=True)
class CorpusCollection:
    """A folder of music21's core corpus, its draw weight and caption defaults."""

    name: str  # folder of music21's core corpus
    weight: float
    genre: str
    composer: str | None


CORPUS_COLLECTIONS: tuple[CorpusCollection, ...] = (
    CorpusCollection("bach", 0.44, "Baroque chorale", "J.S. Bach"),
    CorpusCollection("ryansMammoth", 0.17, "fiddle tune", None),
    CorpusCollection("oneills1850", 0.12, "Irish tune", None),
    CorpusCollection("essenFolksong", 0.15, "folk song", None),
    CorpusCollection("palestrina", 0.06, "Renaissance mass movement", "Palestrina"),
    CorpusCollection("monteverdi", 0.06, "Renaissance madrigal", "Claudio Monteverdi"),
)
# Essen collection files -> genre (test and variant files are left out).
_ESSEN_GENRES = {
    "altdeu": "German folk song",
    "ballad": "German ballad",
    "boehme": "German folk song",
    "dva": "German folk song",
    "erk": "German folk song",
    "fink": "German folk song",
    "kinder": "German children's song",
    "zuccal": "German folk song",
    "han": "Chinese folk song",
    "irl": "Irish folk song",
    "lot": "Lorraine folk song",
    "lux": "Luxembourgish folk song",
}
_DANCES = (
    "slip jig",
    "jig",
    "reel",
    "hornpipe",
    "strathspey",
    "polka",
    "waltz",
    "march",
    "clog",
    "schottische",
    "quadrille",
    "set dance",
    "slide",
    "air",
)
_MAX_PARTS = 8


@dataclasses.dataclass(frozen=True)
class CorpusPiece:
    """One score of a collection (one tune of a multi-tune ABC file)."""

    collection: CorpusCollection
    path: str  # corpus name ("bach/bwv66.6") or absolute path
    number: int | None  # tune number inside a multi-tune ABC file

    @property
    def piece_id(self) -> str:
        """Stable id such as ``"bach/bwv66.6"`` or ``"oneills1850/0001-0050#12"``."""
        stem = os.path.splitext(os.path.basename(self.path))[0]
        return f"{self.collection.name}/{stem}" + (f"#{self.number}" if self.number is not None else "")


@functools.lru_cache(maxsize=None)
def _collection_files(name: str) -> tuple[str, ...]:
    """Sorted score paths of a collection (only the 371 chorales for Bach)."""
    from music21 import corpus

    if name == "bach":  # the 371 chorales, not Bach's other bundled works
        return tuple(corpus.chorales.Iterator(returnType="filename"))
    paths = sorted(str(p) for p in corpus.corpora.CoreCorpus().getWorkList(name))
    if name == "essenFolksong":
        paths = [p for p in paths if _essen_genre(p) is not None]
    return tuple(paths)


def _essen_genre(path: str) -> str | None:
    """Genre of an Essen folk-song file from its name; None for test and variant files."""
    stem = os.path.basename(path)
    return next((g for prefix, g in _ESSEN_GENRES.items() if stem.startswith(prefix)), None)


@functools.lru_cache(maxsize=None)
def _abc_tune_numbers(path: str) -> tuple[int, ...]:
    """Reference numbers (``X:`` fields) of the tunes in an ABC file; () for other formats."""
    if not path.endswith(".abc"):
        return ()
    with open(path, encoding="latin-1") as f:
        numbers = re.findall(r"^X:\s*(\d+)", f.read(), flags=re.MULTILINE)
    return tuple(dict.fromkeys(int(n) for n in numbers))


def draw_piece(rng: np.random.Generator, used: set[str]) -> CorpusPiece:
    """Draws a corpus piece not in ``used`` (so train and valid never share a piece)."""
    weights = np.array([c.weight for c in CORPUS_COLLECTIONS])
    for _ in range(100):
        collection = CORPUS_COLLECTIONS[int(rng.choice(len(weights), p=weights / weights.sum()))]
        path = choose(rng, _collection_files(collection.name))
        numbers = _abc_tune_numbers(path)
        piece = CorpusPiece(collection, path, choose(rng, numbers) if len(numbers) > 1 else None)
        if piece.piece_id not in used:
            used.add(piece.piece_id)
            return piece
    raise RuntimeError("could not draw an unused corpus piece")


def _piece_genre(piece: CorpusPiece, title: str) -> str:
    """Caption genre: the collection's, refined by Essen file or dance type in the tune title."""
    collection = piece.collection
    if collection.name == "essenFolksong":
        return _essen_genre(piece.path) or collection.genre
    if collection.name in ("ryansMammoth", "oneills1850"):
        lowered = title.lower()
        dance = next((d for d in _DANCES if re.search(rf"\b{d}s?\b", lowered)), None)
        prefix = "fiddle" if collection.name == "ryansMammoth" else "Irish"
        return f"{prefix} {dance}" if dance else collection.genre
    return collection.genre


def _assign_instruments(rng: np.random.Generator, ranges: Sequence[tuple[int, int] | None]) -> list[GMInstrument]:
    """One GM instrument per part; sometimes a single keyboard/ensemble plays all parts."""
    known = [r for r in ranges if r is not None]
    low = min((r[0] for r in known), default=60)
    high = max((r[1] for r in known), default=72)
    if len(ranges) > 1 and rng.random() < 0.25:
        return [pick_instrument(rng, ("harmony",), low, high)] * len(ranges)
    chosen: list[GMInstrument] = []
    for r in ranges:
        # Distinct programs keep every part on its own MIDI channel (music21 shares a channel
        # between parts with the same program), so each part gets its own pan.
        inst = pick_instrument(rng, ("lead", "bass"), *(r if r else (None, None)), exclude=[c.program for c in chosen])
        chosen.append(inst)
    return chosen


def render_corpus_piece(
    piece: CorpusPiece, rng: np.random.Generator, max_samples: int, sample_rate: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Parses, re-orchestrates and renders one corpus piece.

    Draws tempo in ``[MIN_CORPUS_BPM, MAX_CORPUS_BPM]``, a transposition of up to a tritone that
    keeps every part in a playable range, one GM instrument per part and per-channel pan/volume.

    Returns:
      audio: float32 ``[num_samples, 2]`` with ``num_samples <= max_samples`` (not yet finished).
      metadata: caption-ready fields (``genre``, ``composer``, ``instruments``, ``key``, ``bpm``, ...).
    Raises:
      Exception: whatever music21 raises on pieces it cannot parse or expand; callers skip those.
    """
    from music21 import corpus, instrument, meter, stream, tempo
    from music21 import midi as m21_midi
    from tinysoundfont import midi as tsf_midi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ABC/Humdrum parsers warn about harmless oddities
        score = corpus.parse(piece.path, number=piece.number, forceSource=True)  # no pickle cache
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    if not 1 <= len(score.parts) <= _MAX_PARTS:
        raise ValueError(f"{len(score.parts)} parts")
    bpm = int(rng.integers(MIN_CORPUS_BPM, MAX_CORPUS_BPM + 1))
    time_sig = score.recurse().getElementsByClass(meter.TimeSignature).first()
    bar_ql = float(time_sig.barDuration.quarterLength) if time_sig is not None else 4.0
    needed_ql = max_samples / sample_rate * bpm / 60.0
    if score.highestTime > 2 * needed_ql + 8 * bar_ql:
        # Long Renaissance pieces: writing MIDI for all of it is the slow step, so keep the bars we need.
        score = score.measures(0, math.ceil(needed_ql / bar_ql) + 2)
    parts = list(score.parts)
    key = score.analyze("key")
    ranges = []
    for part in parts:
        midis = [p.midi for p in part.pitches]
        ranges.append((min(midis), max(midis)) if midis else None)
    low = min((r[0] for r in ranges if r), default=60)
    high = max((r[1] for r in ranges if r), default=72)
    shifts = [s for s in range(-6, 7) if low + s >= 28 and high + s <= 100] or [0]
    shift = choose(rng, shifts)
    instruments = _assign_instruments(rng, [(r[0] + shift, r[1] + shift) if r else None for r in ranges])
    for part, inst in zip(parts, instruments):
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            old.activeSite.remove(old)  # else music21 writes every part on one channel
        part.insert(0, instrument.instrumentFromMidiProgram(inst.program))
    for mark in list(score.recurse().getElementsByClass(tempo.TempoIndication)):
        mark.activeSite.remove(mark)
    parts[0].insert(0, tempo.MetronomeMark(number=bpm))
    midi_bytes = m21_midi.translate.streamToMidiFile(score).writestr()  # expands repeats; may raise
    events = tsf_midi.load_memory(midi_bytes, persistent=False)
    first_note = min((e.t for e in events if isinstance(e.action, tsf_midi.NoteOn)), default=0.0)
    for e in events:
        e.t = max(0.0, e.t - first_note)  # no leading silence
        if isinstance(e.action, (tsf_midi.NoteOn, tsf_midi.NoteOff)):
            e.action.key = int(np.clip(e.action.key + shift, 0, 127))
    audio = render_events(events, rng, max_samples, sample_rate)
    title = (score.metadata.title if score.metadata is not None else None) or ""
    names = list(dict.fromkeys(i.name for i in instruments))
    return audio, {
        "source": "corpus",
        "kind": "corpus",
        "collection": piece.collection.name,
        "piece": piece.piece_id,
        "title": title or None,
        "genre": _piece_genre(piece, title),
        "composer": piece.collection.composer,
        "instruments": names,
        "key": key_name(key.tonic.pitchClass + shift, "minor" if key.mode == "minor" else "major"),
        "bpm": bpm,
        "time_signature": time_sig.ratioString if time_sig is not None else None,
        "num_parts": len(parts),
        "transpose": shift,
    }
