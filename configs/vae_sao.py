"""Stable Audio Open VAE: Oobleck, SnakeBeta, 2048x, 64 latents, 156,112,514 params.

Memory knobs, off by default: `--config.model.remat_policy` rematerialises the encoder and
decoder blocks (see `AutoencoderConfig`), `--config.optimizer.grad_accum_steps=k` takes each
generator / discriminator update from k micro-batches of the global batch.
"""

from stable_audio_jax import config_lib


def get_config():
    c = config_lib.vae_config(config_lib.SAO_AUTOENCODER, discriminator_filters=64)
    c.data.sample_size = 65536  # 1.49 s, the SA2/SAO VAE training window
    c.data.batch_size = 8
    c.trainer.num_steps = 1_000_000
    c.trainer.eval_every = 5000
    c.trainer.checkpoint_every = 5000
    return c
