"""Procedurally generated music: scales, arpeggios, chord progressions, drum grooves and small bands.

This module holds the musical vocabulary the generators draw from (the General MIDI instrument
palette, keys, scales, chords, roman-numeral progressions, drum grooves) and the generators
themselves. A generator returns an :class:`Arrangement`: timed :class:`Note` events on instrument
:class:`Track` s plus caption-ready parameters (genre, key, bpm, ...). Arrangements are
renderer-agnostic: :mod:`stable_audio_jax.demo_corpus.soundfont` renders them through a GM soundfont
and :mod:`stable_audio_jax.demo_corpus.synthetic` with numpy synthesisers.

The corpus arranger (:mod:`stable_audio_jax.demo_corpus.corpus_music`) re-orchestrates scores with
the same palette. Every random choice comes from the ``numpy.random.Generator`` passed in.
Numpy only: no music21, tinysoundfont or pretty_midi needed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def choose(rng: np.random.Generator, options: Sequence[T]) -> T:
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
    return choose(rng, fitting)


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
    Groove(
        "rock",
        4,
        4,
        4,
        (90, 140),
        ("standard", "room", "power"),
        {KICK: "x.......x.x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        "x.x.x.x.x.x.x.x.",
    ),
    Groove(
        "funk",
        4,
        4,
        4,
        (90, 120),
        ("standard", "room"),
        {KICK: "x.....x...x..x..", SNARE: "....X..o.o..X..o", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
        "x..x..x...x.x...",
    ),
    Groove(
        "disco",
        4,
        4,
        4,
        (110, 130),
        ("standard", "electronic"),
        {
            KICK: "x...x...x...x...",
            SNARE: "....X.......X...",
            CLOSED_HAT: "x...x...x...x...",
            OPEN_HAT: "..x...x...x...x.",
        },
        "..x...x...x...x.",
    ),
    Groove(
        "house",
        4,
        4,
        4,
        (118, 130),
        ("electronic", "TR-808"),
        {KICK: "X...X...X...X...", CLAP: "....x.......x...", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
        "..x..x....x..x..",
    ),
    Groove(
        "hip hop",
        4,
        4,
        4,
        (80, 100),
        ("TR-808", "standard"),
        {KICK: "x......x.xx.....", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        "x.......x.......",
    ),
    Groove(
        "bossa nova",
        4,
        4,
        4,
        (110, 140),
        ("standard", "jazz", "brush"),
        {KICK: "x..xx..xx..xx..x", SIDE_STICK: "x..x..x...x..x..", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
        "x..x..x...x..x..",
    ),
    Groove(
        "reggae",
        4,
        4,
        4,
        (60, 85),
        ("standard", "room"),
        {KICK: "........x.......", SIDE_STICK: "........x.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        "..x...x...x...x.",
    ),
    Groove(
        "waltz",
        3,
        4,
        4,
        (90, 140),
        ("standard", "brush", "orchestral"),
        {KICK: "x...........", SNARE: "....o...o...", CLOSED_HAT: "x...x...x..."},
        "....x...x...",
    ),
    Groove(
        "swing",
        4,
        4,
        3,
        (100, 140),
        ("jazz", "brush"),
        {RIDE: "x..x.xx..x.x", PEDAL_HAT: "...x.....x..", KICK: "o..o..o..o.."},
        "x..x..x..x..",
    ),
    Groove(
        "shuffle",
        4,
        4,
        3,
        (80, 120),
        ("standard", "room"),
        {KICK: "x.....x.....", SNARE: "...X.....X..", CLOSED_HAT: "x.xx.xx.xx.x"},
        "x..x..x..x..",
    ),
    Groove("march", 2, 4, 4, (100, 130), ("standard", "orchestral"), {KICK: "x...x...", SNARE: "x.xxX.x."}, "x...x..."),
    Groove(
        "ballad",
        4,
        4,
        2,
        (60, 80),
        ("standard", "room", "brush"),
        {KICK: "x....x..", SNARE: "..X...X.", CLOSED_HAT: "xoxoxoxo"},
        "x.......",
    ),
)
_HIT_VELOCITY = {"X": 118, "x": 92, "o": 52}

# (steps per beat, caption text) for single-line material.
_RHYTHMS = ((1, "quarter notes"), (2, "eighth notes"), (3, "eighth-note triplets"), (4, "sixteenth notes"))


# ----------------------------------------------------------------------------------------------
# Generated material: an arrangement is a list of timed notes on instrument tracks
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Note:
    """One note on a track of an :class:`Arrangement`."""

    track: int  # index into ``Arrangement.tracks``
    pitch: int  # MIDI note number (GM percussion key on drum tracks)
    start: float  # seconds
    duration: float  # seconds
    velocity: int


@dataclasses.dataclass
class Track:
    """An instrument part of an :class:`Arrangement`."""

    role: str  # "lead", "harmony", "arp", "bass" or "drums"
    instrument: GMInstrument  # for drums, ``program`` is the GM kit


@dataclasses.dataclass
class Arrangement:
    """Generated music, renderer-agnostic (rendered by the soundfont in the demo, by numpy in synthetic)."""

    tracks: list[Track]
    notes: list[Note]
    seconds: float  # musical length on the beat grid (whole bars / runs), before release tails
    info: dict[str, Any]  # generator parameters, caption-ready (genre, key, bpm, ...)


def track_names(tracks: Sequence[Track]) -> list[str]:
    """Distinct instrument names, pitched tracks first then drums (caption 'Instruments' field)."""
    ordered = sorted(tracks, key=lambda t: t.role == "drums")
    return list(dict.fromkeys(t.instrument.name for t in ordered))


class _ArrangementBuilder:
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

    def pattern(
        self, track: int, pattern: str, bar_start: float, pitches: Callable[[int], Sequence[int]], legato: float = 0.9
    ) -> None:
        """Plays ``pitches(step)`` at every hit of a grid pattern; a hit lasts until the next one."""
        hits = [i for i, c in enumerate(pattern) if c != "."]
        for j, i in enumerate(hits):
            end = hits[j + 1] if j + 1 < len(hits) else len(pattern)
            for p in pitches(i):
                self.note(
                    track, p, bar_start + i * self.step, (end - i) * self.step * legato, _HIT_VELOCITY[pattern[i]]
                )

    def arrangement(self, seconds: float, info: dict[str, Any]) -> Arrangement:
        return Arrangement(self.tracks, self.notes, seconds, dict(info, bpm=self.bpm))


def _num_units(unit_seconds: float, seconds: float, fit: bool) -> int:
    """How many repeats of a unit: ``fit`` stays inside ``seconds`` (natural ending), else covers it."""
    n = seconds / unit_seconds
    return max(1, int(n) if fit else math.ceil(n))


def _scale_material(rng: np.random.Generator, seconds: float, fit: bool) -> Arrangement:
    scale = choose(rng, list(SCALES))
    tonic = int(rng.integers(12))
    steps, rhythm = choose(rng, _RHYTHMS)
    bpm = int(rng.integers(60, 141 if steps < 4 else 111))  # keep sixteenths playable
    direction = choose(rng, ("ascending", "descending", "ascending and descending"))
    inst = pick_instrument(rng, ("lead",))
    octaves = 2 if rng.random() < 0.5 and inst.high - inst.low >= 30 else 1
    base = place_pitch(tonic, max(inst.low, (inst.low + inst.high - 12 * octaves) // 2 - 6))
    up = [base + 12 * o + i for o in range(octaves) for i in SCALES[scale]] + [base + 12 * octaves]
    run = {"ascending": up, "descending": up[::-1], "ascending and descending": up + up[-2::-1]}[direction]
    b = _ArrangementBuilder(rng, bpm, 4, steps)
    track = b.track("lead", inst)
    unit_steps = len(run) + steps  # the run, then a beat of rest
    reps = _num_units(unit_steps * b.step, seconds, fit)
    for r in range(reps):
        for i, pitch in enumerate(run):
            accent = 100 if i % steps == 0 else 84
            b.note(track, pitch, (r * unit_steps + i) * b.step, b.step * 0.95, accent)
    mode = "minor" if scale in _MINOR_FLAVOURED else "major"
    names = _MINOR_TONICS if mode == "minor" else _MAJOR_TONICS
    return b.arrangement(
        reps * unit_steps * b.step,
        {
            "kind": "scale",
            "genre": "scale exercise",
            "scale": f"{names[tonic]} {scale}",
            "key": key_name(tonic, mode) if scale in _TONAL_SCALES else None,
            "pattern": direction,
            "rhythm": rhythm,
            "time_signature": "4/4",
        },
    )


def _progression_chords(tonic: int, mode: str, numerals: str) -> list[tuple[int, tuple[int, ...]]]:
    """'I-V-vi-IV' in a key -> [(root pitch class, chord intervals)] per bar."""
    chords = (parse_numeral(n, mode) for n in numerals.split("-"))
    return [((tonic + root) % 12, intervals) for root, intervals in chords]


def _harmony_setup(
    rng: np.random.Generator, blues: bool = False
) -> tuple[int, str, str, list[tuple[int, tuple[int, ...]]]]:
    """Random tonic, mode and progression: (tonic pc, mode, progression label, [(root pc, intervals)]).

    ``blues`` forces the 12-bar blues (major).
    """
    tonic = int(rng.integers(12))
    mode = "major" if blues else choose(rng, ("major", "minor"))
    label, numerals = PROGRESSIONS["major"][-1] if blues else choose(rng, PROGRESSIONS[mode])
    return tonic, mode, label, _progression_chords(tonic, mode, numerals)


def _melody(
    b: _ArrangementBuilder,
    track: int,
    inst: GMInstrument,
    tonic: int,
    mode: str,
    chords: Sequence[tuple[int, tuple[int, ...]]],
    bars: int,
) -> None:
    """A random-walk melody on the scale that lands on chord tones at bar starts."""
    scale = SCALES["natural minor" if mode == "minor" else "major"]
    center = int(np.clip((inst.low + inst.high) // 2, 60, 79))
    pitches = [
        p for p in range(max(inst.low, center - 12), min(inst.high, center + 12) + 1) if (p - tonic) % 12 in scale
    ]
    idx = len(pitches) // 2
    for bar in range(bars):
        root, intervals = chords[bar % len(chords)]
        chord_pcs = {(root + i) % 12 for i in intervals}
        for beat in range(b.beats_per_bar):
            t0 = bar * b.bar + beat * b.beat
            if beat == 0:  # nearest chord tone on the downbeat
                idx = min(
                    (i for i, p in enumerate(pitches) if p % 12 in chord_pcs), key=lambda i: abs(i - idx), default=idx
                )
            if b.rng.random() < 0.15 and beat > 0:
                continue  # rest
            subdivisions = 1 if b.rng.random() < 0.55 else 2
            for s in range(subdivisions):
                if beat > 0 or s > 0:
                    drift = -1 if idx > len(pitches) * 0.7 else (1 if idx < len(pitches) * 0.3 else 0)
                    idx += choose(b.rng, (-2, -1, -1, 1, 1, 2)) + drift
                    idx = int(np.clip(idx, 0, len(pitches) - 1))
                dur = b.beat / subdivisions
                b.note(track, pitches[idx], t0 + s * dur, dur * 0.92, 96 if beat == 0 and s == 0 else 84)


def _bass_pitch(inst: GMInstrument, pitch_class: int) -> int:
    return place_pitch(pitch_class, max(inst.low, 33))


def _harmony_low(inst: GMInstrument) -> int:
    return int(np.clip(inst.low + 12, 52, 60))


def _ending(
    b: _ArrangementBuilder, bars: int, tonic: int, mode: str, harmony: int | None, bass: int | None, drums: int | None
) -> None:
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
    beats = choose(rng, (4, 4, 3))
    bpm = int(rng.integers(60, 141))
    info: dict[str, Any] = {"key": key_name(tonic, mode), "progression": prog_label, "time_signature": f"{beats}/4"}
    if arpeggiate:
        steps, rhythm = choose(rng, _RHYTHMS[1:])
        if steps == 4:
            bpm = min(bpm, 110)
        pattern = choose(rng, ("up", "down", "up-down", "broken"))
        inst = pick_instrument(rng, ("arp",))
        info.update(
            kind="arpeggio",
            genre=choose(rng, ("arpeggio study", "arpeggiated chords")),
            pattern=f"{pattern} arpeggio",
            rhythm=rhythm,
        )
    else:
        steps = 2
        comps = [(beats, "sustained chords"), (1, "quarter-note chords"), (0.5, "eighth-note chords")]
        comp_beats, rhythm = choose(rng, comps + ([(2, "half-note chords")] if beats == 4 else []))
        inst = pick_instrument(rng, ("harmony",))
        info.update(kind="chords", genre=choose(rng, ("chord progression", "chordal accompaniment")), rhythm=rhythm)
    b = _ArrangementBuilder(rng, bpm, beats, steps)
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
            order = {
                "up": tones,
                "down": tones[::-1],
                "up-down": tones + tones[-2:0:-1],
                "broken": [tones[0], tones[2], tones[1], tones[-1]],
            }[pattern]
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
    groove = choose(rng, GROOVES)
    bpm = int(rng.integers(groove.bpm[0], groove.bpm[1] + 1))
    kit = choose(rng, groove.kits)
    b = _ArrangementBuilder(rng, bpm, groove.beats, groove.steps_per_beat)
    drums = b.track("drums", GMInstrument("drums", DRUM_KITS[kit], 0, 127, frozenset({"drums"})))
    info: dict[str, Any] = {
        "kind": "band" if band else "drums",
        "style": groove.name,
        "kit": kit,
        "genre": groove.name if band else f"{groove.name} drum groove",
        "time_signature": f"{groove.beats}/{groove.beat_unit}",
        "key": None,
    }
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
            b.pattern(
                bass, kick, t0, lambda i: (_bass_pitch(bass_inst, root + (7 if fifth and i else 0)),), legato=0.85
            )
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


def generate_arrangement(
    rng: np.random.Generator, seconds: float, *, fit: bool | None = None, kind: str | None = None
) -> Arrangement:
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
