"""Text- and timing-conditioned generation: prompts -> text features -> guided sampling -> VAE decode.

    generator = AudioGenerator.from_runs("outputs/demo/diffusion")   # finds its VAE and CLAP runs
    generator = AudioGenerator.from_pretrained("pretrained/sao")      # converted SAO: DiT, T5, VAE
    generator = AudioGenerator.from_pretrained("pretrained/sa1")      # converted SA 1.0: U-Net, CLAP text
    audio = generator.generate(["drum groove, 120 BPM"], seconds_total=3.0)  # [1, samples, 2], cut

The device part (`sample_and_decode`: guided DPM-Solver++/Euler/DDIM loop in one `lax.scan`, then
the VAE decoder) is one jitted program per (batch, window, steps, sampler) shape, with the
batch split over the mesh's batch axes; the prompts' features come from the frozen text
encoder (CLAP's penultimate layer, `inference/clap.py`, or T5, `inference/t5.py`). The
model always generates its full window; `seconds_total` tells it where the content ends
and the output is cut there (stable-audio-tools' Gradio `cut_to_seconds_total`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Mapping, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.diffusion import flow_samplers, guidance, inpainting, samplers, schedule
from stable_audio_jax.diffusion.sampling_config import SamplingConfig, canonical_sampler_for, check_objective, is_flow
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference import continuation, fine_tuned, pretrained_parts
from stable_audio_jax.inference.clap import CLAPEncoder
from stable_audio_jax.models.autoencoder import AudioAutoencoder
from stable_audio_jax.models.latent_diffusion import LatentDiffusionModel
from stable_audio_jax.training.runs import load_run


def guidance_conditioning(
    text_features: jax.Array,
    text_mask: jax.Array,
    negative_features: jax.Array,
    negative_mask: jax.Array,
    use_negative: jax.Array,
    seconds_start: jax.Array,
    seconds_total: jax.Array,
    inpaint_mask: jax.Array | None = None,
    inpaint_masked_input: jax.Array | None = None,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The conditional and unconditional inputs of `apply_model` for classifier-free guidance.

    Args: the prompts' features `[batch, tokens, width]` and mask `[batch, tokens]`, the
    negative prompts' (any values on rows without one), `use_negative` `[batch]` bool, and
    the timing `[batch]`; an inpainting-conditioned model's mask `[batch, frames]` and
    masked latents `[batch, frames, latent_dim]` (None: not given). The unconditional row
    is the negative prompt where given, else the null context (the U-Net's learned one, the
    DiT's zeros). Both rows carry the prompt's mask as `prompt_mask` (the U-Net's reference
    mask semantics attend with it on the unconditional row too) and the same inpainting inputs.
    """
    shared = {"start": seconds_start, "total": seconds_total, "prompt_mask": text_mask}
    if inpaint_mask is not None:
        shared.update(inpaint_mask=inpaint_mask, inpaint_masked_input=inpaint_masked_input)
    cond = dict(shared, features=text_features, mask=text_mask, null=jnp.zeros(use_negative.shape, bool))
    uncond = dict(shared, features=negative_features, mask=negative_mask, null=~use_negative)
    return cond, uncond


def apply_model(
    model: LatentDiffusionModel, params: Any, x: jax.Array, t: jax.Array, cond: Mapping[str, jax.Array]
) -> jax.Array:
    """v of `model` for one of `guidance_conditioning`'s input dicts."""
    return model.apply(
        {"params": params},
        x,
        t,
        cond["features"],
        cond["mask"],
        cond["start"],
        cond["total"],
        cond["null"],
        cond["prompt_mask"],
        inpaint_mask=cond.get("inpaint_mask"),
        inpaint_masked_input=cond.get("inpaint_masked_input"),
    )


# The tqdm bar of the `generate` call in progress (None: none shown); the sampler's host
# callback advances it. A module-level callback keeps the jitted program free of `self`.
_PROGRESS: list = [None]


class _StepReporter:
    """A progress "bar" that hands `(steps done, total)` to a function (a web page's progress)."""

    def __init__(self, report: Callable[[int, int], Any], total: int):
        self.report, self.total, self.done = report, total, 0
        report(0, total)

    def update(self, count: int) -> None:
        self.done += count
        self.report(self.done, self.total)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _progress_bar(steps: int, report: Callable[[int, int], Any] | None = None):
    """Show a progress bar over `steps` sampler steps while the block runs (0: none), or hand
    each step to `report(done, total)` instead."""
    if steps and report is not None:
        _PROGRESS[0] = _StepReporter(report, steps)
    elif steps:
        from tqdm.auto import tqdm

        _PROGRESS[0] = tqdm(total=steps, desc="sampling", unit="step")
    try:
        yield
    finally:
        if _PROGRESS[0] is not None:
            _PROGRESS[0].close()
        _PROGRESS[0] = None


def _advance_progress(step_index) -> None:
    if _PROGRESS[0] is not None:
        _PROGRESS[0].update(1)


@functools.partial(
    jax.jit, static_argnames=("model", "autoencoder", "rules", "sampler", "use_cfg", "flow_model", "inpaint", "decode")
)
def sample_and_decode(
    params: Any,
    vae_params: Any,
    rng: jax.Array,
    sigmas: jax.Array,
    cfg_scale: jax.Array,
    rescale_phi: jax.Array,
    latent_scale: jax.Array,
    text_features: jax.Array,
    text_mask: jax.Array,
    negative_features: jax.Array,
    negative_mask: jax.Array,
    use_negative: jax.Array,
    seconds_start: jax.Array,
    seconds_total: jax.Array,
    x_init: jax.Array,
    known: jax.Array,
    noise: jax.Array,
    mask: jax.Array,
    *,
    model: LatentDiffusionModel,
    autoencoder: AudioAutoencoder,
    rules: parallel.Rules,
    sampler: str,
    use_cfg: bool,
    flow_model: bool,
    inpaint: bool = False,
    decode: bool = True,
) -> jax.Array:
    """Guided sampling from `x_init` `[batch, frames, latent_dim]` over `sigmas` (a v-model's
    noise levels, or a rectified-flow model's times when `flow_model`), then the VAE decode:
    audio `[batch, window_samples, 2]` (the latents when not `decode`). With `inpaint`, the
    frames where `mask` `[batch, frames]` is 0 keep `known` (`diffusion/inpainting.py`,
    replacement with the initial `noise`); otherwise those three are unused. Every setting
    is an argument (the modules, rules and sampler are static and hashable), so no call can
    reuse another's trace. An inpainting-conditioned model is also given the frames where
    `mask` is 0 and their latents (all zeros without `inpaint`: plain generation)."""
    model_mask = model_masked = None
    if model.config.inpainting:
        model_mask = (mask <= 0).astype(jnp.float32) if inpaint else jnp.zeros(x_init.shape[:2], jnp.float32)
        model_masked = known * model_mask[..., None] if inpaint else jnp.zeros_like(x_init)
    cond, uncond = guidance_conditioning(
        text_features,
        text_mask,
        negative_features,
        negative_mask,
        use_negative,
        seconds_start,
        seconds_total,
        model_mask,
        model_masked,
    )
    with nn.logical_axis_rules(rules):
        # Guidance combines the network's outputs, v or velocity alike (as the reference's DiT does).
        guided = guidance.guided_v_model(
            functools.partial(apply_model, model, params), cond, uncond, cfg_scale if use_cfg else 1.0, rescale_phi
        )
        mask = mask[..., None]
        if flow_model:
            velocity = inpainting.masked_velocity(guided, known, noise, mask) if inpaint else guided
            latents = flow_samplers.sample(
                velocity, x_init, sigmas, sampler=sampler, rng=rng, callback=_advance_progress
            )
        else:
            denoiser = samplers.v_denoiser(guided)
            denoiser = inpainting.masked_denoiser(denoiser, known, noise, mask) if inpaint else denoiser
            latents = samplers.sample(denoiser, x_init, sigmas, sampler=sampler, rng=rng, callback=_advance_progress)
        if inpaint:
            latents = inpainting.blend(latents, known, mask)
        if not decode:
            return latents
        return autoencoder.apply({"params": vae_params}, latents / latent_scale, method=type(autoencoder).decode)


@functools.partial(jax.jit, static_argnames=("autoencoder",))
def encode_mean(vae_params: Any, audio: jax.Array, *, autoencoder: AudioAutoencoder) -> jax.Array:
    """The VAE posterior mean of `[batch, samples, 2]` audio: `[batch, frames, latent_dim]`."""
    mean, _ = autoencoder.apply({"params": vae_params}, audio, method=type(autoencoder).encode_posterior)
    return mean


@functools.partial(jax.jit, static_argnames=("autoencoder",))
def decode_latents(vae_params: Any, latents: jax.Array, *, autoencoder: AudioAutoencoder) -> jax.Array:
    """VAE latents `[batch, frames, latent_dim]` -> audio `[batch, samples, 2]`."""
    return autoencoder.apply({"params": vae_params}, latents, method=type(autoencoder).decode)


class TextEncoder(Protocol):
    """What the generator needs of a frozen text encoder (CLAP or T5)."""

    def text_conditioning(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        """`(features [batch, tokens, width] float32, mask [batch, tokens] bool)`."""


class AudioGenerator:
    """A diffusion model's inference weights with its VAE and text encoder, on one mesh.

    `from_runs` loads the EMA weights of trained run directories (U-Net or DiT, CLAP);
    `from_pretrained` a converted directory (`pretrained.py`: SAO's DiT and T5, or
    SA 1.0's U-Net and CLAP text branch).
    """

    def __init__(
        self,
        *,
        model: LatentDiffusionModel,
        params: Any,
        autoencoder: AudioAutoencoder,
        vae_params: Any,
        text_encoder: TextEncoder,
        mesh: jax.sharding.Mesh,
        sample_rate: int,
        window_samples: int,
        latent_scale: float = 1.0,
        sampling: Mapping[str, Any] | None = None,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
    ):
        """
        Args:
          model, params: the diffusion model and its params (placed on `mesh`).
          autoencoder, vae_params: the VAE that made the latents.
          text_encoder: gives the prompts' cross-attention features.
          sample_rate, window_samples: the model's audio rate and window (`sample_size`).
          latent_scale: the diffusion model sees VAE latents times this.
          sampling: default `generate` settings (steps, cfg_scale, sampler, sigma_min,
            sigma_max, rescale_phi), checked; missing ones are `SamplingConfig`'s defaults.
        """
        self.model = model
        self.params = params
        self.autoencoder = autoencoder
        self.vae_params = vae_params
        self.text_encoder = text_encoder
        self.mesh = mesh
        self.rules = rules
        self.sample_rate = int(sample_rate)
        self.window_samples = int(window_samples)
        self.latent_scale = float(latent_scale)
        # Windows are whole multiples of this many samples (a latent frame, times the U-Net's factor).
        self.window_multiple = autoencoder.config.downsampling_ratio * model.config.downsampling_factor
        if self.window_samples % self.window_multiple:
            raise ValueError(
                f"window of {self.window_samples} samples is not a multiple of {self.window_multiple} "
                "(the VAE ratio times the backbone's downsampling factor)"
            )
        self.latent_frames = self.window_samples // autoencoder.config.downsampling_ratio
        self.latent_dim = model.config.latent_dim
        self.objective = check_objective(model.config.objective)
        self.sampling = SamplingConfig.from_dict(sampling, objective=self.objective).to_dict()

    @classmethod
    def from_runs(
        cls,
        diffusion_dir: str,
        *,
        vae_dir: str | None = None,
        clap_dir: str | None = None,
        step: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
    ) -> "AudioGenerator":
        """Load a diffusion run and, unless given, the VAE and CLAP runs named in its config,
        onto `mesh` (default: every device on the data axis) with the diffusion run's rules."""
        diffusion = load_run(diffusion_dir, step=step, mesh=mesh, ema_only=True)
        if diffusion.config.task not in fine_tuned.DIFFUSION_TASKS:
            raise ValueError(f"{diffusion_dir} holds a {diffusion.config.task!r} run, not a diffusion run")
        if diffusion.task.lora.enabled:
            raise UserError(
                f"{diffusion_dir} is a LoRA run (adapters, not a model): sample it with "
                f"--pretrained=<its base> --lora={diffusion_dir}"
            )
        vae_dir = vae_dir or diffusion.config.pretransform.vae_dir
        clap_dir = clap_dir or diffusion.config.pretransform.clap_dir
        for name, path in (("VAE", vae_dir), ("CLAP", clap_dir)):
            if not path:
                raise ValueError(f"the diffusion run does not name its {name} run directory; pass it explicitly")
        vae = load_run(vae_dir, mesh=diffusion.mesh, rules=diffusion.rules, ema_only=True)
        config = diffusion.config
        return cls(
            model=diffusion.task.model,
            params=diffusion.state.ema_params["diffusion"],
            autoencoder=vae.task.autoencoder,
            vae_params=vae.state.ema_params["autoencoder"],
            text_encoder=CLAPEncoder.from_run(clap_dir, mesh=diffusion.mesh),
            mesh=diffusion.mesh,
            sample_rate=int(vae.config.data.sample_rate),
            window_samples=int(config.data.sample_size),
            latent_scale=float(config.pretransform.latent_scale),
            sampling=config.sampling.to_dict() if "sampling" in config else None,
            rules=diffusion.rules,
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str,
        *,
        diffusion_dir: str | None = None,
        adapters: Sequence[tuple[str, float]] = (),
        mesh: jax.sharding.Mesh | None = None,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
    ) -> "AudioGenerator":
        """Load a converted pretrained directory (e.g. Stable Audio Open) onto `mesh`
        (default: every device on the data axis).

        diffusion_dir: a diffusion run fully fine-tuned from `directory` (`config.init_from`):
          its newest EMA weights and window replace the directory's diffusion model.
        adapters: `[(LoRA run directory, scale)]` trained on `directory`'s diffusion model:
          merged into it (`fine_tuned.diffusion_weights`). The VAE, text encoder and sampling
          defaults stay the directory's either way (but for a run that changed the objective).
        """
        weights = fine_tuned.pretrained_weights(
            directory, diffusion_dir=diffusion_dir, adapters=adapters, mesh=mesh, rules=rules
        )
        config, params = weights.config, weights.params
        encoder = pretrained_parts.text_encoder(directory, config, params["text_encoder"], weights.mesh, rules)
        return cls(
            model=weights.model,
            params=params["diffusion"],
            autoencoder=pretrained_parts.autoencoder(config),
            vae_params=params["autoencoder"],
            text_encoder=encoder,
            mesh=weights.mesh,
            sample_rate=config["sample_rate"],
            window_samples=weights.window,
            latent_scale=config.get("latent_scale", 1.0),
            sampling=weights.sampling,
            rules=rules,
        )

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    # ------------------------------------------------------------------- host
    def generate(
        self,
        prompts: Sequence[str],
        *,
        seconds_total: float | Sequence[float],
        seconds_start: float | Sequence[float] = 0.0,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        seed: int = 0,
        negative_prompt: str | None = None,
        rescale_phi: float | None = None,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        init_audio: np.ndarray | None = None,
        init_noise_level: float = 1.0,
        window_seconds: float | None = None,
        inpaint_audio: np.ndarray | None = None,
        inpaint_regions: Sequence[Sequence[float]] | None = None,
        inpaint_crossfade: float = 0.1,
        cut: bool = True,
        progress: bool | Callable[[int, int], Any] = False,
        return_latents: bool = False,
    ) -> np.ndarray:
        """Generate one clip per prompt; the batch is split over the mesh's batch axes.

        Args:
          prompts: the text prompts (a list; one clip each).
          seconds_total, seconds_start: timing conditioning, one value or one per prompt;
            the clip ends `seconds_total - seconds_start` into the window, which it may not
            pass when `cut`.
          steps, sampler, sigma_min, sigma_max: the sampler and its schedule: log-linear sigmas
            for a v-model; for a rectified-flow model the reference's time grid from
            `sigma_max` in (0, 1] (`sigma_min` unused), `sampling_config.sampler_names` says which.
          cfg_scale, rescale_phi: classifier-free guidance (1 disables it) and CFG rescale.
            Every sampling setting left None takes the model's default (`self.sampling`).
          negative_prompt: replaces the null context in the unconditional branch.
          init_audio: `[samples, 2]` at the model's rate for audio-to-audio: its latents plus
            noise at `init_noise_level` (which then replaces `sigma_max`) start the sampler
            (rectified flow: `(1 - level) latents + level noise`, level in (0, 1]).
          window_seconds: generate this window instead of the trained one (rounded up to a
            whole number of latent frames). The DiT has no absolute positions, so a shorter
            window is a cheaper way to get short clips; the U-Net was trained at one length.
          inpaint_audio, inpaint_regions: `[samples, 2]` audio at the model's rate (or one
            such clip per prompt: `[batch, samples, 2]` or a list) whose
            `(start, end)` regions (seconds; overlapping ones are merged) are regenerated
            while every other latent frame keeps the audio's own latents exactly
            (`diffusion/inpainting.py`); `inpaint_crossfade` seconds of latent frames inside
            each region's edges blend the two. Not together with `init_audio`.
          cut: cut each clip to its `seconds_total` (else the whole window is returned).
          progress: show a progress bar over the sampler steps; a function `(done, total)`
            is called at every step instead (e.g. a web page's progress bar).
          return_latents: return the sampled latents `[batch, frames, latent_dim]` (the
            model's scale) instead of decoding them.

        Returns:
          float32 `[batch, samples, 2]` (zero-padded to the longest clip when cut lengths differ).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings")
        batch = len(prompts)
        if batch == 0:
            raise ValueError("no prompts given")
        defaults = self.sampling
        steps = int(defaults["steps"] if steps is None else steps)
        cfg_scale = float(defaults["cfg_scale"] if cfg_scale is None else cfg_scale)
        rescale_phi = float(defaults["rescale_phi"] if rescale_phi is None else rescale_phi)
        sigma_min = float(defaults["sigma_min"] if sigma_min is None else sigma_min)
        sigma_max = float(defaults["sigma_max"] if sigma_max is None else sigma_max)
        sampler = canonical_sampler_for(defaults["sampler"] if sampler is None else sampler, self.objective)
        flow_model = is_flow(self.objective)
        window = self.window_samples
        if window_seconds is not None:
            if window_seconds <= 0:
                raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
            window = -(-int(np.ceil(window_seconds * self.sample_rate)) // self.window_multiple) * self.window_multiple
        totals = np.broadcast_to(np.asarray(seconds_total, np.float64), (batch,))
        starts = np.broadcast_to(np.asarray(seconds_start, np.float64), (batch,))
        if np.any(starts < 0):
            raise ValueError("seconds_start must be >= 0")
        # The clip ends `seconds_total - seconds_start` into the window; uncut, it may go on
        # past it (a window in the middle of a continuation).
        ends = totals - starts
        if np.any(totals <= 0) or (cut and np.any(ends > window / self.sample_rate + 1e-6)):
            raise ValueError(
                f"seconds_total must be in (0, {window / self.sample_rate:.2f}] (the window), got {totals.tolist()}"
            )
        if np.any(ends <= 0):
            raise ValueError(f"seconds_total {totals.tolist()} must be after seconds_start {starts.tolist()}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if (inpaint_audio is None) != (inpaint_regions is None):
            raise UserError("inpainting needs both the audio and its regions")
        if inpaint_audio is not None and init_audio is not None:
            raise UserError("init_audio (audio-to-audio) and inpaint_audio cannot be combined")
        if inpaint_crossfade < 0:
            raise UserError(f"inpaint_crossfade must be >= 0 seconds, got {inpaint_crossfade:g}")

        features, mask = (np.asarray(a) for a in self.text_encoder.text_conditioning(list(prompts)))
        if negative_prompt is not None:
            negative_features, negative_mask = (
                np.asarray(a) for a in self.text_encoder.text_conditioning([negative_prompt] * batch)
            )
            use_negative = np.ones((batch,), bool)
        else:
            negative_features, negative_mask, use_negative = features, mask, np.zeros((batch,), bool)

        rng_noise, rng_sampler = jax.random.split(jax.random.PRNGKey(seed))
        frames = window // self.autoencoder.config.downsampling_ratio
        noise = np.asarray(jax.random.normal(rng_noise, (batch, frames, self.latent_dim)))
        top = sigma_max if init_audio is None else init_noise_level
        if flow_model and init_audio is not None and not 0.0 < top <= 1.0:
            raise UserError(f"init_noise_level must be in (0, 1] for a rectified-flow model, got {top:g}")
        init_latents = None if init_audio is None else np.asarray(self._encode_init(init_audio, batch, window))

        def noised(latents: np.ndarray) -> np.ndarray:
            """Latents at the grid's first level: the flow path's point at t = top, or plus noise at sigma = top."""
            return latents * (1 - top) + noise * top if flow_model else latents + noise * top

        if flow_model:  # the reference's `sample_rf`: noise alone, or the point at t = top on the path
            sigmas = flow_samplers.sampler_times(sampler, steps, top)
            x_init = noise if init_latents is None else noised(init_latents)
        else:
            sigmas = schedule.polyexponential_sigmas(steps, sigma_min, top)
            x_init = noise * top if init_latents is None else noised(init_latents)
        frames = x_init.shape[1]
        if inpaint_audio is None:  # placeholders of the unused inpainting inputs
            known, inpaint_mask = np.zeros((batch, 1, 1), np.float32), np.ones((batch, 1), np.float32)
            keep_noise = known
        else:
            several = isinstance(inpaint_audio, (list, tuple)) or np.ndim(inpaint_audio) == 3
            clips = list(inpaint_audio) if several else [inpaint_audio]
            if len(clips) not in (1, batch):
                raise UserError(f"{len(clips)} inpainting clips for {batch} prompts: give one, or one per prompt")
            audio_seconds = min(min(len(np.asarray(c)) for c in clips), window) / self.sample_rate
            regions = inpainting.check_regions(inpaint_regions, audio_seconds)
            frame_seconds = self.autoencoder.config.downsampling_ratio / self.sample_rate
            crossfade = int(round(inpaint_crossfade / frame_seconds))
            inpaint_mask = np.broadcast_to(
                inpainting.region_mask(regions, frames, frame_seconds, crossfade), (batch, frames)
            )
            known = np.concatenate([np.asarray(self._encode_init(c, batch // len(clips), window)) for c in clips])
            keep_noise = noise
            x_init = np.where(inpaint_mask[..., None] > 0, x_init, noised(known))  # kept frames: on their path
        # Seconds are whole numbers for the table embedder (ceil, as training's seconds_total).
        seconds_total_cond = np.ceil(totals).astype(np.int32)
        seconds_start_cond = np.floor(starts).astype(np.int32)

        def run(params, *batch_arrays):
            return sample_and_decode(
                params,
                self.vae_params,
                rng_sampler,
                sigmas,
                jnp.float32(cfg_scale),
                jnp.float32(rescale_phi),
                jnp.float32(self.latent_scale),
                *batch_arrays,
                model=self.model,
                autoencoder=self.autoencoder,
                rules=tuple(self.rules),
                sampler=sampler,
                use_cfg=cfg_scale != 1.0,
                flow_model=flow_model,
                inpaint=inpaint_audio is not None,
                decode=not return_latents,
            )

        with _progress_bar(steps if progress else 0, progress if callable(progress) else None):
            audio = parallel.run_batch_on_mesh(
                run,
                self.params,
                [
                    features,
                    mask,
                    negative_features,
                    negative_mask,
                    use_negative,
                    seconds_start_cond,
                    seconds_total_cond,
                    x_init.astype(np.float32),
                    np.asarray(known, np.float32),
                    np.asarray(keep_noise, np.float32),
                    np.asarray(inpaint_mask, np.float32),
                ],
                self.mesh,
                self.rules,
            )
            audio = np.asarray(jax.device_get(audio), np.float32)
        if not cut or return_latents:
            return audio
        lengths = [min(audio.shape[1], int(round(s * self.sample_rate))) for s in ends]
        out = np.zeros((batch, max(lengths), audio.shape[2]), np.float32)
        for i, n in enumerate(lengths):
            out[i, :n] = audio[i, :n]
        return out

    def continue_audio(self, prompt: str, audio: np.ndarray, *, seconds_total: float, **kwargs) -> np.ndarray:
        """`audio` `[samples, 2]` continued to `seconds_total`, window after window
        (`inference/continuation.py`; keyword arguments as `continuation.continue_audio`)."""
        return continuation.continue_audio(self, prompt, audio, seconds_total=seconds_total, **kwargs)

    def reconstruct(self, audio: np.ndarray) -> np.ndarray:
        """`[samples, channels]` audio at the model's rate, cut or zero-padded to the window,
        through the VAE (posterior mean, then decode): `[window_samples, 2]`. What
        inpainting keeps outside its regions."""
        with jax.set_mesh(self.mesh):
            mean = self._encode_init(audio, 1, self.window_samples)
            decoded = decode_latents(self.vae_params, mean / self.latent_scale, autoencoder=self.autoencoder)
        return np.asarray(jax.device_get(decoded), np.float32)[0]

    def decode_silence(self) -> np.ndarray:
        """What the VAE decodes from the latents of a silent window: `[window_samples, 2]`.

        The reference level for "silence" when measuring generated lengths: the padding
        the model learns to produce after `seconds_total` is exactly these latents.
        """
        return self.reconstruct(np.zeros((self.window_samples, 2), np.float32))

    def _encode_init(self, init_audio: np.ndarray, batch: int, window_samples: int) -> jax.Array:
        """`[samples, channels]` init audio, cut or zero-padded to `window_samples` -> scaled
        latent means `[batch, frames, latent_dim]`."""
        audio = np.asarray(init_audio, np.float32)
        if audio.ndim != 2:
            raise ValueError(f"init_audio must be [samples, channels], got {audio.shape}")
        audio = np.repeat(audio, 2, axis=1) if audio.shape[1] == 1 else audio[:, :2]
        window = np.zeros((window_samples, 2), np.float32)
        window[: min(len(audio), window_samples)] = audio[:window_samples]
        mean = encode_mean(self.vae_params, window[None], autoencoder=self.autoencoder)
        return jnp.repeat(mean, batch, axis=0) * self.latent_scale


def spectrogram_png(
    audio: np.ndarray, sample_rate: int, path: str, title: str = "", regions: Sequence[Sequence[float]] = ()
) -> None:
    """Write a log-magnitude spectrogram image of `[samples, channels]` audio (channel mean);
    `regions` (start, end) in seconds, e.g. the inpainted ones, are outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import signal

    mono = np.asarray(audio, np.float32).mean(axis=-1)
    if len(mono) < 2048:
        mono = np.pad(mono, (0, 2048 - len(mono)))
    freqs, times, power = signal.spectrogram(mono, fs=sample_rate, nperseg=2048, noverlap=1536)
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.pcolormesh(times, freqs, 10 * np.log10(power + 1e-10), shading="auto", cmap="magma", vmin=-100, vmax=-10)
    for start, end in regions:
        ax.axvspan(start, end, facecolor="none", edgecolor="cyan", linewidth=1.5, linestyle="--")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Hz")
    ax.set_title(title[:90], fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
