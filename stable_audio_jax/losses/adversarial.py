"""Adversarial losses: hinge and feature matching for the VAE's multi-scale discriminator,
and the relativistic pair for ARC post-training.

Inputs are per-scale lists as returned by `MultiScaleSTFTDiscriminator`: logits
`[batch, frames, bins, 1]` per scale and, per scale, a list of feature maps. Each loss is
computed per scale and then averaged over the scales (stable-audio-tools >= 0.0.17;
0.0.16 summed over the scales instead, i.e. 5x larger with five scales). Results are
float32 scalars whatever the discriminator's compute dtype. The relativistic losses take two
score maps of one shape (real and fake, paired by row).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def _check_scales(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b) or not a:
        raise ValueError(f"expected equal, non-zero numbers of scales, got {len(a)} and {len(b)}")


def _mean_f32(x: jax.Array) -> jax.Array:
    return jnp.mean(x.astype(jnp.float32))


def hinge_discriminator_loss(logits_real: Sequence[jax.Array], logits_fake: Sequence[jax.Array]) -> jax.Array:
    """`mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`, averaged over scales."""
    _check_scales(logits_real, logits_fake)
    per_scale = [
        _mean_f32(jax.nn.relu(1.0 - real.astype(jnp.float32))) + _mean_f32(jax.nn.relu(1.0 + fake.astype(jnp.float32)))
        for real, fake in zip(logits_real, logits_fake)
    ]
    return sum(per_scale) / len(per_scale)


def hinge_generator_loss(logits_fake: Sequence[jax.Array]) -> jax.Array:
    """`-mean(D(fake))`, averaged over scales."""
    if not logits_fake:
        raise ValueError("expected at least one scale")
    return -sum(_mean_f32(fake) for fake in logits_fake) / len(logits_fake)


def feature_matching_loss(
    features_real: Sequence[Sequence[jax.Array]],
    features_fake: Sequence[Sequence[jax.Array]],
) -> jax.Array:
    """Mean L1 distance of feature maps: per scale averaged over layers, then over scales.

    The real features are not stopped here; a generator update differentiates only with
    respect to the generator's parameters, on which they do not depend.
    """
    _check_scales(features_real, features_fake)
    per_scale = []
    for real_maps, fake_maps in zip(features_real, features_fake):
        _check_scales(real_maps, fake_maps)
        distances = [
            _mean_f32(jnp.abs(real.astype(jnp.float32) - fake.astype(jnp.float32)))
            for real, fake in zip(real_maps, fake_maps)
        ]
        per_scale.append(sum(distances) / len(distances))
    return sum(per_scale) / len(per_scale)


def relativistic_discriminator_loss(scores_real: jax.Array, scores_fake: jax.Array) -> jax.Array:
    """`mean(softplus(-(D(real) - D(fake))))`: the relativistic pairing GAN loss of ARC (arXiv
    2505.08175; stable-audio-tools `training/arc.py` `calculate_disc_loss`), on paired
    score maps of one shape; also the contrastive loss with D(fake) the scores under swapped prompts."""
    return _mean_f32(jax.nn.softplus(-(scores_real.astype(jnp.float32) - scores_fake.astype(jnp.float32))))


def relativistic_generator_loss(scores_real: jax.Array, scores_fake: jax.Array) -> jax.Array:
    """`mean(softplus(D(real) - D(fake)))`: the generator's side of the relativistic loss."""
    return _mean_f32(jax.nn.softplus(scores_real.astype(jnp.float32) - scores_fake.astype(jnp.float32)))
