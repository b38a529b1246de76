"""Text- and timing-conditioned generation: prompts -> CLAP features -> guided sampling -> VAE decode.

    generator = AudioGenerator.from_runs("outputs/demo/diffusion")   # finds its VAE and CLAP runs
    audio = generator.generate(["drum groove, 120 BPM"], seconds_total=3.0)  # [1, samples, 2], cut

The device part (`_generate`: guided DPM-Solver++/Euler/DDIM loop in one `lax.scan`, then
the VAE decoder) is one jitted program per (batch, window, steps, sampler) shape; the
prompts' CLAP features are computed by the frozen text tower (`inference/clap.py`). The
model always generates its full window; `seconds_total` tells it where the content ends
and the output is cut there (SPEC.md 4.4).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.diffusion import guidance, samplers, schedule
from stable_audio_jax.inference.checkpoints import LoadedRun, load_run
from stable_audio_jax.inference.clap import CLAPEncoder


class AudioGenerator:
    """A trained diffusion model (EMA weights) with the VAE and CLAP it was trained with."""

    def __init__(self, diffusion: LoadedRun, vae: LoadedRun, clap: CLAPEncoder):
        self.config = diffusion.config
        self.model = diffusion.task.model
        self.params = diffusion.state.ema_params["diffusion"]
        self.autoencoder = vae.task.autoencoder
        self.vae_params = vae.state.ema_params["autoencoder"]
        self.clap = clap
        self.mesh = diffusion.mesh
        self.sample_rate = int(vae.config.data.sample_rate)
        self.window_samples = int(self.config.data.sample_size)
        self.latent_frames = diffusion.task.latent_frames
        self.latent_dim = self.model.config.unet.in_channels
        self._progress = None  # a tqdm bar while `generate(progress=True)` runs

    @classmethod
    def from_runs(cls, diffusion_dir: str, *, vae_dir: str | None = None, clap_dir: str | None = None,
                  step: int | None = None) -> "AudioGenerator":
        """Load a diffusion run and, unless given, the VAE and CLAP runs named in its config."""
        diffusion = load_run(diffusion_dir, step=step)
        if diffusion.config.task != "diffusion":
            raise ValueError(f"{diffusion_dir} holds a {diffusion.config.task!r} run, not a diffusion run")
        vae_dir = vae_dir or diffusion.config.pretransform.vae_dir
        clap_dir = clap_dir or diffusion.config.pretransform.clap_dir
        for name, path in (("VAE", vae_dir), ("CLAP", clap_dir)):
            if not path:
                raise ValueError(f"the diffusion run does not name its {name} run directory; pass it explicitly")
        return cls(diffusion, load_run(vae_dir, mesh=diffusion.mesh), CLAPEncoder.from_run(clap_dir, mesh=diffusion.mesh))

    def _on_step(self, step_index) -> None:
        """Host callback once per sampler step (advances the progress bar of `generate`)."""
        if self._progress is not None:
            self._progress.update(1)

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    # ----------------------------------------------------------------- device
    @functools.partial(jax.jit, static_argnums=(0,), static_argnames=("sampler", "use_cfg"))
    def _generate(self, params, vae_params, text_features, text_mask, negative_features, negative_mask,
                  use_negative, seconds_start, seconds_total, x_init, sigmas, rng, cfg_scale, rescale_phi, *,
                  sampler: str, use_cfg: bool):
        """Guided sampling + VAE decode; returns audio `[batch, window_samples, 2]`."""
        batch = x_init.shape[0]

        def model_fn(x, t, cond):
            return self.model.apply({"params": params}, x, t, cond["features"], cond["mask"], cond["start"],
                                    cond["total"], cond["null"])

        timing = {"start": seconds_start, "total": seconds_total}
        cond = dict(timing, features=text_features, mask=text_mask, null=jnp.zeros((batch,), bool))
        # The unconditional branch: the negative prompt where given, else the learned null context.
        uncond = dict(timing, features=negative_features, mask=negative_mask, null=~use_negative)
        v_model = guidance.guided_v_model(model_fn, cond, uncond, cfg_scale if use_cfg else 1.0, rescale_phi)
        latents = samplers.sample(samplers.v_denoiser(v_model), x_init, sigmas, sampler=sampler, rng=rng,
                                  callback=self._on_step)
        latents = latents / self.config.pretransform.latent_scale
        return self.autoencoder.apply({"params": vae_params}, latents, method=type(self.autoencoder).decode)

    # ------------------------------------------------------------------- host
    def generate(self, prompts: Sequence[str], *, seconds_total: float | Sequence[float],
                 seconds_start: float | Sequence[float] = 0.0, steps: int = 100, cfg_scale: float = 6.0,
                 sampler: str = "dpmpp_3m_sde", seed: int = 0, negative_prompt: str | None = None,
                 rescale_phi: float = 0.0, sigma_min: float = 0.03, sigma_max: float = 500.0,
                 init_audio: np.ndarray | None = None, init_noise_level: float = 1.0,
                 cut: bool = True, progress: bool = False) -> np.ndarray:
        """Generate one clip per prompt.

        Args:
          prompts: the text prompts (a list; one clip each).
          seconds_total, seconds_start: timing conditioning, one value or one per prompt;
            `seconds_total` may not exceed the model's window.
          steps, sampler, sigma_min, sigma_max: the sampler and its log-linear sigma schedule.
          cfg_scale, rescale_phi: classifier-free guidance (1 disables it) and CFG rescale.
          negative_prompt: replaces the null context in the unconditional branch.
          init_audio: `[samples, 2]` at the model's rate for audio-to-audio: its latents plus
            noise at `init_noise_level` (which then replaces `sigma_max`) start the sampler.
          cut: cut each clip to its `seconds_total` (else the whole window is returned).
          progress: show a progress bar over the sampler steps.

        Returns:
          float32 `[batch, samples, 2]` (zero-padded to the longest clip when cut lengths differ).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings")
        batch = len(prompts)
        if batch == 0:
            raise ValueError("no prompts given")
        totals = np.broadcast_to(np.asarray(seconds_total, np.float64), (batch,))
        starts = np.broadcast_to(np.asarray(seconds_start, np.float64), (batch,))
        if np.any(totals <= 0) or np.any(totals > self.window_seconds + 1e-6):
            raise ValueError(f"seconds_total must be in (0, {self.window_seconds:.2f}] (the model's window), "
                             f"got {totals.tolist()}")
        if np.any(starts < 0):
            raise ValueError("seconds_start must be >= 0")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        sampler = samplers.canonical_sampler_name(sampler)

        features, mask = self.clap.text_conditioning(list(prompts))
        if negative_prompt is not None:
            negative_features, negative_mask = self.clap.text_conditioning([negative_prompt] * batch)
            use_negative = np.ones((batch,), bool)
        else:
            negative_features, negative_mask, use_negative = features, mask, np.zeros((batch,), bool)

        rng_noise, rng_sampler = jax.random.split(jax.random.PRNGKey(seed))
        noise = jax.random.normal(rng_noise, (batch, self.latent_frames, self.latent_dim))
        top = sigma_max
        if init_audio is not None:
            init_latents = self._encode_init(init_audio, batch)
            top = init_noise_level
            x_init = init_latents + noise * top
        else:
            x_init = noise * top
        sigmas = schedule.polyexponential_sigmas(steps, sigma_min, top)
        # Seconds are whole numbers for the table embedder (ceil, as training's seconds_total).
        seconds_total_cond = np.ceil(totals).astype(np.int32)
        seconds_start_cond = np.floor(starts).astype(np.int32)
        if progress:
            from tqdm.auto import tqdm
            self._progress = tqdm(total=steps, desc="sampling", unit="step")
        try:
            with jax.set_mesh(self.mesh):
                audio = self._generate(self.params, self.vae_params, features, mask, negative_features, negative_mask,
                                       use_negative, seconds_start_cond, seconds_total_cond, x_init, sigmas,
                                       rng_sampler, jnp.float32(cfg_scale), jnp.float32(rescale_phi),
                                       sampler=sampler, use_cfg=cfg_scale != 1.0)
                audio = np.asarray(jax.device_get(audio), np.float32)
        finally:
            if self._progress is not None:
                self._progress.close()
                self._progress = None
        if not cut:
            return audio
        lengths = [min(audio.shape[1], int(round(s * self.sample_rate))) for s in totals]
        out = np.zeros((batch, max(lengths), audio.shape[2]), np.float32)
        for i, n in enumerate(lengths):
            out[i, :n] = audio[i, :n]
        return out

    def decode_silence(self) -> np.ndarray:
        """What the VAE decodes from the latents of a silent window: `[window_samples, 2]`.

        The reference level for "silence" when measuring generated lengths: the padding
        the model learns to produce after `seconds_total` is exactly these latents.
        """
        with jax.set_mesh(self.mesh):
            mean = self._encode_init(np.zeros((self.window_samples, 2), np.float32), 1)
            audio = self.autoencoder.apply({"params": self.vae_params}, mean / self.config.pretransform.latent_scale,
                                           method=type(self.autoencoder).decode)
        return np.asarray(jax.device_get(audio), np.float32)[0]

    def _encode_init(self, init_audio: np.ndarray, batch: int) -> jax.Array:
        """`[samples, channels]` init audio -> scaled latent means `[batch, frames, latent_dim]`."""
        audio = np.asarray(init_audio, np.float32)
        if audio.ndim != 2:
            raise ValueError(f"init_audio must be [samples, channels], got {audio.shape}")
        audio = np.repeat(audio, 2, axis=1) if audio.shape[1] == 1 else audio[:, :2]
        window = np.zeros((self.window_samples, 2), np.float32)
        window[:min(len(audio), self.window_samples)] = audio[:self.window_samples]
        mean, _ = self.autoencoder.apply({"params": self.vae_params}, window[None],
                                         method=type(self.autoencoder).encode_posterior)
        return jnp.repeat(mean, batch, axis=0) * self.config.pretransform.latent_scale


def spectrogram_png(audio: np.ndarray, sample_rate: int, path: str, title: str = "") -> None:
    """Write a log-magnitude spectrogram image of `[samples, channels]` audio (channel mean)."""
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
    ax.set_xlabel("seconds")
    ax.set_ylabel("Hz")
    ax.set_title(title[:90], fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
