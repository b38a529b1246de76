"""stable-audio-jax: a JAX/Flax (linen) reimplementation of Stable Audio.

Sub-packages, one concept each:
  models/          linen modules (Snake, weight-normed convs, autoencoder, discriminator)
  losses/          multi-resolution STFT, adversarial, KL
  input_pipeline/  audio decoding, ArrayRecord shards, Grain pipelines
  datasets/        demo-data renderers (music21 + soundfont, numpy synthetic)
  training/        train state, tasks, generic trainer, checkpointing
  parallel         mesh, logical sharding rules, sharded init, host -> global arrays
"""

__version__ = "0.1.0"
