"""Renderers of the offline demo corpus: soundfont-rendered music (music21 scores and generated arrangements) and a numpy synthetic fallback."""
