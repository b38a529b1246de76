"""ARC post-training of a tiny rectified-flow DiT (`configs/dit_tiny.py:rf_denoiser`) for CPU runs.

    python launch/train.py --config=configs/arc_dit_tiny.py --workdir=runs/arc_tiny \
        --config.init_from=runs/dit_rf --config.data.train_shards=latents/train \
        --config.pretransform.vae_dir=runs/vae --config.pretransform.clap_dir=runs/clap

`init_from` is required: the rectified-flow run (or pretrained directory) both players start
from. The generator then samples in 8 pingpong steps without CFG (`launch/sample.py
--diffusion_dir=runs/arc_tiny`); the discriminator is the DiT's first block plus the score head.
A short run with a constant learning rate (ARC post-training takes thousands of steps, not
pre-training's hundreds of thousands).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # config files load by path

import dit_tiny  # noqa: E402

from stable_audio_jax import config_lib  # noqa: E402


def get_config():
    c = config_lib.arc_config(dit_tiny.get_config("rf_denoiser"))
    c.init_from = config_lib.REQUIRED
    c.arc.discriminator_layer = 0  # dit_tiny has two blocks
    c.optimizer.update(lr=1e-4, inv_gamma=1e9, warmup=0.0)
    c.diffusion.cfg_dropout = 0.1
    c.trainer.num_steps = 1000
    c.trainer.checkpoint_every = 250
    c.trainer.eval_every = 250
    c.ema.beta = 0.999
    return c
