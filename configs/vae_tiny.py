"""Tiny VAE for the CPU demo and tests: the Oobleck shape at a fraction of the width.

256x downsampling (strides 2, 4, 4, 8) into 32 latent channels; SnakeBeta as in SAO.
"""

from stable_audio_jax import config_lib


def get_config():
    model = dict(config_lib.SAO_AUTOENCODER,
                 latent_dim=32, strides=(2, 4, 4, 8),
                 encoder_channels=8, encoder_multipliers=(1, 2, 4, 8, 16),
                 decoder_channels=8, decoder_multipliers=(1, 2, 4, 8, 16))
    c = config_lib.vae_config(model, discriminator_filters=8)
    c.data.sample_size = 16384  # 0.37 s crops keep a CPU step around a second
    c.data.batch_size = 4
    c.data.worker_count = 1
    # Faster schedule than the paper's for a few-minute run.
    c.optimizer.generator = config_lib.adamw_config(1e-3, warmup=0.95)
    c.optimizer.discriminator = config_lib.adamw_config(1e-3, warmup=0.95)
    c.loss.warmup_steps = 200
    c.ema.beta = 0.99
    c.trainer.num_steps = 400
    c.trainer.log_every = 10
    c.trainer.eval_every = 200
    c.trainer.checkpoint_every = 200
    return c
