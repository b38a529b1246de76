"""Stable Audio 1.0 latent diffusion (SPEC.md 3.1, 5): the 906,679,744-parameter U-Net.

95.1 s window = 4,194,304 samples = 4096 latents at the SA 1.0 VAE's 1024x; 64 latent
channels; context = 77 CLAP tokens (768-d, penultimate layer) + 2 per-second timing
tokens (learned 513-row tables). v-objective, cosine schedule, 10% conditioning dropout,
sampling with DPM-Solver++ (100 steps), CFG 6 with rescale 0.4 (SPEC.md 4.3).
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models.unet import UNetConfig


def get_config():
    c = config_lib.diffusion_config(UNetConfig.sa1().to_dict(), timing_kind="table")
    c.pretransform.downsampling_ratio = 1024
    c.data.sample_size = 4_194_304
    c.data.batch_size = 256
    c.data.worker_count = 8
    c.trainer.num_steps = 640_000
    c.trainer.log_every = 100
    c.trainer.eval_every = 5_000
    c.trainer.checkpoint_every = 5_000
    return c
