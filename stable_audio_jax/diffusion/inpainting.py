"""Training-free inpainting: regenerate regions of known latents, keep the rest.

The method is replacement (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", appendix I.2; RePaint, Lugmayr et al. 2022, without its
resampling jumps): at every model call, the frames to keep are set to the known latents
noised to the current level with one fixed noise draw, and the model's estimate there is
replaced by what the known latents imply (the clean latents for a denoiser, the path's
velocity `noise - known` for a rectified flow). It wraps the denoiser or the velocity, so
every sampler works unchanged; it costs no extra network evaluations (RePaint's resampling
multiplies them by its jump count); and the kept frames follow their own noising path, so
the final blend `mask * generated + (1 - mask) * known` leaves them exactly the known latents.

Masks are over latent frames, `[frames]` float32: 1 regenerates, 0 keeps, and a linear
ramp of `crossfade_frames` inside each region's edges blends the two (the frames outside a
region stay exact). Shapes are channels last: latents `[batch, frames, channels]`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.errors import UserError

Region = tuple[float, float]
Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
Velocity = Callable[[jax.Array, jax.Array], jax.Array]


def check_regions(regions: Sequence[Sequence[float]], seconds: float) -> list[Region]:
    """Sorted `(start, end)` regions in seconds, overlapping or touching ones merged.

    Raises `UserError` for an empty list, a region with start >= end, or one outside
    `[0, seconds]` (the audio being edited)."""
    if not regions:
        raise UserError("no inpainting region given (start:end in seconds)")
    checked = []
    for region in regions:
        if len(region) != 2:
            raise UserError(f"an inpainting region is start:end in seconds, got {region!r}")
        start, end = float(region[0]), float(region[1])
        if not start < end:
            raise UserError(f"inpainting region {start:g}:{end:g} must have start < end")
        if start < 0 or end > seconds + 1e-6:
            raise UserError(f"inpainting region {start:g}:{end:g} lies outside the audio (0:{seconds:.2f} s)")
        checked.append((start, end))
    merged: list[Region] = []
    for start, end in sorted(checked):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def region_mask(regions: Sequence[Region], frames: int, frame_seconds: float, crossfade_frames: int = 0) -> np.ndarray:
    """`[frames]` float32: 1 on the latent frames a region touches, 0 elsewhere, with a
    linear ramp over the first and last `crossfade_frames` inside each region (none at the
    window's edges, where nothing is kept on the other side)."""
    if frame_seconds <= 0 or crossfade_frames < 0:
        raise ValueError(f"need frame_seconds > 0 and crossfade_frames >= 0, got {frame_seconds}, {crossfade_frames}")
    mask = np.zeros((frames,), np.float32)
    index = np.arange(frames, dtype=np.float32)
    for start, end in regions:
        first = max(0, int(math.floor(start / frame_seconds + 1e-6)))
        last = min(frames, int(math.ceil(end / frame_seconds - 1e-6)))
        if first >= last:
            continue
        ramp = np.ones((frames,), np.float32)
        if crossfade_frames:
            if first > 0:
                ramp = np.minimum(ramp, (index - first + 1) / (crossfade_frames + 1))
            if last < frames:
                ramp = np.minimum(ramp, (last - index) / (crossfade_frames + 1))
        inside = (index >= first) & (index < last)
        mask = np.maximum(mask, np.where(inside, np.clip(ramp, 0.0, 1.0), 0.0))
    return mask


def _level(level: jax.Array, like: jax.Array) -> jax.Array:
    """A scalar or `[batch]` noise level broadcast against `like` `[batch, ...]`."""
    level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (like.shape[0],))
    return level.reshape((-1,) + (1,) * (like.ndim - 1))


def masked_denoiser(denoiser: Denoiser, known: jax.Array, noise: jax.Array, mask: jax.Array) -> Denoiser:
    """Replacement for a k-diffusion-style denoiser (`x = x0 + sigma * noise`).

    Args: `known` and `noise` `[batch, frames, channels]`, `mask` broadcastable to them
    (`[batch, frames, 1]`; 1 regenerates)."""

    def denoise(x: jax.Array, sigma: jax.Array) -> jax.Array:
        kept = known + _level(sigma, x) * noise
        denoised = denoiser(mask * x + (1 - mask) * kept, sigma)
        return mask * denoised + (1 - mask) * known

    return denoise


def masked_velocity(velocity: Velocity, known: jax.Array, noise: jax.Array, mask: jax.Array) -> Velocity:
    """Replacement for a rectified-flow velocity (`x_t = (1 - t) x0 + t noise`); arguments
    as `masked_denoiser`."""

    def velocity_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        level = _level(t, x)
        kept = (1 - level) * known + level * noise
        v = velocity(mask * x + (1 - mask) * kept, t)
        return mask * v + (1 - mask) * (noise - known)

    return velocity_fn


def blend(generated: jax.Array, known: jax.Array, mask: jax.Array) -> jax.Array:
    """The sampler's result inside the regions, the known latents outside, crossfaded."""
    return mask * generated + (1 - mask) * known
