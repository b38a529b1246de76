"""Stable Audio 1.0 latent diffusion (arXiv 2402.04825): the 906,679,744-parameter U-Net.

95.1 s window = 4,194,304 samples = 4096 latents at the SA 1.0 VAE's 1024x; 64 latent
channels; context = 77 CLAP tokens (768-d, penultimate layer) + 2 per-second timing
tokens (learned 513-row tables). v-objective, cosine schedule, 10% conditioning dropout,
sampling with DPM-Solver++ (100 steps), CFG 6 with rescale 0.4 (the paper's sampling settings).

Memory and speed: bfloat16 compute with float32 params, Adam state and EMA (the loss and
the sampler's arithmetic stay float32), and every ResNet / transformer block rematerialised
keeping only its matmul outputs without batch dimensions: the attention projections and
MLPs are saved, the convolutions, norms and the [batch, heads, 4096, 4096] attention
logits of the first level are recomputed. `--config.model.unet.remat_policy=none` trades
that memory back for speed; `--config.optimizer.grad_accum_steps=k` splits each global
batch into k micro-batches when even the rematerialised activations do not fit.
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models.unet import UNetConfig


def get_config():
    c = config_lib.diffusion_config(UNetConfig.sa1().to_dict(), timing_kind="table")
    c.dtype = "bfloat16"  # compute; c.param_dtype stays float32
    c.model.unet.remat_policy = "dots_with_no_batch_dims_saveable"  # see models/remat.py
    c.optimizer.grad_accum_steps = 1  # k > 1 when 256 / (k * data-parallel devices) examples still do not fit
    c.pretransform.downsampling_ratio = 1024
    c.data.sample_size = 4_194_304
    c.data.batch_size = 256
    c.data.worker_count = 8
    c.trainer.num_steps = 640_000
    c.trainer.log_every = 100
    c.trainer.eval_every = 5_000
    c.trainer.checkpoint_every = 5_000
    return c
