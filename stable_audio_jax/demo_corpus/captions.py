"""Captions in the Stable Audio prompt style, built from clip metadata.

A caption is a random subset of the known, non-empty metadata fields (genre, composer,
instruments, key, bpm, ...), shuffled, in one of three surface forms: ``"Label: value | ..."``,
a plain comma list, or a sentence. Used by the soundfont demo dataset and the numpy synthetic
fallback alike; numpy only.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from stable_audio_jax.demo_corpus.generated_music import choose


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
    head = (
        _capitalise(str(metadata["genre"]))
        if "genre" in chosen
        else choose(rng, ("Music", "A piece", "An instrumental piece", "A recording"))
    )
    if "composer" in chosen:
        head += " " + _CAPTION_FIELDS["composer"][2](metadata["composer"])
    clauses = [_CAPTION_FIELDS[k][2](metadata[k]) for k in chosen if k not in ("genre", "composer")]
    return ", ".join([head] + clauses) + "."
