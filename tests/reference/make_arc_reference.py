"""Writes tests/fixtures/arc_reference.npz and arc_state.safetensors for tests/test_arc_parity.py.

Run once, with the PyTorch reference (stable-audio-tools 0.0.19, torch 2.13 CPU), from the
repository root:

    PYTHONPATH=tests/reference/shims:tests/reference $REFERENCE_PYTHON tests/reference/make_arc_reference.py

The players of ARC on a fixed batch, with the reference's modules and random weights:
a `DiffusionTransformer` shaped like make_dit_reference.py's "rope_full" case (embed 64,
2 heads, depth 2, 32-d context, global 8, io 4; every weight random, float16-exact) and a
`models/arc.py: ConvDiscriminator(channels=64)`. The steps follow
`training/arc.py: ARCTrainingWrapper.training_step` (generator branch, discriminator branch
with the contrastive prompt swap), the discriminator reading the DiT's hidden states with
`exit_layer_ix=0`; the two losses come from the wrapper's own `calculate_disc_loss`
(relativistic, weight 1) and the generator's `softplus(real - fake)` line. That method needs a
whole Lightning module, so its lines are followed here step by step on these modules.

Stored (PyTorch layout `[batch, channels, frames]`, float32):
  x0, noise, noise_gan [2, 4, 128]; t, t_gan [2]; cond [2, 6, 32] (+ its roll by one row),
  global_cond [2, 8]; v [2, 4, 128] the generator's velocity at (x_t, t); denoised;
  hidden_real [2, 129, 64] the discriminator's layer-0 states of the re-noised data;
  scores_real, scores_fake, scores_swapped [2, 1, 5]; loss_generator, loss_discriminator,
  loss_contrastive (scalars).
arc_state.safetensors holds the DiT under `model.model.` and the head under `head.`.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import stable_audio_tools
import torch

# training/arc.py subclasses Lightning's LightningModule and its package imports every training
# wrapper (wandb, Lightning loggers, torchvision models); the functions used here need none of
# that, so the package, its utils and Lightning are stand-ins and arc.py itself is real.
_training = types.ModuleType("stable_audio_tools.training")
_training.__path__ = [os.path.join(os.path.dirname(stable_audio_tools.__file__), "training")]
sys.modules["stable_audio_tools.training"] = _training
sys.modules["stable_audio_tools.training.utils"] = types.SimpleNamespace(
    create_optimizer_from_config=None, create_scheduler_from_config=None
)
sys.modules["pytorch_lightning"] = types.SimpleNamespace(LightningModule=torch.nn.Module)

from make_dit_reference import CASES, GLOBAL_DIM, IO_CHANNELS, build, randomise  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from stable_audio_tools.models.arc import ConvDiscriminator  # noqa: E402
from stable_audio_tools.training.arc import ARCTrainingWrapper, euler_step  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
BATCH, FRAMES, TOKENS, EXIT_LAYER = 2, 128, 6, 0


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(7)
    model = build(CASES["rope_full"]).eval()
    randomise(model, generator)
    head = ConvDiscriminator(channels=64).eval()
    for p in head.parameters():
        p.copy_((torch.randn(p.shape, generator=generator) / np.sqrt(max(1, np.prod(p.shape[1:])))).half().float())

    x0 = torch.randn(BATCH, IO_CHANNELS, FRAMES, generator=generator)
    noise = torch.randn(BATCH, IO_CHANNELS, FRAMES, generator=generator)
    noise_gan = torch.randn(BATCH, IO_CHANNELS, FRAMES, generator=generator)
    t, t_gan = torch.tensor([0.35, 0.9]), torch.tensor([0.6, 0.2])
    cond = torch.randn(BATCH, TOKENS, 32, generator=generator)
    global_cond = torch.randn(BATCH, GLOBAL_DIM, generator=generator)
    rolled = torch.roll(cond, -1, dims=0)  # row i under row i + 1's prompt

    def discriminate(x, context):
        hidden = model(
            x, t_gan, cross_attn_cond=context, global_embed=global_cond, cfg_scale=1.0, exit_layer_ix=EXIT_LAYER
        )
        return hidden, head(hidden.transpose(1, 2))

    x_t = x0 * (1 - t)[:, None, None] + noise * t[:, None, None]
    v = model(x_t, t, cross_attn_cond=cond, global_embed=global_cond, cfg_scale=1.0)
    denoised = euler_step(x_t, v, t, torch.zeros_like(t))
    real = x0 * (1 - t_gan)[:, None, None] + noise_gan * t_gan[:, None, None]
    fake = denoised * (1 - t_gan)[:, None, None] + noise_gan * t_gan[:, None, None]
    hidden_real, scores_real = discriminate(real, cond)
    _, scores_fake = discriminate(fake, cond)
    _, scores_swapped = discriminate(real, rolled)
    wrapper = types.SimpleNamespace(dis_gan_weight=1.0)
    loss_discriminator = ARCTrainingWrapper.calculate_disc_loss(wrapper, scores_real, scores_fake)
    loss_contrastive = ARCTrainingWrapper.calculate_disc_loss(wrapper, scores_real, scores_swapped)
    loss_generator = torch.nn.functional.softplus(scores_real - scores_fake).mean()

    # Weights are float16-exact and stored so; the LayerNorm beta and RoPE buffers as built.
    state = {
        f"model.model.{k}": v.contiguous() if k.endswith((".beta", "inv_freq")) else v.contiguous().half()
        for k, v in model.state_dict().items()
    }
    state.update({f"head.{k}": v.contiguous().half() for k, v in head.state_dict().items()})
    save_file(state, os.path.join(OUT, "arc_state.safetensors"))
    arrays = dict(
        x0=x0,
        noise=noise,
        noise_gan=noise_gan,
        t=t,
        t_gan=t_gan,
        cond=cond,
        global_cond=global_cond,
        rolled=rolled,
        v=v,
        denoised=denoised,
        hidden_real=hidden_real,
        scores_real=scores_real,
        scores_fake=scores_fake,
        scores_swapped=scores_swapped,
        loss_generator=loss_generator,
        loss_discriminator=loss_discriminator,
        loss_contrastive=loss_contrastive,
    )
    np.savez_compressed(os.path.join(OUT, "arc_reference.npz"), **{k: a.numpy() for k, a in arrays.items()})
    print(
        {k: float(arrays[k]) for k in ("loss_generator", "loss_discriminator", "loss_contrastive")},
        "scores",
        tuple(scores_real.shape),
        "hidden",
        tuple(hidden_real.shape),
    )


if __name__ == "__main__":
    main()
