"""Offline demo datasets: a soundfont-rendered music corpus and a numpy synthetic fallback."""
