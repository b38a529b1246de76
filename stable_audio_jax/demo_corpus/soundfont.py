"""General MIDI soundfont rendering with tinysoundfont and the ``TimGM6mb.sf2`` font from pretty_midi.

The soundfont ships inside the ``pretty_midi`` wheel, so rendering needs no network and no system
packages. tinysoundfont is imported inside the functions, so importing this module is cheap and
never fails. Rendered audio is float32 ``[num_samples, 2]`` (channels last).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np

from stable_audio_jax.demo_corpus.generated_music import Arrangement

RELEASE_TAIL_SECONDS = 1.0  # the sequencer stops at the last event; let note releases ring out
DRUM_CHANNEL = 9  # General MIDI percussion channel (0-based)


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

    Args:
      events: ``tinysoundfont.midi.Event`` s, times in seconds (the list is not modified).
      rng: draws the per-channel pan and volume.
    Returns:
      float32 ``[num_samples, 2]`` with ``0 < num_samples <= max_samples``.
    Raises:
      RuntimeError: when the render is silent.
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
        mix += [
            tsf_midi.Event(tsf_midi.ControlChange(10, pan), 0.0, channel, False),
            tsf_midi.Event(tsf_midi.ControlChange(7, volume), 0.0, channel, False),
        ]
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
