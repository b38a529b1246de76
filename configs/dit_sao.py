"""Stable Audio Open latent diffusion (stable-audio-tools models/dit.py, SAO's model_config.json): the 1,056,828,544-parameter DiT.

47.55 s window = 2,097,152 samples = 1024 latents at the SAO VAE's 2048x; 64 latent
channels; context = 128 T5-base tokens (768-d, padding zeroed) + 2 timing tokens (SAO's
learned-Fourier number embedders), and `[start || total]` (1536-d) as the global token.
v-objective, cosine schedule, 10% conditioning dropout (an all-zero context), AdamW 5e-5
with InverseLR(inv_gamma 1e6, power 0.5, warmup 0.99); sampling with DPM-Solver++(3M) SDE,
100 steps, CFG 7 without rescale over sigma 0.3..500 (`sampling_config.SAO`, the release's settings).

Memory and speed: bfloat16 compute with float32 params, Adam state and EMA (the loss and
the sampler's arithmetic stay float32), and every transformer block rematerialised
keeping its matmul outputs without batch dimensions (the projections and SwiGLU; norms
and the [batch, heads, 1025, 1025] attention logits are recomputed), as the reference
checkpoints every block. `--config.model.dit.remat_policy=none` trades that memory back
for speed; `--config.optimizer.grad_accum_steps=k` splits each global batch.
"""

from stable_audio_jax import config_lib
from stable_audio_jax.diffusion import sampling_config
from stable_audio_jax.models.dit import DiTConfig


def get_config():
    c = config_lib.diffusion_config(
        dit=DiTConfig.sao().to_dict(), timing_kind="number", global_timing=True, text_tokens=128
    )
    c.sampling.update(sampling_config.SAO.to_dict())
    c.dtype = "bfloat16"  # compute; c.param_dtype stays float32
    c.model.dit.remat_policy = "dots_with_no_batch_dims_saveable"  # see models/remat.py
    c.optimizer = config_lib.diffusion_optimizer_config(
        5e-5, b1=0.9, b2=0.999, weight_decay=1e-3, inv_gamma=1e6, power=0.5, warmup=0.99
    )
    c.pretransform.downsampling_ratio = 2048
    c.data.sample_size = 2_097_152
    c.data.batch_size = 256
    c.data.worker_count = 8
    c.trainer.num_steps = 640_000
    c.trainer.log_every = 100
    c.trainer.eval_every = 5_000
    c.trainer.checkpoint_every = 10_000
    return c
