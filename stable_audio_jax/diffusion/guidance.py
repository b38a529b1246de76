"""Classifier-free guidance (CFG) on v-predictions, with optional CFG rescale (Lin et al.,
arXiv 2305.08891, section 3.4).

The reference (stable-audio-tools `models/adp.py` `UNetCFG1d.forward`, `models/dit.py`
`DiffusionTransformer.forward`) applies guidance inside the model forward, on the v
outputs, before the VDenoiser scaling; the conditional and unconditional halves run as one
doubled batch so a sampling step is a single model call. `guided_v_model` does the same around any
`model_fn(x, t, conditioning)`, returning a plain `v_model(x, t)` for `samplers.v_denoiser`.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import jax
import jax.numpy as jnp

from stable_audio_jax.diffusion.samplers import VModel

Scalar = Union[float, jax.Array]


def _is_python_number(value: Any, number: float) -> bool:
    """True only for a concrete Python int/float equal to `number` (never for traced arrays)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == number


def cfg_combine(v_cond: jax.Array, v_uncond: jax.Array, scale: Scalar, rescale_phi: Scalar = 0.0) -> jax.Array:
    """Guided prediction `v_uncond + (v_cond - v_uncond) scale`, optionally rescaled.

    Args:
      v_cond, v_uncond: `[batch, frames, channels]` (any `[batch, ..., channels]`) predictions
        with and without the conditioning.
      scale: guidance scale (1 gives `v_cond`); a Python number or a traced scalar.
      rescale_phi: CFG rescale amount in [0, 1] (Lin et al. 2024). The guided prediction is
        scaled so that its standard deviation over channels, per batch item and frame,
        matches the conditional one's, and the result is blended with the unscaled guided
        prediction: `phi v_cfg std_cond/std_cfg + (1 - phi) v_cfg`. May be traced; a
        Python 0 skips the computation.

    Returns:
      The guided v, shaped like `v_cond`.
    """
    v_cfg = v_uncond + (v_cond - v_uncond) * scale
    if _is_python_number(rescale_phi, 0.0):
        return v_cfg
    # Only the ratio of the two stds is used, so the (biased vs unbiased) estimator cancels.
    std_cond = jnp.std(v_cond.astype(jnp.float32), axis=-1, keepdims=True)
    std_cfg = jnp.std(v_cfg.astype(jnp.float32), axis=-1, keepdims=True)
    # A frame whose guided channels are all equal has nothing to rescale; avoid 0/0 there.
    ratio = jnp.where(std_cfg > 0, std_cond / jnp.where(std_cfg > 0, std_cfg, 1.0), 1.0)
    rescaled = v_cfg * ratio
    return (rescale_phi * rescaled + (1.0 - rescale_phi) * v_cfg).astype(v_cfg.dtype)


def guided_v_model(
    model_fn: Callable[[jax.Array, jax.Array, Any], jax.Array],
    cond: Any,
    uncond: Any,
    scale: Scalar,
    rescale_phi: Scalar = 0.0,
) -> VModel:
    """A v-model that applies classifier-free guidance around `model_fn`.

    Args:
      model_fn: `model_fn(x, t, conditioning) -> v`, with `x` `[batch, frames, channels]`,
        `t` `[batch]` and `conditioning` a pytree of `[batch, ...]` arrays (e.g. the
        cross-attention tokens, their mask and the global timing vector).
      cond: the conditioning of the prompts.
      uncond: the same pytree structure for the unconditional branch (zeroed cross-attention
        tokens, a negative prompt, or learned null embeddings), leaves shaped like `cond`'s.
      scale: guidance scale. When it is the Python number 1, guidance is the identity and
        the unconditional half is skipped entirely (half the compute).
      rescale_phi: CFG rescale amount, see `cfg_combine`.

    Returns:
      `v_model(x, t) -> v_guided`: conditional and unconditional inputs are concatenated
      along the batch axis, `[cond; uncond]`, and evaluated by one `model_fn` call on a
      `2 * batch` batch, then split and combined.
    """
    if _is_python_number(scale, 1.0):
        return lambda x, t: model_fn(x, t, cond)

    both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)

    def v_model(x: jax.Array, t: jax.Array) -> jax.Array:
        batch = x.shape[0]
        v = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both)
        return cfg_combine(v[:batch], v[batch:], scale, rescale_phi)

    return v_model
