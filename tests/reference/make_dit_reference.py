"""Writes the SAO DiT fixtures of tests/test_dit.py.

Run once, with the PyTorch reference (stable-audio-tools 0.0.19, torch 2.13 CPU, no flash-attn,
so attention is PyTorch's float32 SDPA):

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_dit_reference.py

Two small `stable_audio_tools.models.dit.DiffusionTransformer`s, configured as SAO
(`continuous_transformer`, prepended global token, timestep as global conditioning,
`project_cond_tokens=False`) but tiny:

  rope_full: embed 64, 2 heads of 32 dims (RoPE on all 32), depth 2, 32-d context tokens
             (1 key/value head for 2 query heads: grouped-query cross-attention), global 8.
  rope_half: embed 64, 1 head of 64 dims (RoPE on the first 32, as SAO), depth 1, 64-d
             context tokens, global 8.

Both have io_channels 4 and a SwiGLU of inner width 64 (ff mult 1, to keep the files
small; SAO uses 4). Every parameter is randomised, the zero-initialised ones (attention
output projections, the last SwiGLU Dense, the pre/post 1x1 convs) and the LayerNorm
gains included, so that a converter that drops, swaps or mis-transposes any of them
fails. Weights are rounded to float16 before the reference runs, and the state dicts are
stored in float16: the files stay small and the float32 copies a converter makes are the
exact weights the reference used. The LayerNorm `beta` and RoPE `inv_freq` buffers are
kept as built (zeros; the reference's frequencies).

Files (in tests/fixtures/), for each case C:
  dit_C_state.safetensors  diffusion-checkpoint layout `model.model.*` (the DiT's keys)
  dit_C_reference.npz      PyTorch layout `[batch, channels, frames]`, float32:
    x [2, 4, 12], t [2], cond [2, 6, 32|64] (rows' last two tokens zero, as padded
    text), global_cond [2, 8], negative [2, 6, 32|64], negative_mask [2, 6] bool,
    v_plain      the forward with cfg_scale 1 (no guidance),
    v_cfg6       cfg_scale 6, the unconditional half an all-zero context,
    v_cfg6_neg_rescale  cfg_scale 6, scale_phi 0.7, the negative context (its masked
                 tokens zeroed by the reference) as the unconditional half.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from safetensors.torch import save_file
from stable_audio_tools.models.dit import DiffusionTransformer

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))

CASES = {
    "rope_full": dict(embed_dim=64, num_heads=2, depth=2, cond_token_dim=32),
    "rope_half": dict(embed_dim=64, num_heads=1, depth=1, cond_token_dim=64),
}
IO_CHANNELS, GLOBAL_DIM, FF_MULT = 4, 8, 1
BATCH, FRAMES, TOKENS = 2, 12, 6


def build(case: dict) -> DiffusionTransformer:
    return DiffusionTransformer(
        io_channels=IO_CHANNELS,
        patch_size=1,
        global_cond_dim=GLOBAL_DIM,
        project_cond_tokens=False,
        transformer_type="continuous_transformer",
        ff_kwargs={"mult": FF_MULT},
        **case,
    )


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter to fresh random values exact in float16: kernels ~ N(0, 1/fan_in),
    vectors (biases, LayerNorm gains around 1, Fourier frequencies) on their own scales."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("gamma"):
                value = 1.0 + 0.3 * noise
            elif name == "timestep_features.weight":
                value = noise
            elif p.ndim == 1:
                value = 0.2 * noise
            else:
                value = noise / np.sqrt(np.prod(p.shape[1:]))
            p.copy_(value.half().float())


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for index, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(index)
        generator = torch.Generator().manual_seed(100 + index)
        model = build(case).eval()
        randomise(model, generator)
        d = case["cond_token_dim"]

        x = torch.randn(BATCH, IO_CHANNELS, FRAMES, generator=generator)
        t = torch.tensor([0.23, 0.81])
        cond = torch.randn(BATCH, TOKENS, d, generator=generator)
        cond[:, -2:] = 0.0
        global_cond = torch.randn(BATCH, GLOBAL_DIM, generator=generator)
        negative = torch.randn(BATCH, TOKENS, d, generator=generator)
        negative_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 5 + [False]])

        with torch.no_grad():
            common = dict(cross_attn_cond=cond, global_embed=global_cond)
            v_plain = model(x, t, cfg_scale=1.0, **common)
            v_cfg6 = model(x, t, cfg_scale=6.0, **common)
            v_neg = model(
                x,
                t,
                cfg_scale=6.0,
                scale_phi=0.7,
                negative_cross_attn_cond=negative,
                negative_cross_attn_mask=negative_mask,
                **common,
            )

        state = {
            f"model.model.{k}": v.detach().contiguous().half() if v.is_floating_point() else v
            for k, v in model.state_dict().items()
        }
        # The buffers are stored as built (zeros / the reference's frequencies) in float32.
        for k, v in model.state_dict().items():
            if k.endswith(".beta") or k.endswith("inv_freq"):
                state[f"model.model.{k}"] = v.contiguous()
        save_file(state, os.path.join(OUT, f"dit_{name}_state.safetensors"))
        arrays = dict(
            x=x,
            t=t,
            cond=cond,
            global_cond=global_cond,
            negative=negative,
            negative_mask=negative_mask,
            v_plain=v_plain,
            v_cfg6=v_cfg6,
            v_cfg6_neg_rescale=v_neg,
        )
        np.savez_compressed(os.path.join(OUT, f"dit_{name}_reference.npz"), **{k: v.numpy() for k, v in arrays.items()})
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{name}: {n_params:,} params; |v_plain| max {v_plain.abs().max():.3f}, "
            f"|v_cfg6| max {v_cfg6.abs().max():.3f}, |v_neg| max {v_neg.abs().max():.3f}"
        )


if __name__ == "__main__":
    main()
