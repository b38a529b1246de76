"""A micro latent-diffusion run for the multi-host and resharding tests: random latent shards
(no VAE or CLAP needed) and the micro U-Net of `micro_configs` cut to one level, on 32 latent
frames (a train step compiles in about 10 s on one core instead of 15 s).

Also a config file for `launch/train.py`: `--config=tests/micro_diffusion.py:<shard folder>`.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from stable_audio_jax.input_pipeline import latent_records, records
from tests.micro_configs import TEXT_LENGTH, micro_diffusion_config

FRAMES = 32  # latent frames per example
LATENT_DIM = 4  # the micro U-Net's in_channels
TEXT_DIM = 32  # its context_features
RATIO = 8  # audio samples per latent frame (the micro VAE's)


def write_latent_shards(directory: str | os.PathLike, num_records: int = 24, num_shards: int = 2, seed: int = 0) -> str:
    """Shards of `num_records` random pre-encoded examples: latents `[FRAMES, LATENT_DIM]`,
    text features `[TEXT_LENGTH, TEXT_DIM]` with a random number of real tokens, random timing.
    Returns the folder."""
    rng = np.random.default_rng(seed)
    with records.ShardWriter(directory, "train", num_shards) as writer:
        for i in range(num_records):
            arrays = {
                "latent_mean": rng.normal(size=(FRAMES, LATENT_DIM)).astype(np.float32),
                "latent_std": rng.uniform(0.05, 0.2, (FRAMES, LATENT_DIM)).astype(np.float32),
                "latent_mask": np.ones(FRAMES, bool),
                "text_features": rng.normal(size=(TEXT_LENGTH, TEXT_DIM)).astype(np.float16),
                "text_mask": np.arange(TEXT_LENGTH) < rng.integers(1, TEXT_LENGTH + 1),
            }
            metadata = {
                "caption": f"clip {i}",
                "id": f"{i:08d}",
                "seconds_start": int(rng.integers(0, 4)),
                "seconds_total": int(rng.integers(4, 30)),
            }
            writer.write(latent_records.encode_latent_record(arrays, metadata))
    return os.fspath(directory)


def micro_config(shards: str, **trainer) -> ml_collections.ConfigDict:
    """`micro_configs.micro_diffusion_config` on `shards`, with a `FRAMES`-frame window, global batch 8,
    mesh (data 2, fsdp 4) and synchronous checkpoints; `trainer` overrides `config.trainer`.

    The U-Net keeps one down level (widths 16 -> 32, a ResNet block, a strided conv) and the
    bottleneck's transformer (self- and cross-attention, MLP): every kind of layer FSDP splits.
    """
    config = micro_diffusion_config({"vae": "", "clap": "", "latents": shards}, **trainer)
    config.model.unet.update(multipliers=(1, 2), factors=(2,), num_blocks=(1,), attentions=(0, 1))
    config.data.sample_size = FRAMES * RATIO
    return config


def get_config(shards: str) -> ml_collections.ConfigDict:
    """For `launch/train.py --config=tests/micro_diffusion.py:<shards>`."""
    return micro_config(shards)
