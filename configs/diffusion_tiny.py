"""Tiny timing-conditioned latent diffusion for the CPU demo and tests.

It trains on windows pre-encoded by the tiny VAE (64x, 32 latent channels) and the tiny
CLAP (128-d text features, 77 tokens): `--config.data.train_shards=<latents>`,
`--config.pretransform.vae_dir=...` and `--config.pretransform.clap_dir=...`. The window
is 524,288 samples (11.9 s, 8192 latent frames), so `seconds_total` 3, 6 and 10 all end
inside it.

The U-Net is narrow (32-128 channels) but deep (five 4x levels, attention on the coarsest
three), and unlike SA 1.0 it gets timing three ways: as cross-attention tokens, as global
conditioning in its FiLM mapping, and per frame, as the seconds left before
`seconds_total` at every latent frame (`unet.frame_features`, with `model.frame_seconds` =
64 / 44100; plus sinusoidal frame positions). In a CPU-sized run the timing tokens alone
do not teach a model this small where a clip should end; the per-frame feature does (the
demo reports the timing errors it measures).

`--config=configs/diffusion_tiny.py:rectified_flow` (or `:rf_denoiser`) trains the same model
on the rectified-flow objective, sampled with the flow samplers (`diffusion/flow_samplers.py`).
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models.unet import UNetConfig


def get_config(objective: str = "v"):
    unet = UNetConfig.tiny(in_channels=32, text_length=77, context_features=128).to_dict()
    unet.update(
        multipliers=(1, 1, 2, 2, 4, 4),
        factors=(4, 4, 4, 4, 4),
        num_blocks=(1, 1, 1, 1, 1),
        attentions=(0, 0, 0, 1, 1, 1),
        global_features=256,
        position_features=32,
        frame_features=8,
    )
    c = config_lib.diffusion_config(unet, global_timing=True, objective=objective)
    config_lib.tiny_diffusion_recipe(c)
    c.model.frame_seconds = c.pretransform.downsampling_ratio / c.data.sample_rate
    c.data.sample_size = 524_288
    c.sampling.rescale_phi = 0.0  # the demo's timing figures were measured without CFG rescale
    return c
