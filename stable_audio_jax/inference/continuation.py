"""Continuation: extend a clip past its end, window after window, to a requested length.

Each window starts with the last `context_seconds` of what exists so far and regenerates the
rest with inpainting (`diffusion/inpainting.py`), conditioned on where it lies in the file
(`seconds_start` = the window's start, `seconds_total` = the requested length, as the models
were trained on crops of long files). The new audio is joined after a short crossfade over the
end of the context, where both sides hold the same music (the window decodes its kept frames
to the VAE reconstruction of the context), so joins do not click. A single window with the clip
as its context is outpainting; more windows let a 47 s-window model make minutes.

    audio = continue_audio(generator, "warm pads", clip, seconds_total=180)   # [samples, 2]
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from stable_audio_jax.errors import UserError


def check_continuation(
    clip_samples: int, seconds_total: float, context_seconds: float | None, rate: int, window: int
) -> tuple[int, int]:
    """`(total, context)` in samples for continuing a clip of `clip_samples` with a model of
    `window` samples; `UserError` unless the total passes the clip and the context (default:
    half the window, or the whole clip if shorter) is positive and shorter than the window."""
    total = int(round(seconds_total * rate))
    if total <= clip_samples:
        raise UserError(
            f"seconds_total={seconds_total:g} must be longer than the audio to continue ({clip_samples / rate:.2f} s)"
        )
    context = min(clip_samples, window // 2) if context_seconds is None else int(round(context_seconds * rate))
    if not 0 < context < window:
        raise UserError(
            f"the kept context ({context / rate:.2f} s) must be positive and shorter than the model's "
            f"window ({window / rate:.2f} s)"
        )
    return total, context


def continue_audio(
    generator,
    prompt: str,
    audio: np.ndarray,
    *,
    seconds_total: float,
    context_seconds: float | None = None,
    crossfade_seconds: float = 0.05,
    seed: int = 0,
    progress: bool | Callable[[int, int], Any] = False,
    **generate_kwargs,
) -> np.ndarray:
    """`audio` `[samples, 2]` at the generator's rate, continued to `seconds_total`.

    Args:
      generator: an `inference.generate.AudioGenerator`.
      context_seconds: how much of the end of the audio so far each window keeps (default:
        half the window, or the whole clip if shorter); must be shorter than the window.
      crossfade_seconds: the join's crossfade, inside the kept context.
      seed: window `k` uses `seed + k`.
      generate_kwargs: sampler settings passed on to `generator.generate` (steps, cfg_scale,
        sampler, inpaint_crossfade, ...).

    Returns:
      float32 `[round(seconds_total * rate), 2]`; it starts with `audio` unchanged.
    """
    rate = generator.sample_rate
    window = generator.window_samples
    clip = np.asarray(audio, np.float32)
    if clip.ndim != 2 or clip.shape[1] != 2 or len(clip) == 0:
        raise UserError(f"the audio to continue must be stereo [samples, 2], got {clip.shape}")
    total, context = check_continuation(len(clip), seconds_total, context_seconds, rate, window)
    fade = min(int(round(crossfade_seconds * rate)), context)
    out, k = clip, 0
    while len(out) < total:  # every window adds at least one sample (context < window)
        kept = out[-context:]  # the whole of `out` while it is shorter than the context
        start = len(out) - len(kept)
        end = min(start + window, total)
        # The part to generate is zeros in the audio handed over; the region replaces it.
        padded = np.pad(kept, ((0, end - start - len(kept)), (0, 0)))
        generated = generator.generate(
            [prompt],
            seconds_start=start / rate,
            seconds_total=total / rate,
            inpaint_audio=padded,
            inpaint_regions=[(len(kept) / rate, (end - start) / rate)],
            seed=seed + k,
            cut=False,
            progress=progress,
            **generate_kwargs,
        )[0][: end - start]
        # Crossfade the last `fade` kept samples into the window's own decoding of them.
        ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1, None]
        joined = out[len(out) - fade :] * (1 - ramp) + generated[len(kept) - fade : len(kept)] * ramp
        out = np.concatenate([out[: len(out) - fade], joined, generated[len(kept) :]])
        k += 1
    return out[:total]
