"""Tiny SAO-style DiT latent diffusion for CPU runs: `configs/diffusion_tiny.py`'s data and
conditioning with `DiTConfig.tiny()` (width 128, 2 blocks, 2 heads of 64 dims, RoPE on 32
of them, grouped-query cross-attention) as the backbone.

It trains on latents of the tiny VAE (64x, 32 latent channels) with the tiny CLAP's
128-d x 77-token text features (no projection: the DiT attends to 128-d tokens), number
timing embedders and `[start || total]` as the DiT's global token, as SAO. The window is
65,536 samples (1.49 s, 1024 latent frames): self-attention is quadratic in the frames,
and the U-Net demo's 8192-frame window would cost a [batch, 2, 8193, 8193] logit tensor
per block on a CPU. Pre-encode for it with `data/pre_encode.py --sample_size=65536`, then
`--config.data.train_shards=<latents>`, `--config.pretransform.vae_dir=...` and
`--config.pretransform.clap_dir=...`.

`--config=configs/dit_tiny.py:rectified_flow` (or `:rf_denoiser`) trains the same model on the
rectified-flow objective, sampled with the flow samplers (`diffusion/flow_samplers.py`).
Adding `,inpaint` (`:v,inpaint`, `:rectified_flow,inpaint`) makes it inpainting-conditioned
(`config_lib.inpainting_model`: masked latents and mask as extra input channels, random
training masks).
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models.dit import DiTConfig


def get_config(options: str = "v"):
    objective, *flags = options.split(",")
    unknown = sorted(set(flags) - {"inpaint"})
    if unknown:
        raise ValueError(f"configs/dit_tiny.py options are '<objective>[,inpaint]', got unknown {unknown}")
    c = config_lib.diffusion_config(
        dit=DiTConfig.tiny(io_channels=32, cond_token_dim=128).to_dict(),
        timing_kind="number",
        global_timing=True,
        text_tokens=77,
        objective=objective,
    )
    c.sampling.update(cfg_scale=7.0, rescale_phi=0.0)
    config_lib.tiny_diffusion_recipe(c)
    c.data.sample_size = 65_536
    if "inpaint" in flags:
        config_lib.inpainting_model(c)
    return c
