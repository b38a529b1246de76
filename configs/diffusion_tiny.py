"""Tiny timing-conditioned latent diffusion for the CPU demo and tests.

It trains on windows pre-encoded by the tiny VAE (64x, 32 latent channels) and the tiny
CLAP (128-d text features, 77 tokens): `--config.data.train_shards=<latents>`,
`--config.pretransform.vae_dir=...` and `--config.pretransform.clap_dir=...`. The window
is 524,288 samples (11.9 s, 8192 latent frames), so `seconds_total` 3, 6 and 10 all end
inside it.

The U-Net is narrow (32-128 channels) but deep (five 4x levels, attention on the coarsest
three), and unlike SA 1.0 it gets timing twice, as cross-attention tokens and as global
conditioning in its FiLM mapping, plus sinusoidal frame positions. Without the last two,
1000 CPU steps did not learn where content should end (every clip ran to the end of the
window); with them, silence after `seconds_total` appears within 2000 steps (about 11
minutes on 2 cores; the demo reports the measured timing errors).
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models.unet import UNetConfig


def get_config():
    unet = UNetConfig.tiny(in_channels=32, text_length=77, context_features=128).to_dict()
    unet.update(multipliers=(1, 1, 2, 2, 4, 4), factors=(4, 4, 4, 4, 4), num_blocks=(1, 1, 1, 1, 1),
                attentions=(0, 0, 0, 1, 1, 1), global_features=256, position_features=32)
    c = config_lib.diffusion_config(unet)
    c.model.global_timing = True
    c.pretransform.downsampling_ratio = 64
    c.data.sample_size = 524_288
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.optimizer = config_lib.diffusion_optimizer_config(1e-3, b1=0.9, b2=0.99, weight_decay=1e-3, inv_gamma=1e6,
                                                        warmup=0.95)
    c.ema.beta = 0.99
    c.sampling.steps = 100
    c.trainer.num_steps = 2000
    c.trainer.log_every = 10
    c.trainer.eval_every = 1000
    c.trainer.checkpoint_every = 500
    return c
