"""Parity of ARC's pieces with stable-audio-tools 0.0.19 on a fixed batch.

tests/fixtures/arc_reference.npz and arc_state.safetensors were written by
tests/reference/make_arc_reference.py: the reference `DiffusionTransformer` (random weights,
2 blocks) as both players, `models/arc.py: ConvDiscriminator` as the score head on its layer-0
hidden states (`exit_layer_ix=0`), and `training/arc.py`'s losses. Here the same weights run
through our DiT (the discriminator's cut with depth 1 and `return_hidden`), `ConvScoreHead`
and the relativistic losses.

Tolerance (float32 on both sides): max |jax - torch| <= 1e-4 * max(1, max |torch|).
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.convert.sao_dit import dit_params_from_state_dict
from stable_audio_jax.convert.state_dict import StateDictReader, load_state_dict
from stable_audio_jax.diffusion import flow
from stable_audio_jax.losses.adversarial import relativistic_discriminator_loss, relativistic_generator_loss
from stable_audio_jax.models.arc_discriminator import DOWNSAMPLING_LAYERS, ConvScoreHead
from stable_audio_jax.models.dit import DiffusionTransformer, DiTConfig
from tests.fixture_paths import FIXTURES
from tests.parity import assert_parity

pytestmark = pytest.mark.parity

REF = dict(np.load(os.path.join(FIXTURES, "arc_reference.npz")))
STATE = dict(load_state_dict(os.path.join(FIXTURES, "arc_state.safetensors")))
CONFIG = DiTConfig(io_channels=4, embed_dim=64, num_heads=2, depth=2, cond_token_dim=32, global_cond_dim=8, ff_mult=1)
DISCRIMINATOR = dataclasses.replace(CONFIG, depth=1)  # exit_layer_ix=0: the first block only


def _channels_last(name: str) -> jnp.ndarray:
    return jnp.asarray(REF[name]).transpose(0, 2, 1)


def _head_params() -> dict:
    """`ConvDiscriminator.layers` (conv, GroupNorm, SiLU) x 4 + conv, in our head's names."""
    conv = lambda i: {
        "kernel": STATE[f"head.layers.{i}.weight"].transpose(2, 1, 0),
        "bias": STATE[f"head.layers.{i}.bias"],
    }
    params = {"to_score": conv(3 * DOWNSAMPLING_LAYERS)}
    for i in range(DOWNSAMPLING_LAYERS):
        params[f"conv_{i}"] = conv(3 * i)
        params[f"norm_{i}"] = {
            "scale": STATE[f"head.layers.{3 * i + 1}.weight"],
            "bias": STATE[f"head.layers.{3 * i + 1}.bias"],
        }
    return params


@pytest.fixture(scope="module")
def players():
    generator = dit_params_from_state_dict(StateDictReader(STATE, "fixture"), CONFIG)
    backbone = {k: v for k, v in generator.items() if k not in ("layers_1", "project_out", "postprocess_conv")}
    return generator, backbone, _head_params()


def _scores(backbone, head, x, context):
    hidden = DiffusionTransformer(DISCRIMINATOR).apply(
        {"params": backbone}, x, REF["t_gan"], context, REF["global_cond"], True
    )
    return hidden, ConvScoreHead().apply({"params": head}, hidden)


def test_generator_one_step_estimate(players):
    generator, _, _ = players
    x_t = flow.add_noise(_channels_last("x0"), _channels_last("noise"), REF["t"])
    v = DiffusionTransformer(CONFIG).apply({"params": generator}, x_t, REF["t"], REF["cond"], REF["global_cond"])
    assert_parity(v.transpose(0, 2, 1), REF["v"], "velocity")
    assert_parity(flow.denoised(x_t, REF["t"], v).transpose(0, 2, 1), REF["denoised"], "denoised")


def test_discriminator_hidden_states_scores_and_losses(players):
    _, backbone, head = players
    real = flow.add_noise(_channels_last("x0"), _channels_last("noise_gan"), REF["t_gan"])
    fake = flow.add_noise(_channels_last("denoised"), _channels_last("noise_gan"), REF["t_gan"])
    hidden, scores_real = _scores(backbone, head, real, REF["cond"])
    assert_parity(hidden, REF["hidden_real"], "hidden states of layer 0")
    _, scores_fake = _scores(backbone, head, fake, REF["cond"])
    _, scores_swapped = _scores(backbone, head, real, jnp.roll(REF["cond"], -1, axis=0))
    for name, scores in (("real", scores_real), ("fake", scores_fake), ("swapped", scores_swapped)):
        assert_parity(scores.transpose(0, 2, 1), REF[f"scores_{name}"], f"scores {name}")
    assert_parity(relativistic_generator_loss(scores_real, scores_fake), REF["loss_generator"], "generator loss")
    assert_parity(
        relativistic_discriminator_loss(scores_real, scores_fake), REF["loss_discriminator"], "discriminator loss"
    )
    assert_parity(
        relativistic_discriminator_loss(scores_real, scores_swapped), REF["loss_contrastive"], "contrastive loss"
    )
