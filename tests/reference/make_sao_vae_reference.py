"""Writes the Oobleck VAE and timing-conditioner fixtures of tests/test_sao_vae_parity.py.

Run once, with the PyTorch reference (stable-audio-tools 0.0.19, torch 2.13 CPU):

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_vae_reference.py

The models are built by stable-audio-tools itself (`create_autoencoder_from_config`,
`create_multi_conditioner_from_conditioning_config`), so the state dicts carry the
reference key names. Their weights are randomised away from the initialisation (the
SnakeBeta log-scale `alpha`/`beta`, the weight-norm magnitudes `weight_g` and the biases
included), so that a converter that drops or mis-transposes any of them fails.

The VAE is the SAO architecture shrunk: channels 8 (SAO: 128), c_mults [1, 2, 4], strides
[2, 4, 8] (64x), encoder latent_dim 16 = 2 x 8, decoder latent_dim 8, SnakeBeta, no tanh.
(Channels 8 rather than 16 keeps the fixtures under 400 KB; the code paths are the same.)

Files (in tests/fixtures/):
  sao_vae_state.safetensors    standalone autoencoder layout: `encoder.layers.*`, `decoder.layers.*`
  sao_vae_reference.npz        PyTorch layout `[batch, channels, time]`, float32 unless noted:
    audio      float16 [2, 2, 8192]  encoder input (values exact in float16; the reference
                                      ran on their float32 copy, so nothing is lost)
    encoder_out        [2, 16, 128]  pre-bottleneck output; channels 0-7 mean, 8-15 scale
    mean               [2, 8, 128]   the VAE bottleneck's mean (its deterministic part)
    kl                 []            the bottleneck's KL (does not depend on the sample)
    latents            [2, 8, 32]    decoder input
    decoded            [2, 2, 2048]  decoder output
  sao_timing_state.safetensors diffusion-checkpoint layout: `conditioner.conditioners.seconds_{start,total}.*`
  sao_timing_reference.npz     seconds_start, seconds_total [7] (some outside [0, 512]);
                               start_embeds, total_embeds [7, 16] (the conditioners' [7, 1, 16] squeezed)
"""

from __future__ import annotations

import os

import numpy as np
import torch
from safetensors.torch import save_file
from stable_audio_tools.models.autoencoders import create_autoencoder_from_config
from stable_audio_tools.models.bottleneck import vae_sample
from stable_audio_tools.models.conditioners import create_multi_conditioner_from_conditioning_config

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))

CHANNELS, C_MULTS, STRIDES, LATENT_DIM = 8, [1, 2, 4], [2, 4, 8], 8
TIMING_DIM = 16
SECONDS_START = [-5.0, 0.0, 3.7, 47.0, 511.5, 600.0, 1.0e4]
SECONDS_TOTAL = [1.0e4, 512.0, 95.25, 30.0, 1.0, 0.0, -1.0]


def autoencoder_config() -> dict:
    shared = {"channels": CHANNELS, "c_mults": C_MULTS, "strides": STRIDES, "use_snake": True}
    return {
        "sample_rate": 44100,
        "model": {
            "encoder": {"type": "oobleck", "config": {**shared, "in_channels": 2, "latent_dim": 2 * LATENT_DIM}},
            "decoder": {
                "type": "oobleck",
                "config": {**shared, "out_channels": 2, "latent_dim": LATENT_DIM, "final_tanh": False},
            },
            "bottleneck": {"type": "vae"},
            "latent_dim": LATENT_DIM,
            "downsampling_ratio": int(np.prod(STRIDES)),
            "io_channels": 2,
        },
    }


def randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Moves every parameter away from its initial value, each kind in a sane range."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("alpha", "beta"):  # log scale: a, b in [0.5, 2]
            p.copy_(torch.empty_like(p).uniform_(-0.7, 0.7, generator=gen))
        elif leaf == "bias":
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif leaf == "weight_g":  # |g| = ||v|| times 0.6..1.4, so the layer's gain stays near 1
            v = dict(module.named_parameters())[name[: -len("_g")] + "_v"]
            norm = v.flatten(1).norm(dim=1).reshape(p.shape)
            p.copy_(norm * torch.empty_like(p).uniform_(0.6, 1.4, generator=gen))
        elif leaf == "weight_v":
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5, generator=gen))


def contiguous_state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()}


def make_vae(gen: torch.Generator) -> None:
    model = create_autoencoder_from_config(autoencoder_config()).eval()
    randomise(model, gen)
    save_file(contiguous_state(model), os.path.join(OUT, "sao_vae_state.safetensors"))

    audio16 = (0.5 * torch.randn(2, 2, 8192, generator=gen)).clamp(-1, 1).half()
    encoder_out = model.encoder(audio16.float())
    mean, scale = encoder_out.chunk(2, dim=1)
    _, kl = vae_sample(mean, scale)
    latents = torch.randn(2, LATENT_DIM, 32, generator=gen)
    decoded = model.decoder(latents)
    np.savez(
        os.path.join(OUT, "sao_vae_reference.npz"),
        audio=audio16.numpy(),
        encoder_out=encoder_out.numpy(),
        mean=mean.numpy(),
        kl=kl.numpy(),
        latents=latents.numpy(),
        decoded=decoded.numpy(),
    )


def make_timing() -> None:
    conditioning = {
        "cond_dim": TIMING_DIM,
        "configs": [
            {"id": name, "type": "number", "config": {"min_val": 0, "max_val": 512}}
            for name in ("seconds_start", "seconds_total")
        ],
    }
    conditioner = create_multi_conditioner_from_conditioning_config(conditioning).eval()
    save_file(contiguous_state(conditioner, "conditioner."), os.path.join(OUT, "sao_timing_state.safetensors"))
    out = conditioner(
        [{"seconds_start": s, "seconds_total": t} for s, t in zip(SECONDS_START, SECONDS_TOTAL)], device="cpu"
    )
    np.savez(
        os.path.join(OUT, "sao_timing_reference.npz"),
        seconds_start=np.asarray(SECONDS_START, np.float32),
        seconds_total=np.asarray(SECONDS_TOTAL, np.float32),
        start_embeds=out["seconds_start"][0][:, 0].numpy(),
        total_embeds=out["seconds_total"][0][:, 0].numpy(),
    )


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)  # the conditioners' init draws from the global generator
    gen = torch.Generator().manual_seed(1234)
    make_vae(gen)
    make_timing()
    for name in sorted(os.listdir(OUT)):
        if name.startswith(("sao_vae_", "sao_timing_")):
            print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
