"""Offline captioned music dataset: music21 scores and generated material through a GM soundfont.

Half the clips come from music21's bundled score corpus (Bach chorales, fiddle tunes, folk songs,
Renaissance polyphony) with randomised General MIDI instruments, tempo, transposition and pan; the
other half are generated (scales, arpeggios, chord progressions, drum grooves, small bands), so
that captions vary and tempo/timing are easy to learn. Everything is rendered with tinysoundfont
through the ``TimGM6mb.sf2`` soundfont shipped inside the ``pretty_midi`` wheel, so no network and
no system packages are needed.

On-disk layout (shared with :mod:`stable_audio_jax.datasets.synthetic`)::

    output_dir/audio/<clip_id>.flac   stereo 24-bit FLAC
    output_dir/train.jsonl            one JSON object per clip: "path" (relative), "caption", metadata
    output_dir/valid.jsonl            held-out clips (pieces not used in train)

Audio arrays are float32 ``[num_samples, 2]`` (channels last) throughout. Every random choice
comes from a ``numpy.random.Generator`` seeded with ``(seed, clip_index)``, so the same seed gives
identical files and captions.

music21 and tinysoundfont are imported lazily: the generators, caption formatting and dataset
writing in this module are also used by the numpy-only synthetic fallback.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import math
import os
import re
import time
import warnings
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

PEAK_LEVEL = 10 ** (-1 / 20)  # peak-normalise to -1 dBFS
RELEASE_TAIL_SECONDS = 1.0  # the sequencer stops at the last event; let note releases ring out
FADE_SECONDS = 0.2  # fade-out applied where a clip is cut
DRUM_CHANNEL = 9  # General MIDI percussion channel (0-based)
MIN_CORPUS_BPM, MAX_CORPUS_BPM = 60, 140

T = TypeVar("T")


def _choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    """Uniform choice that returns the Python object itself (not a numpy scalar)."""
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------------
# General MIDI instrument palette
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GMInstrument:
    """A General MIDI program, its comfortable range in MIDI note numbers, and the roles it plays.

    Roles: ``lead`` (melody / a corpus part), ``harmony`` (chords; may play every part of a
    chorale alone), ``arp`` (arpeggios), ``bass``. For drum tracks ``program`` is the GM kit.
    """

    name: str
    program: int
    low: int
    high: int
    roles: frozenset[str]


def _gm(name: str, program: int, low: int, high: int, roles: str) -> GMInstrument:
    return GMInstrument(name, program, low, high, frozenset(roles.split()))


GM_PALETTE: tuple[GMInstrument, ...] = (
    _gm("piano", 0, 21, 108, "lead harmony arp"),
    _gm("electric piano", 4, 28, 103, "lead harmony arp"),
    _gm("harpsichord", 6, 29, 89, "lead harmony arp"),
    _gm("celesta", 8, 60, 108, "lead arp"),
    _gm("glockenspiel", 9, 72, 108, "lead"),
    _gm("music box", 10, 60, 96, "arp"),
    _gm("vibraphone", 11, 53, 89, "lead harmony arp"),
    _gm("marimba", 12, 45, 96, "lead arp"),
    _gm("xylophone", 13, 65, 108, "lead"),
    _gm("organ", 16, 36, 96, "lead harmony"),
    _gm("church organ", 19, 24, 96, "lead harmony"),
    _gm("accordion", 21, 53, 89, "lead harmony"),
    _gm("harmonica", 22, 60, 96, "lead"),
    _gm("nylon-string guitar", 24, 40, 84, "lead harmony arp"),
    _gm("steel-string guitar", 25, 40, 84, "lead harmony arp"),
    _gm("jazz guitar", 26, 40, 84, "lead harmony"),
    _gm("clean electric guitar", 27, 40, 84, "lead harmony arp"),
    _gm("overdriven guitar", 29, 40, 84, "lead harmony"),
    _gm("acoustic bass", 32, 28, 55, "bass"),
    _gm("electric bass", 33, 28, 60, "bass"),
    _gm("fretless bass", 35, 28, 60, "bass"),
    _gm("synth bass", 38, 28, 60, "bass"),
    _gm("violin", 40, 55, 100, "lead"),
    _gm("viola", 41, 48, 88, "lead"),
    _gm("cello", 42, 36, 76, "lead bass"),
    _gm("contrabass", 43, 28, 67, "bass"),
    _gm("pizzicato strings", 45, 28, 96, "lead arp"),
    _gm("harp", 46, 24, 103, "lead harmony arp"),
    _gm("string ensemble", 48, 28, 96, "lead harmony"),
    _gm("slow strings", 49, 28, 96, "harmony"),
    _gm("choir", 52, 40, 84, "lead harmony"),
    _gm("trumpet", 56, 54, 86, "lead"),
    _gm("trombone", 57, 40, 72, "lead bass"),
    _gm("tuba", 58, 28, 58, "bass"),
    _gm("french horn", 60, 41, 77, "lead"),
    _gm("brass section", 61, 36, 84, "lead harmony"),
    _gm("soprano sax", 64, 56, 88, "lead"),
    _gm("alto sax", 65, 49, 81, "lead"),
    _gm("tenor sax", 66, 44, 76, "lead"),
    _gm("baritone sax", 67, 36, 69, "lead bass"),
    _gm("oboe", 68, 58, 91, "lead"),
    _gm("english horn", 69, 52, 81, "lead"),
    _gm("bassoon", 70, 34, 75, "lead bass"),
    _gm("clarinet", 71, 50, 91, "lead"),
    _gm("piccolo", 72, 74, 108, "lead"),
    _gm("flute", 73, 60, 96, "lead"),
    _gm("recorder", 74, 60, 96, "lead"),
    _gm("pan flute", 75, 60, 96, "lead"),
    _gm("ocarina", 79, 60, 84, "lead"),
    _gm("square lead", 80, 36, 96, "lead"),
    _gm("saw lead", 81, 36, 96, "lead"),
    _gm("warm pad", 89, 36, 96, "harmony"),
    _gm("poly synth", 90, 36, 96, "harmony"),
    _gm("banjo", 105, 48, 84, "lead arp"),
    _gm("kalimba", 108, 60, 96, "arp"),
    _gm("steel drums", 114, 52, 84, "lead arp"),
)

DRUM_KITS: dict[str, int] = {  # TimGM6mb bank-128 presets
    "standard": 0,
    "room": 8,
    "power": 16,
    "electronic": 24,
    "TR-808": 25,
    "jazz": 32,
    "brush": 40,
    "orchestral": 48,
}


def pick_instrument(
    rng: np.random.Generator,
    roles: Sequence[str],
    low: int | None = None,
    high: int | None = None,
    exclude: Sequence[int] = (),
) -> GMInstrument:
    """Draws an instrument with one of ``roles`` whose range covers [low, high].

    Falls back to the widest-range candidates when nothing covers the range, so a pick never fails.
    """
    pool = [g for g in GM_PALETTE if g.roles & set(roles) and g.program not in exclude]
    fitting = [g for g in pool if (low is None or g.low <= low) and (high is None or g.high >= high)]
    if not fitting:
        fitting = sorted(pool, key=lambda g: g.high - g.low)[-3:]
    return _choice(rng, fitting)


# ----------------------------------------------------------------------------------------------
# Music theory tables
# ----------------------------------------------------------------------------------------------

# Conventional tonic spellings per pitch class (flats for flat keys, sharps for sharp keys).
_MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def key_name(tonic_pc: int, mode: str) -> str:
    """'F# minor' style name for a tonic pitch class (0 = C) and 'major'/'minor'."""
    names = _MINOR_TONICS if mode == "minor" else _MAJOR_TONICS
    return f"{names[tonic_pc % 12]} {mode}"


SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "natural minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "whole-tone": (0, 2, 4, 6, 8, 10),
    "chromatic": tuple(range(12)),
}
_MINOR_FLAVOURED = {"natural minor", "harmonic minor", "dorian", "phrygian", "minor pentatonic", "blues"}
_TONAL_SCALES = set(SCALES) - {"whole-tone", "chromatic"}  # those that imply a key

_CHORD_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "7": (0, 4, 7, 10),
    "m7": (0, 3, 7, 10),
    "maj7": (0, 4, 7, 11),
}
_ROMAN_DEGREES = {"I": 0, "II": 1, "III": 2, "IV": 3, "V": 4, "VI": 5, "VII": 6}

# (caption label, roman numerals); numerals are relative to the scale of the mode, so "VII" in a
# minor key is the subtonic and "V" in a minor key is the (harmonic-minor) major dominant.
PROGRESSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "major": (
        ("I-IV-V-I", "I-IV-V-I"),
        ("I-V-vi-IV", "I-V-vi-IV"),
        ("I-vi-IV-V", "I-vi-IV-V"),
        ("ii-V-I", "ii7-V7-Imaj7-Imaj7"),
        ("I-IV-vi-V", "I-IV-vi-V"),
        ("vi-IV-I-V", "vi-IV-I-V"),
        ("I-bVII-IV-I", "I-bVII-IV-I"),
        ("12-bar blues", "I7-IV7-I7-I7-IV7-IV7-I7-I7-V7-IV7-I7-V7"),
    ),
    "minor": (
        ("i-iv-v-i", "i-iv-v-i"),
        ("i-VI-III-VII", "i-VI-III-VII"),
        ("i-iv-VII-III", "i-iv-VII-III"),
        ("i-VI-iv-V", "i-VI-iv-V"),
        ("Andalusian cadence", "i-VII-VI-V"),
        ("i-ii°-V-i", "i-ii°-V-i"),
    ),
}

_NUMERAL_RE = re.compile(r"^(b|#)?(VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(°|maj7|7)?$")


def parse_numeral(numeral: str, mode: str) -> tuple[int, tuple[int, ...]]:
    """Roman numeral -> (root semitones above the tonic, chord intervals). Case gives the quality."""
    match = _NUMERAL_RE.match(numeral)
    if match is None:
        raise ValueError(f"Cannot parse roman numeral {numeral!r}")
    accidental, degree, suffix = match.groups()
    scale = SCALES["natural minor" if mode == "minor" else "major"]
    root = scale[_ROMAN_DEGREES[degree.upper()]] + {"b": -1, "#": 1, None: 0}[accidental]
    if suffix == "°":
        quality = "dim"
    elif suffix == "maj7":
        quality = "maj7"
    elif suffix == "7":
        quality = "7" if degree.isupper() else "m7"
    else:
        quality = "maj" if degree.isupper() else "min"
    return root % 12, _CHORD_INTERVALS[quality]


def place_pitch(pitch_class: int, low: int) -> int:
    """Lowest MIDI note >= low with the given pitch class."""
    return low + (pitch_class - low) % 12


def voice_chord(root_pc: int, intervals: Sequence[int], low: int) -> list[int]:
    """Close-position voicing inside [low, low + 12): inversions fall out of the wrap-around."""
    return sorted(place_pitch(root_pc + i, low) for i in intervals)


@dataclasses.dataclass(frozen=True)
class Groove:
    """A one-bar drum pattern by style; pattern strings have one char per grid step.

    ``X`` accent, ``x`` normal hit, ``o`` ghost note, ``.`` rest. ``comp`` is the chord rhythm of
    the band arrangement in the same grid; the bass follows the kick drum.
    """

    name: str
    beats: int
    beat_unit: int
    steps_per_beat: int
    bpm: tuple[int, int]
    kits: tuple[str, ...]
    drums: dict[int, str]  # GM percussion key -> pattern
    comp: str


# GM percussion keys.
KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 42, 44, 46, 49, 51

GROOVES: tuple[Groove, ...] = (
    Groove("rock", 4, 4, 4, (90, 140), ("standard", "room", "power"),
           {KICK: "x.......x.x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
           "x.x.x.x.x.x.x.x."),
    Groove("funk", 4, 4, 4, (90, 120), ("standard", "room"),
           {KICK: "x.....x...x..x..", SNARE: "....X..o.o..X..o", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
           "x..x..x...x.x..."),
    Groove("disco", 4, 4, 4, (110, 130), ("standard", "electronic"),
           {KICK: "x...x...x...x...", SNARE: "....X.......X...", CLOSED_HAT: "x...x...x...x...",
            OPEN_HAT: "..x...x...x...x."},
           "..x...x...x...x."),
    Groove("house", 4, 4, 4, (118, 130), ("electronic", "TR-808"),
           {KICK: "X...X...X...X...", CLAP: "....x.......x...", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
           "..x..x....x..x.."),
    Groove("hip hop", 4, 4, 4, (80, 100), ("TR-808", "standard"),
           {KICK: "x......x.xx.....", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
           "x.......x......."),
    Groove("bossa nova", 4, 4, 4, (110, 140), ("standard", "jazz", "brush"),
           {KICK: "x..xx..xx..xx..x", SIDE_STICK: "x..x..x...x..x..", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
           "x..x..x...x..x.."),
    Groove("reggae", 4, 4, 4, (60, 85), ("standard", "room"),
           {KICK: "........x.......", SIDE_STICK: "........x.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
           "..x...x...x...x."),
    Groove("waltz", 3, 4, 4, (90, 140), ("standard", "brush", "orchestral"),
           {KICK: "x...........", SNARE: "....o...o...", CLOSED_HAT: "x...x...x..."},
           "....x...x..."),
    Groove("swing", 4, 4, 3, (100, 140), ("jazz", "brush"),
           {RIDE: "x..x.xx..x.x", PEDAL_HAT: "...x.....x..", KICK: "o..o..o..o.."},
           "x..x..x..x.."),
    Groove("shuffle", 4, 4, 3, (80, 120), ("standard", "room"),
           {KICK: "x.....x.....", SNARE: "...X.....X..", CLOSED_HAT: "x.xx.xx.xx.x"},
           "x..x..x..x.."),
    Groove("march", 2, 4, 4, (100, 130), ("standard", "orchestral"),
           {KICK: "x...x...", SNARE: "x.xxX.x."},
           "x...x..."),
    Groove("ballad", 4, 4, 2, (60, 80), ("standard", "room", "brush"),
           {KICK: "x....x..", SNARE: "..X...X.", CLOSED_HAT: "xoxoxoxo"},
           "x......."),
)
_HIT_VELOCITY = {"X": 118, "x": 92, "o": 52}

# (steps per beat, caption text) for single-line material.
_RHYTHMS = ((1, "quarter notes"), (2, "eighth notes"), (3, "eighth-note triplets"), (4, "sixteenth notes"))


# ----------------------------------------------------------------------------------------------
# Generated material: an arrangement is a list of timed notes on instrument tracks
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Note:
    track: int
    pitch: int  # MIDI note number (GM percussion key on drum tracks)
    start: float  # seconds
    duration: float  # seconds
    velocity: int


@dataclasses.dataclass
class Track:
    role: str  # "lead", "harmony", "arp", "bass" or "drums"
    instrument: GMInstrument  # for drums, ``program`` is the GM kit


@dataclasses.dataclass
class Arrangement:
    """Generated music, renderer-agnostic (rendered by the soundfont here, by numpy in synthetic)."""

    tracks: list[Track]
    notes: list[Note]
    seconds: float  # musical length on the beat grid (whole bars / runs), before release tails
    info: dict[str, Any]  # generator parameters, caption-ready (genre, key, bpm, ...)


class _Builder:
    """Accumulates humanised notes on a beat grid."""

    def __init__(self, rng: np.random.Generator, bpm: int, beats_per_bar: int, steps_per_beat: int):
        self.rng = rng
        self.bpm = bpm
        self.beats_per_bar = beats_per_bar
        self.steps_per_beat = steps_per_beat
        self.beat = 60.0 / bpm
        self.step = self.beat / steps_per_beat
        self.bar = self.beat * beats_per_bar
        self.tracks: list[Track] = []
        self.notes: list[Note] = []

    def track(self, role: str, instrument: GMInstrument) -> int:
        self.tracks.append(Track(role, instrument))
        return len(self.tracks) - 1

    def note(self, track: int, pitch: int, start: float, duration: float, velocity: int) -> None:
        # Small timing and velocity jitter so the material does not sound quantised.
        start = max(0.0, start + float(self.rng.normal(0.0, 0.004)))
        velocity = int(np.clip(velocity + self.rng.integers(-6, 7), 1, 127))
        self.notes.append(Note(track, int(pitch), start, max(duration, 0.02), velocity))

    def pattern(self, track: int, pattern: str, bar_start: float, pitches: Callable[[int], Sequence[int]],
                legato: float = 0.9) -> None:
        """Plays ``pitches(step)`` at every hit of a grid pattern; a hit lasts until the next one."""
        hits = [i for i, c in enumerate(pattern) if c != "."]
        for j, i in enumerate(hits):
            end = hits[j + 1] if j + 1 < len(hits) else len(pattern)
            for p in pitches(i):
                self.note(track, p, bar_start + i * self.step, (end - i) * self.step * legato,
                          _HIT_VELOCITY[pattern[i]])

    def arrangement(self, seconds: float, info: dict[str, Any]) -> Arrangement:
        return Arrangement(self.tracks, self.notes, seconds, dict(info, bpm=self.bpm))


def _num_units(unit_seconds: float, seconds: float, fit: bool) -> int:
    """How many repeats of a unit: ``fit`` stays inside ``seconds`` (natural ending), else covers it."""
    n = seconds / unit_seconds
    return max(1, int(n) if fit else math.ceil(n))


def _scale_material(rng: np.random.Generator, seconds: float, fit: bool) -> Arrangement:
    scale = _choice(rng, list(SCALES))
    tonic = int(rng.integers(12))
    steps, rhythm = _choice(rng, _RHYTHMS)
    bpm = int(rng.integers(60, 141 if steps < 4 else 111))  # keep sixteenths playable
    direction = _choice(rng, ("ascending", "descending", "ascending and descending"))
    inst = pick_instrument(rng, ("lead",))
    octaves = 2 if rng.random() < 0.5 and inst.high - inst.low >= 30 else 1
    base = place_pitch(tonic, max(inst.low, (inst.low + inst.high - 12 * octaves) // 2 - 6))
    up = [base + 12 * o + i for o in range(octaves) for i in SCALES[scale]] + [base + 12 * octaves]
    run = {"ascending": up, "descending": up[::-1], "ascending and descending": up + up[-2::-1]}[direction]
    b = _Builder(rng, bpm, 4, steps)
    track = b.track("lead", inst)
    unit_steps = len(run) + steps  # the run, then a beat of rest
    reps = _num_units(unit_steps * b.step, seconds, fit)
    for r in range(reps):
        for i, pitch in enumerate(run):
            accent = 100 if i % steps == 0 else 84
            b.note(track, pitch, (r * unit_steps + i) * b.step, b.step * 0.95, accent)
    mode = "minor" if scale in _MINOR_FLAVOURED else "major"
    names = _MINOR_TONICS if mode == "minor" else _MAJOR_TONICS
    return b.arrangement(reps * unit_steps * b.step, {
        "kind": "scale", "genre": "scale exercise", "scale": f"{names[tonic]} {scale}",
        "key": key_name(tonic, mode) if scale in _TONAL_SCALES else None,
        "pattern": direction, "rhythm": rhythm, "time_signature": "4/4",
    })


def _progression_chords(tonic: int, mode: str, numerals: str) -> list[tuple[int, tuple[int, ...]]]:
    """'I-V-vi-IV' in a key -> [(root pitch class, chord intervals)] per bar."""
    chords = (parse_numeral(n, mode) for n in numerals.split("-"))
    return [((tonic + root) % 12, intervals) for root, intervals in chords]


def _harmony_setup(rng: np.random.Generator, blues: bool = False) -> tuple[int, str, str, list]:
    """Random tonic, mode and progression: (tonic pc, mode, progression label, [(root pc, intervals)]).

    ``blues`` forces the 12-bar blues (major).
    """
    tonic = int(rng.integers(12))
    mode = "major" if blues else _choice(rng, ("major", "minor"))
    label, numerals = PROGRESSIONS["major"][-1] if blues else _choice(rng, PROGRESSIONS[mode])
    return tonic, mode, label, _progression_chords(tonic, mode, numerals)


def _melody(b: _Builder, track: int, inst: GMInstrument, tonic: int, mode: str,
            chords: Sequence[tuple[int, tuple[int, ...]]], bars: int) -> None:
    """A random-walk melody on the scale that lands on chord tones at bar starts."""
    scale = SCALES["natural minor" if mode == "minor" else "major"]
    center = int(np.clip((inst.low + inst.high) // 2, 60, 79))
    pitches = [p for p in range(max(inst.low, center - 12), min(inst.high, center + 12) + 1)
               if (p - tonic) % 12 in scale]
    idx = len(pitches) // 2
    for bar in range(bars):
        root, intervals = chords[bar % len(chords)]
        chord_pcs = {(root + i) % 12 for i in intervals}
        for beat in range(b.beats_per_bar):
            t0 = bar * b.bar + beat * b.beat
            if beat == 0:  # nearest chord tone on the downbeat
                idx = min((i for i, p in enumerate(pitches) if p % 12 in chord_pcs),
                          key=lambda i: abs(i - idx), default=idx)
            if b.rng.random() < 0.15 and beat > 0:
                continue  # rest
            subdivisions = 1 if b.rng.random() < 0.55 else 2
            for s in range(subdivisions):
                if beat > 0 or s > 0:
                    drift = -1 if idx > len(pitches) * 0.7 else (1 if idx < len(pitches) * 0.3 else 0)
                    idx += _choice(b.rng, (-2, -1, -1, 1, 1, 2)) + drift
                    idx = int(np.clip(idx, 0, len(pitches) - 1))
                dur = b.beat / subdivisions
                b.note(track, pitches[idx], t0 + s * dur, dur * 0.92, 96 if beat == 0 and s == 0 else 84)


def _bass_pitch(inst: GMInstrument, pitch_class: int) -> int:
    return place_pitch(pitch_class, max(inst.low, 33))


def _harmony_low(inst: GMInstrument) -> int:
    return int(np.clip(inst.low + 12, 52, 60))


def _ending(b: _Builder, bars: int, tonic: int, mode: str, harmony: int | None, bass: int | None,
            drums: int | None) -> None:
    """A final tonic chord (and crash) one bar long, so 'fit' clips end like a piece does."""
    t = bars * b.bar
    triad = _CHORD_INTERVALS["min" if mode == "minor" else "maj"]
    if harmony is not None:
        for p in voice_chord(tonic, triad, _harmony_low(b.tracks[harmony].instrument)):
            b.note(harmony, p, t, b.bar, 96)
    if bass is not None:
        b.note(bass, _bass_pitch(b.tracks[bass].instrument, tonic), t, b.bar, 100)
    if drums is not None:
        b.note(drums, CRASH, t, b.bar, 110)
        b.note(drums, KICK, t, b.beat, 110)


def _chordal_material(rng: np.random.Generator, seconds: float, fit: bool, arpeggiate: bool) -> Arrangement:
    """Chord progressions, either as block-chord comping or arpeggiated, with optional bass/melody."""
    tonic, mode, prog_label, chords = _harmony_setup(rng)
    beats = _choice(rng, (4, 4, 3))
    bpm = int(rng.integers(60, 141))
    info: dict[str, Any] = {"key": key_name(tonic, mode), "progression": prog_label,
                            "time_signature": f"{beats}/4"}
    if arpeggiate:
        steps, rhythm = _choice(rng, _RHYTHMS[1:])
        if steps == 4:
            bpm = min(bpm, 110)
        pattern = _choice(rng, ("up", "down", "up-down", "broken"))
        inst = pick_instrument(rng, ("arp",))
        info.update(kind="arpeggio", genre=_choice(rng, ("arpeggio study", "arpeggiated chords")),
                    pattern=f"{pattern} arpeggio", rhythm=rhythm)
    else:
        steps = 2
        comps = [(beats, "sustained chords"), (1, "quarter-note chords"), (0.5, "eighth-note chords")]
        comp_beats, rhythm = _choice(rng, comps + ([(2, "half-note chords")] if beats == 4 else []))
        inst = pick_instrument(rng, ("harmony",))
        info.update(kind="chords", genre=_choice(rng, ("chord progression", "chordal accompaniment")),
                    rhythm=rhythm)
    b = _Builder(rng, bpm, beats, steps)
    harmony = b.track("arp" if arpeggiate else "harmony", inst)
    bass = b.track("bass", pick_instrument(rng, ("bass",))) if rng.random() < 0.5 else None
    lead = None
    if not arpeggiate and rng.random() < 0.5:
        lead = b.track("lead", pick_instrument(rng, ("lead",), exclude=(inst.program,)))
    bars = _num_units(b.bar, seconds - (b.bar if fit else 0.0), fit)
    bar_steps = beats * steps
    for bar in range(bars):
        root, intervals = chords[bar % len(chords)]
        tones = voice_chord(root, intervals, _harmony_low(inst))
        t0 = bar * b.bar
        if arpeggiate:
            tones = tones + [tones[0] + 12]
            order = {"up": tones, "down": tones[::-1], "up-down": tones + tones[-2:0:-1],
                     "broken": [tones[0], tones[2], tones[1], tones[-1]]}[pattern]
            for i in range(bar_steps):  # notes ring for two steps, like a sustained harp or piano
                velocity = 92 if i % steps == 0 else 78
                b.note(harmony, order[i % len(order)], t0 + i * b.step, 2 * b.step, velocity)
        else:
            comp = "".join("x" if (i / steps) % comp_beats == 0 else "." for i in range(bar_steps))
            b.pattern(harmony, comp, t0, lambda i: tones, legato=0.95)
        if bass is not None:
            bass_inst = b.tracks[bass].instrument
            b.note(bass, _bass_pitch(bass_inst, root), t0, b.bar * 0.95, 100)
    if lead is not None:
        _melody(b, lead, b.tracks[lead].instrument, tonic, mode, chords, bars)
    if fit:
        _ending(b, bars, tonic, mode, harmony, bass, None)
    return b.arrangement((bars + int(fit)) * b.bar, info)


def _groove_material(rng: np.random.Generator, seconds: float, fit: bool, band: bool) -> Arrangement:
    """A drum groove by style, alone or as a small band (drums, bass following the kick, comping, melody)."""
    groove = _choice(rng, GROOVES)
    bpm = int(rng.integers(groove.bpm[0], groove.bpm[1] + 1))
    kit = _choice(rng, groove.kits)
    b = _Builder(rng, bpm, groove.beats, groove.steps_per_beat)
    drums = b.track("drums", GMInstrument("drums", DRUM_KITS[kit], 0, 127, frozenset({"drums"})))
    info: dict[str, Any] = {"kind": "band" if band else "drums", "style": groove.name, "kit": kit,
                            "genre": groove.name if band else f"{groove.name} drum groove",
                            "time_signature": f"{groove.beats}/{groove.beat_unit}", "key": None}
    bass = harmony = lead = None
    tonic, mode, chords = 0, "major", [(0, _CHORD_INTERVALS["maj"])]
    if band:
        blues = groove.name in ("rock", "shuffle", "swing") and rng.random() < 0.35
        tonic, mode, prog_label, chords = _harmony_setup(rng, blues=blues)
        info.update(key=key_name(tonic, mode), progression=prog_label)
        bass = b.track("bass", pick_instrument(rng, ("bass",)))
        harmony = b.track("harmony", pick_instrument(rng, ("harmony",)))
        if rng.random() < 0.6:
            comp_program = b.tracks[harmony].instrument.program
            lead = b.track("lead", pick_instrument(rng, ("lead",), exclude=(comp_program,)))
    bars = _num_units(b.bar, seconds - (b.bar if fit else 0.0), fit)
    for bar in range(bars):
        t0 = bar * b.bar
        for key, pattern in groove.drums.items():
            b.pattern(drums, pattern, t0, lambda i, key=key: (key,), legato=0.5)
        if bar == 0 and rng.random() < 0.5:
            b.note(drums, CRASH, 0.0, b.bar, 100)
        if band:
            root, intervals = chords[bar % len(chords)]
            bass_inst, harm_inst = b.tracks[bass].instrument, b.tracks[harmony].instrument
            kick = groove.drums[KICK].replace("o", "x")  # the bass doubles the kick, at full weight
            fifth = rng.random() < 0.5
            # Root on the downbeat; other kick hits sometimes take the fifth.
            b.pattern(bass, kick, t0, lambda i: (_bass_pitch(bass_inst, root + (7 if fifth and i else 0)),),
                      legato=0.85)
            tones = voice_chord(root, intervals, _harmony_low(harm_inst))
            b.pattern(harmony, groove.comp, t0, lambda i: tones, legato=0.8)
    if lead is not None:
        _melody(b, lead, b.tracks[lead].instrument, tonic, mode, chords, bars)
    if fit:
        _ending(b, bars, tonic, mode, harmony, bass, drums)
    return b.arrangement((bars + int(fit)) * b.bar, info)


GENERATED_KINDS: dict[str, tuple[float, Callable[[np.random.Generator, float, bool], Arrangement]]] = {
    "scale": (0.15, _scale_material),
    "arpeggio": (0.2, functools.partial(_chordal_material, arpeggiate=True)),
    "chords": (0.2, functools.partial(_chordal_material, arpeggiate=False)),
    "drums": (0.15, functools.partial(_groove_material, band=False)),
    "band": (0.3, functools.partial(_groove_material, band=True)),
}


def generate_arrangement(rng: np.random.Generator, seconds: float, *, fit: bool | None = None,
                         kind: str | None = None) -> Arrangement:
    """Generates scales / arpeggios / chord progressions / drum grooves / band material.

    Args:
      rng: source of every random choice.
      seconds: target length. With ``fit`` the material ends (with a final chord) inside
        ``seconds``; otherwise it covers ``seconds`` and is meant to be cut there.
      fit: drawn at random when None.
      kind: one of ``GENERATED_KINDS``; drawn with their weights when None.
    """
    if kind is None:
        names = list(GENERATED_KINDS)
        weights = np.array([GENERATED_KINDS[k][0] for k in names])
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    if fit is None:
        fit = bool(rng.random() < 0.4)
    return GENERATED_KINDS[kind][1](rng, seconds, fit)


# ----------------------------------------------------------------------------------------------
# Captions (Stable Audio prompt style: random field subsets, shuffled, three surface forms)
# ----------------------------------------------------------------------------------------------


def _join_and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _with_article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def _parts_text(n: int, sentence: bool) -> str:
    if n > 1:
        return f"in {n} parts" if sentence else f"{n}-part harmony"
    return "as a single melody line" if sentence else "single melody line"


# key -> (label for "Label: value", plain-form text, sentence clause); values arrive as str/int/list.
_CAPTION_FIELDS: dict[str, tuple[str, Callable[[Any], str], Callable[[Any], str]]] = {
    "genre": ("Genre", str, str),
    "composer": ("Composer", str, lambda v: f"by {v}"),
    "instruments": ("Instruments", ", ".join, lambda v: f"played on {_join_and(v)}"),
    "key": ("Key", str, lambda v: f"in {v}"),
    "bpm": ("BPM", lambda v: f"{v} BPM", lambda v: f"at {v} BPM"),
    "time_signature": ("Time signature", lambda v: f"{v} time", lambda v: f"in {v} time"),
    "num_parts": ("Parts", lambda v: _parts_text(v, False), lambda v: _parts_text(v, True)),
    "scale": ("Scale", lambda v: f"{v} scale", lambda v: f"on the {v} scale"),
    "progression": ("Chord progression", lambda v: f"{v} progression", lambda v: f"over the {v} progression"),
    "pattern": ("Pattern", str, str),
    "rhythm": ("Rhythm", str, lambda v: f"in {v}"),
    "kit": ("Drum kit", lambda v: f"{v} drum kit", lambda v: f"on {_with_article(v)} drum kit"),
    "ambience": ("Ambience", lambda v: f"{v} sound", lambda v: f"with {_with_article(v)} sound"),
}
# Genre is nearly always useful; ambience is a minor cue and would otherwise crowd short captions.
_FIELD_PROBABILITY = {"genre": 0.85, "ambience": 0.3}
_CAPITALISED_IN_NAMED_FORM = {"genre", "instruments", "pattern", "rhythm", "kit", "ambience"}


def format_caption(rng: np.random.Generator, metadata: dict[str, Any]) -> str:
    """Builds a prompt from a random subset of the known, non-empty metadata fields.

    Forms (chosen at random): ``"Genre: Baroque chorale | Key: F# minor | BPM: 72"``, plain
    ``"Baroque chorale, F# minor, 72 BPM"``, or a sentence
    ``"Baroque chorale by J.S. Bach, played on violin and cello, in F# minor, at 72 BPM."``.
    """
    available = [k for k in _CAPTION_FIELDS if metadata.get(k) not in (None, "", [])]
    if not available:
        raise ValueError("metadata has no caption fields")
    chosen = [k for k in available if rng.random() < _FIELD_PROBABILITY.get(k, 0.55)]
    for k in rng.permutation(available):  # keep at least two fields when there are two
        if len(chosen) >= min(2, len(available)):
            break
        if k not in chosen:
            chosen.append(str(k))
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    form = rng.random()
    if form < 0.4:
        parts = []
        for k in chosen:
            label, _, _ = _CAPTION_FIELDS[k]
            v = metadata[k]
            if k == "instruments":
                v = ", ".join(_capitalise(x) for x in v)
            elif k in _CAPITALISED_IN_NAMED_FORM:
                v = _capitalise(str(v))
            parts.append(f"{label}: {v}")
        return " | ".join(parts)
    if form < 0.8:
        return ", ".join(_CAPTION_FIELDS[k][1](metadata[k]) for k in chosen)
    head = _capitalise(str(metadata["genre"])) if "genre" in chosen else _choice(
        rng, ("Music", "A piece", "An instrumental piece", "A recording"))
    if "composer" in chosen:
        head += " " + _CAPTION_FIELDS["composer"][2](metadata["composer"])
    clauses = [_CAPTION_FIELDS[k][2](metadata[k]) for k in chosen if k not in ("genre", "composer")]
    return ", ".join([head] + clauses) + "."


# ----------------------------------------------------------------------------------------------
# Audio post-processing (numpy; shared with the synthetic fallback)
# ----------------------------------------------------------------------------------------------

# (caption word, RT60 range in seconds, wet-gain range). Even "dry" gets a faint room so that
# single-instrument renders are not perfectly mono.
AMBIENCES: tuple[tuple[str, tuple[float, float], tuple[float, float]], ...] = (
    ("dry", (0.15, 0.3), (0.03, 0.08)),
    ("roomy", (0.4, 0.9), (0.12, 0.25)),
    ("spacious", (1.4, 2.5), (0.18, 0.35)),
)


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution of ``x`` [n] with each column of ``h`` [m, c], truncated to [n, c]."""
    n = x.shape[0] + h.shape[0] - 1
    nfft = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(x, nfft)[:, None] * np.fft.rfft(h, nfft, axis=0)
    return np.fft.irfft(spectrum, nfft, axis=0)[: x.shape[0]]


def add_reverb(audio: np.ndarray, sample_rate: int, rng: np.random.Generator, rt60: float,
               wet: float) -> np.ndarray:
    """Adds an exponentially decaying noise reverb with independent L/R tails (decorrelates stereo).

    Args:
      audio: float32 ``[num_samples, 2]``.
      rt60: time in seconds for the tail to decay by 60 dB.
      wet: gain of the reverberant signal relative to the dry one.
    Returns:
      float32 ``[num_samples, 2]`` (the tail beyond the input length is dropped).
    """
    length = max(1, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    ir = rng.standard_normal((length, 2)) * np.exp(-6.91 * t / rt60)[:, None]
    ir[: int(0.01 * sample_rate)] = 0.0  # 10 ms pre-delay
    ir /= np.sqrt(np.sum(ir**2, axis=0, keepdims=True)) + 1e-12
    tail = _fft_convolve(audio.mean(axis=1).astype(np.float64), ir)
    return (audio + wet * tail).astype(np.float32)


def random_ambience(rng: np.random.Generator, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str]:
    """Applies a randomly chosen :data:`AMBIENCES` entry; returns ``([num_samples, 2], its name)``."""
    name, rt60, wet = _choice(rng, AMBIENCES)
    return add_reverb(audio, sample_rate, rng, float(rng.uniform(*rt60)), float(rng.uniform(*wet))), name


def finish_clip(audio: np.ndarray, sample_rate: int, max_samples: int, min_samples: int = 0) -> np.ndarray:
    """Cuts to ``max_samples``, fades out the end, pads with silence to ``min_samples``, peak-normalises.

    Args:
      audio: ``[num_samples, 2]``.
    Returns:
      float32 ``[n, 2]`` with ``min_samples <= n <= max_samples`` (when min <= max) and peak -1 dBFS.
    """
    audio = np.asarray(audio, np.float32)[:max_samples].copy()
    fade = min(int(FADE_SECONDS * sample_rate), audio.shape[0] // 4)
    if fade > 0:
        audio[-fade:] *= (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade, dtype=np.float32)))[:, None]
    if audio.shape[0] < min_samples:
        audio = np.pad(audio, ((0, min_samples - audio.shape[0]), (0, 0)))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0.0:
        audio *= PEAK_LEVEL / peak
    return audio


# ----------------------------------------------------------------------------------------------
# Soundfont rendering (tinysoundfont + pretty_midi's TimGM6mb.sf2)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def soundfont_path() -> str:
    """Path of the General MIDI soundfont bundled in the ``pretty_midi`` wheel (no import needed)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pretty_midi (which ships TimGM6mb.sf2) is required for the demo dataset")
    path = os.path.join(list(spec.submodule_search_locations)[0], "TimGM6mb.sf2")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


def _event_rank(event: Any) -> int:
    """Sort order for simultaneous events: programs, then controllers, then note-offs, then note-ons."""
    from tinysoundfont import midi as tsf_midi

    action = event.action
    if isinstance(action, tsf_midi.ProgramChange):
        return 0
    if isinstance(action, tsf_midi.ControlChange):
        return 1
    return 2 if isinstance(action, tsf_midi.NoteOff) else 3


def render_events(events: list, rng: np.random.Generator, max_samples: int, sample_rate: int) -> np.ndarray:
    """Renders tinysoundfont MIDI events with a random pan (CC10) and volume (CC7) per channel.

    Stops at ``max_samples`` or one release tail after the last event, whichever comes first.
    Returns float32 ``[num_samples, 2]``.
    """
    import tinysoundfont
    from tinysoundfont import midi as tsf_midi

    synth = tinysoundfont.Synth(samplerate=sample_rate)  # fresh synth per clip: no state leaks between clips
    synth.sfload(soundfont_path())  # before the sequencer: program changes need a loaded font
    mix = []
    for channel in sorted({e.channel for e in events}):
        # Drums stay near the centre like a real mix; other parts spread across the stereo field.
        pan = int(rng.integers(48, 81)) if channel == DRUM_CHANNEL else int(rng.integers(14, 115))
        volume = int(rng.integers(90, 121))
        mix += [tsf_midi.Event(tsf_midi.ControlChange(10, pan), 0.0, channel, False),
                tsf_midi.Event(tsf_midi.ControlChange(7, volume), 0.0, channel, False)]
    ordered = sorted(events + mix, key=lambda e: (e.t, _event_rank(e)))
    sequencer = tinysoundfont.Sequencer(synth)
    sequencer.add(ordered)
    block = max(1, sample_rate // 10)
    chunks, total = [], 0
    while not sequencer.is_empty() and total < max_samples:
        chunks.append(np.frombuffer(synth.generate(block), np.float32).reshape(-1, 2))
        total += block
    tail = min(int(RELEASE_TAIL_SECONDS * sample_rate), max_samples - total)
    if tail > 0:
        chunks.append(np.frombuffer(synth.generate(tail), np.float32).reshape(-1, 2))
    audio = np.concatenate(chunks)[:max_samples] if chunks else np.zeros((0, 2), np.float32)
    if audio.shape[0] == 0 or float(np.max(np.abs(audio))) < 1e-5:
        raise RuntimeError("soundfont render is silent")
    return audio


def arrangement_events(arrangement: Arrangement) -> list:
    """tinysoundfont events for an arrangement: one channel per track, drums on channel 10."""
    from tinysoundfont import midi as tsf_midi

    free = iter(c for c in range(16) if c != DRUM_CHANNEL)
    channels, events = [], []
    for track in arrangement.tracks:
        channel = DRUM_CHANNEL if track.role == "drums" else next(free)
        channels.append(channel)
        events.append(tsf_midi.Event(tsf_midi.ProgramChange(track.instrument.program), 0.0, channel, False))
    for n in arrangement.notes:
        channel = channels[n.track]
        events.append(tsf_midi.Event(tsf_midi.NoteOn(n.pitch, n.velocity), n.start, channel, False))
        events.append(tsf_midi.Event(tsf_midi.NoteOff(n.pitch), n.start + n.duration, channel, False))
    return events


def track_names(tracks: Sequence[Track]) -> list[str]:
    """Distinct instrument names, pitched tracks first then drums (caption 'Instruments' field)."""
    ordered = sorted(tracks, key=lambda t: t.role == "drums")
    return list(dict.fromkeys(t.instrument.name for t in ordered))


# ----------------------------------------------------------------------------------------------
# music21 corpus pieces
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Collection:
    name: str  # folder of music21's core corpus
    weight: float
    genre: str
    composer: str | None


CORPUS_COLLECTIONS: tuple[_Collection, ...] = (
    _Collection("bach", 0.44, "Baroque chorale", "J.S. Bach"),
    _Collection("ryansMammoth", 0.17, "fiddle tune", None),
    _Collection("oneills1850", 0.12, "Irish tune", None),
    _Collection("essenFolksong", 0.15, "folk song", None),
    _Collection("palestrina", 0.06, "Renaissance mass movement", "Palestrina"),
    _Collection("monteverdi", 0.06, "Renaissance madrigal", "Claudio Monteverdi"),
)
# Essen collection files -> genre (test and variant files are left out).
_ESSEN_GENRES = {
    "altdeu": "German folk song", "ballad": "German ballad", "boehme": "German folk song",
    "dva": "German folk song", "erk": "German folk song", "fink": "German folk song",
    "kinder": "German children's song", "zuccal": "German folk song", "han": "Chinese folk song",
    "irl": "Irish folk song", "lot": "Lorraine folk song", "lux": "Luxembourgish folk song",
}
_DANCES = ("slip jig", "jig", "reel", "hornpipe", "strathspey", "polka", "waltz", "march", "clog",
           "schottische", "quadrille", "set dance", "slide", "air")
_MAX_PARTS = 8


@dataclasses.dataclass(frozen=True)
class _Piece:
    collection: _Collection
    path: str  # corpus name ("bach/bwv66.6") or absolute path
    number: int | None  # tune number inside a multi-tune ABC file

    @property
    def piece_id(self) -> str:
        stem = os.path.splitext(os.path.basename(self.path))[0]
        return f"{self.collection.name}/{stem}" + (f"#{self.number}" if self.number is not None else "")


@functools.lru_cache(maxsize=None)
def _collection_files(name: str) -> tuple[str, ...]:
    from music21 import corpus

    if name == "bach":  # the 371 chorales, not Bach's other bundled works
        return tuple(corpus.chorales.Iterator(returnType="filename"))
    paths = sorted(str(p) for p in corpus.corpora.CoreCorpus().getWorkList(name))
    if name == "essenFolksong":
        paths = [p for p in paths if _essen_genre(p) is not None]
    return tuple(paths)


def _essen_genre(path: str) -> str | None:
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


def _draw_piece(rng: np.random.Generator, used: set[str]) -> _Piece:
    """Draws a corpus piece not in ``used`` (so train and valid never share a piece)."""
    weights = np.array([c.weight for c in CORPUS_COLLECTIONS])
    for _ in range(100):
        collection = CORPUS_COLLECTIONS[int(rng.choice(len(weights), p=weights / weights.sum()))]
        path = _choice(rng, _collection_files(collection.name))
        numbers = _abc_tune_numbers(path)
        piece = _Piece(collection, path, _choice(rng, numbers) if len(numbers) > 1 else None)
        if piece.piece_id not in used:
            used.add(piece.piece_id)
            return piece
    raise RuntimeError("could not draw an unused corpus piece")


def _piece_genre(piece: _Piece, title: str) -> str:
    collection = piece.collection
    if collection.name == "essenFolksong":
        return _essen_genre(piece.path) or collection.genre
    if collection.name in ("ryansMammoth", "oneills1850"):
        lowered = title.lower()
        dance = next((d for d in _DANCES if re.search(rf"\b{d}s?\b", lowered)), None)
        prefix = "fiddle" if collection.name == "ryansMammoth" else "Irish"
        return f"{prefix} {dance}" if dance else collection.genre
    return collection.genre


def _assign_instruments(rng: np.random.Generator,
                        ranges: Sequence[tuple[int, int] | None]) -> list[GMInstrument]:
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
        inst = pick_instrument(rng, ("lead", "bass"), *(r if r else (None, None)),
                               exclude=[c.program for c in chosen])
        chosen.append(inst)
    return chosen


def _render_corpus_piece(piece: _Piece, rng: np.random.Generator, max_samples: int,
                         sample_rate: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Parses, re-orchestrates and renders one corpus piece. Returns ``([n, 2] audio, metadata)``."""
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
    shift = _choice(rng, shifts)
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
        "source": "corpus", "kind": "corpus", "collection": piece.collection.name, "piece": piece.piece_id,
        "title": title or None, "genre": _piece_genre(piece, title), "composer": piece.collection.composer,
        "instruments": names,
        "key": key_name(key.tonic.pitchClass + shift, "minor" if key.mode == "minor" else "major"),
        "bpm": bpm, "time_signature": time_sig.ratioString if time_sig is not None else None,
        "num_parts": len(parts), "transpose": shift,
    }


# ----------------------------------------------------------------------------------------------
# Dataset writing (shared with the synthetic fallback)
# ----------------------------------------------------------------------------------------------

# make_clip(rng, clip_index, target_seconds) -> (finished [n, 2] float32 audio, metadata with "caption")
ClipMaker = Callable[[np.random.Generator, int, float], tuple[np.ndarray, dict[str, Any]]]


def num_valid_clips(num_clips: int, valid_fraction: float) -> int:
    """Held-out clip count: at least one when a fraction is requested, never all clips."""
    if valid_fraction <= 0 or num_clips < 2:
        return 0
    return int(min(num_clips - 1, max(1, round(num_clips * valid_fraction))))


def write_dataset(output_dir: str | os.PathLike, num_clips: int, make_clip: ClipMaker, *, seed: int,
                  min_seconds: float, max_seconds: float, sample_rate: int, num_valid: int,
                  progress: bool = False, desc: str = "clips") -> dict[str, Any]:
    """Writes ``audio/clip_XXXX.flac`` and ``train.jsonl`` / ``valid.jsonl``; returns a summary.

    Clip ``i`` draws all its randomness from ``np.random.default_rng([seed, i])``; the last
    ``num_valid`` clips form the validation split.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    output_dir = os.fspath(output_dir)
    os.makedirs(os.path.join(output_dir, "audio"), exist_ok=True)
    records: dict[str, list[dict[str, Any]]] = {"train": [], "valid": []}
    indices: Any = range(num_clips)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=desc, unit="clip")
    for index in indices:
        rng = np.random.default_rng([seed, index])
        target = float(rng.uniform(min_seconds, max_seconds))
        audio, metadata = make_clip(rng, index, target)
        if audio.ndim != 2 or audio.shape[1] != 2:
            raise ValueError(f"clip {index}: expected [num_samples, 2] audio, got {audio.shape}")
        clip_id = f"clip_{index:04d}"
        rel_path = f"audio/{clip_id}.flac"
        sf.write(os.path.join(output_dir, rel_path), audio, sample_rate, format="FLAC", subtype="PCM_24")
        split = "valid" if index >= num_clips - num_valid else "train"
        duration = audio.shape[0] / sample_rate
        records[split].append({
            "path": rel_path, "caption": metadata.pop("caption"), "clip_id": clip_id, "split": split,
            **metadata, "duration_seconds": round(duration, 6), "seconds_total": math.ceil(duration),
            "sample_rate": sample_rate, "num_samples": int(audio.shape[0]),
        })
    for split, rows in records.items():
        with open(os.path.join(output_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    all_rows = records["train"] + records["valid"]
    sources: dict[str, int] = {}
    for row in all_rows:
        sources[row.get("source", "unknown")] = sources.get(row.get("source", "unknown"), 0) + 1
    return {
        "output_dir": output_dir,
        "num_clips": len(all_rows),
        "splits": {s: len(rows) for s, rows in records.items()},
        "seconds": {s: round(sum(r["duration_seconds"] for r in rows), 3) for s, rows in records.items()},
        "total_seconds": round(sum(r["duration_seconds"] for r in all_rows), 3),
        "sources": sources,
    }


class _DemoClipMaker:
    """Makes demo clips: even indices from the corpus, odd ones generated (about half each)."""

    def __init__(self, sample_rate: int, min_seconds: float, corpus_attempts: int = 3):
        self.sample_rate = sample_rate
        self.min_seconds = min_seconds
        self.corpus_attempts = corpus_attempts
        self.used_pieces: set[str] = set()
        self.failures: list[str] = []

    def __call__(self, rng: np.random.Generator, index: int,
                 target_seconds: float) -> tuple[np.ndarray, dict[str, Any]]:
        max_samples = int(round(target_seconds * self.sample_rate))
        result = None
        if index % 2 == 0:
            for _ in range(self.corpus_attempts):
                piece = _draw_piece(rng, self.used_pieces)
                try:
                    result = _render_corpus_piece(piece, rng, max_samples, self.sample_rate)
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
            result = audio, {"source": "generated", **arrangement.info,
                             "instruments": track_names(arrangement.tracks)}
        audio, metadata = result
        audio, metadata["ambience"] = random_ambience(rng, audio, self.sample_rate)
        min_samples = math.ceil(self.min_seconds * self.sample_rate)
        audio = finish_clip(audio, self.sample_rate, max_samples, min_samples)
        metadata["caption"] = format_caption(rng, metadata)
        return audio, metadata


def render_demo_dataset(output_dir: str | os.PathLike, num_clips: int = 48, *, seed: int = 0,
                        min_seconds: float = 2.0, max_seconds: float = 30.0, sample_rate: int = 44100,
                        valid_fraction: float = 0.125, progress: bool = True) -> dict:
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
    summary = write_dataset(output_dir, num_clips, maker, seed=seed, min_seconds=min_seconds,
                            max_seconds=max_seconds, sample_rate=sample_rate,
                            num_valid=num_valid_clips(num_clips, valid_fraction), progress=progress,
                            desc="demo clips")
    summary.update(failures=len(maker.failures), failed_pieces=maker.failures,
                   elapsed_seconds=round(time.perf_counter() - start, 2))
    if maker.failures:
        logger.warning("%d corpus pieces failed and were replaced", len(maker.failures))
    return summary
