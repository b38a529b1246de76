"""Tiny latent diffusion for CPU tests and the demo: a 3-level U-Net of width 32-64.

It trains on shards pre-encoded by the tiny VAE (64x, 32 latent channels) and the tiny
CLAP (128-d text features, 77 tokens): `--config.data.train_shards=<latents>`,
`--config.pretransform.vae_dir=...` and `--config.pretransform.clap_dir=...`. The window
is 131,072 samples (2.97 s, 2048 latent frames).
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models.unet import UNetConfig


def get_config():
    c = config_lib.diffusion_config(UNetConfig.tiny(in_channels=32, text_length=77, context_features=128).to_dict())
    c.pretransform.downsampling_ratio = 64
    c.data.sample_size = 131_072
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.optimizer = config_lib.adamw_config(1e-3, b1=0.9, b2=0.99, weight_decay=1e-3, inv_gamma=1e6, warmup=0.95)
    c.ema.beta = 0.99
    c.sampling.steps = 50
    c.trainer.num_steps = 400
    c.trainer.log_every = 10
    c.trainer.eval_every = 200
    c.trainer.checkpoint_every = 200
    return c
