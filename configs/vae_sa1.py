"""Stable Audio 1.0 VAE: DAC-style encoder/decoder without quantiser, Snake, 1024x, 64 latents,
133,431,300 params.

Memory knobs (`model.remat_policy`, `optimizer.grad_accum_steps`) as in `vae_sao.py`.
"""

from stable_audio_jax import config_lib


def get_config():
    c = config_lib.vae_config(config_lib.SA1_AUTOENCODER, discriminator_filters=32)
    c.data.sample_size = 65536
    c.data.batch_size = 8
    c.loss.kl_weight = 1e-4  # the paper's value (the reference repo config has 1e-6)
    c.trainer.num_steps = 1_000_000
    c.trainer.eval_every = 5000
    c.trainer.checkpoint_every = 5000
    return c
