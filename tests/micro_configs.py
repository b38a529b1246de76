"""The micro training configs the tests share: a micro VAE (with a fixed batch of synthetic
crops for it), a micro CLAP and a micro latent-diffusion U-Net.

Each is the smallest model of its kind that still runs every layer type, on a (2, 4, 1)
mesh with synchronous checkpoints, so a compiled train step takes a few seconds on 2 cores
and identical programs are shared through the persistent compilation cache (conftest.py).
Test modules import these from here, never from one another.
"""

from __future__ import annotations

import numpy as np

from stable_audio_jax import config_lib
from stable_audio_jax.demo_corpus.synthetic import synth_clip
from stable_audio_jax.models import htsat
from stable_audio_jax.models.text_encoder import TextEncoderConfig
from stable_audio_jax.models.unet import UNetConfig

# ----------------------------------------------------------------------------------------- VAE
SAMPLE_SIZE = 2048  # the micro VAE's crop, in samples


def micro_vae_config(**trainer):
    """A 4-channel Oobleck VAE (8x downsampling), two discriminator scales, `SAMPLE_SIZE`-sample
    crops, global batch 8; `trainer` overrides `config.trainer`."""
    model = dict(
        config_lib.SAO_AUTOENCODER,
        latent_dim=4,
        strides=(2, 4),
        encoder_channels=4,
        encoder_multipliers=(1, 2, 4),
        decoder_channels=4,
        decoder_multipliers=(1, 2, 4),
    )
    c = config_lib.vae_config(model, discriminator_filters=4)
    c.discriminator.n_ffts = (256, 128)
    c.discriminator.hop_lengths = (64, 32)
    c.discriminator.win_lengths = (256, 128)
    c.loss.stft.fft_sizes = (256, 128, 64)
    c.loss.stft.hop_sizes = (64, 32, 16)
    c.loss.warmup_steps = 2  # so the adversarial branch and discriminator steps run too
    c.optimizer.generator = config_lib.adamw_config(3e-3, warmup=0.0)
    c.optimizer.discriminator = config_lib.adamw_config(1e-3, warmup=0.0)
    c.ema.beta = 0.9
    c.data.sample_size = SAMPLE_SIZE
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.mesh.shape = (2, 4, 1)
    c.trainer.update(dict(num_steps=4, log_every=1, eval_every=0, checkpoint_every=100, async_checkpointing=False))
    c.trainer.update(trainer)
    return c


def fixed_batch(batch_size=8, seed=0):
    """A deterministic batch of synthetic music crops, `[batch, SAMPLE_SIZE, 2]`."""
    rng = np.random.default_rng(seed)
    clips = [synth_clip(rng, seconds=0.3)[0] for _ in range(batch_size)]
    return {"audio": np.stack([c[2000 : 2000 + SAMPLE_SIZE] for c in clips]).astype(np.float32)}


# ---------------------------------------------------------------------------------------- CLAP
VOCAB_SIZE = 512  # the micro CLAP's tokenizer vocabulary


def micro_clap_config(data: dict, **trainer):
    """The micro CLAP (1-layer text tower, a two-stage HTSAT of width 16) on `data` (a dict of
    `tokenizer`, `train` and `valid` paths, e.g. `test_clap`'s `captioned_data`), mesh (2, 4, 1)."""
    text = dict(
        TextEncoderConfig.tiny(vocab_size=VOCAB_SIZE).to_dict(),
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        mlp_dim=64,
        pooling="mean",
    )
    audio = htsat.demo(
        n_mels=16,
        spec_size=32,
        freq_ratio=2,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 2),
        window_size=4,
        drop_path_rate=0.0,
    ).to_dict()
    c = config_lib.clap_config(text, audio, embed_dim=32)
    c.text.tokenizer = data["tokenizer"]
    c.data.train_shards = data["train"]
    c.data.eval_shards = data["valid"]
    c.text.max_length = 32
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.optimizer = config_lib.adamw_config(2e-3, b1=0.9, b2=0.99, weight_decay=0.0, inv_gamma=1e6, warmup=0.0)
    c.ema.beta = 0.9
    c.mesh.shape = (2, 4, 1)
    c.trainer.update(dict(num_steps=4, log_every=1, eval_every=0, checkpoint_every=100, async_checkpointing=False))
    c.trainer.update(trainer)
    return c


# ----------------------------------------------------------------------------------- diffusion
WINDOW = 8192  # samples: 1024 latent frames of the micro VAE (8x)
TEXT_LENGTH = 16  # text tokens the micro U-Net cross-attends to


def micro_diffusion_config(data: dict, **trainer):
    """A micro U-Net (width 16, 4 latent channels, 32-wide text features) on the latents of
    `data["latents"]`, pretransform from `data["vae"]` / `data["clap"]`, `WINDOW`-sample
    windows, global batch 8; `trainer` overrides `config.trainer`."""
    unet = UNetConfig.tiny(in_channels=4, text_length=TEXT_LENGTH, context_features=32).to_dict()
    unet.update(channels=16, resnet_groups=4, transformer_groups=16, attention_heads=2)
    c = config_lib.diffusion_config(unet)
    c.pretransform.update(vae_dir=data["vae"], clap_dir=data["clap"], downsampling_ratio=8)
    c.data.train_shards = data["latents"]
    c.data.sample_size = WINDOW
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.optimizer = config_lib.diffusion_optimizer_config(
        2e-3, b1=0.9, b2=0.99, weight_decay=0.0, inv_gamma=1e6, warmup=0.0
    )
    c.ema.beta = 0.9
    c.mesh.shape = (2, 4, 1)
    c.trainer.update(dict(num_steps=4, log_every=1, eval_every=0, checkpoint_every=100, async_checkpointing=False))
    c.trainer.update(trainer)
    return c
