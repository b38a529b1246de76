"""Tiny VAE for the CPU demo: the Oobleck shape at a fraction of the width and depth.

64x downsampling (strides 2, 4, 8) into 32 latent channels, 16 base channels, SnakeBeta
as in SAO: on the demo data this shape reconstructs better after a few CPU minutes than a
more compressed one (e.g. 256x with 8 channels).
"""

from stable_audio_jax import config_lib


def get_config():
    model = dict(
        config_lib.SAO_AUTOENCODER,
        latent_dim=32,
        strides=(2, 4, 8),
        encoder_channels=16,
        encoder_multipliers=(1, 2, 4, 8),
        decoder_channels=16,
        decoder_multipliers=(1, 2, 4, 8),
    )
    c = config_lib.vae_config(model, discriminator_filters=8)
    c.data.sample_size = 16384  # 0.37 s crops: ~0.85 s per warm-up step on 2 CPU cores
    c.data.batch_size = 4
    c.data.worker_count = 1
    # Faster schedule than the paper's for a few-minute run.
    c.optimizer.generator = config_lib.adamw_config(1e-3, warmup=0.95)
    c.optimizer.discriminator = config_lib.adamw_config(1e-3, warmup=0.95)
    # Reconstruction first, then a short adversarial phase (~2 s per step on CPU, as the
    # discriminator's 2-D convolutions over five spectrograms dominate).
    c.loss.warmup_steps = 300
    c.ema.beta = 0.99
    c.trainer.num_steps = 360
    c.trainer.log_every = 10
    c.trainer.eval_every = 120
    c.trainer.checkpoint_every = 120
    return c
