"""Reconstruction quality of a VAE (a run or a pretrained directory) on a set of audio files.

    vae = load_autoencoder("outputs/demo/vae")            # or "pretrained/sao"
    report = evaluate_reconstructions(vae, "outputs/demo/data/valid.jsonl", max_seconds=10)

Each file is read, made stereo, resampled to the VAE's rate, cut to `max_seconds`, padded to
a whole latent frame, encoded to its posterior mean and decoded. Per file and averaged:
the multi-resolution STFT distance (the training loss's A-weighted spectral convergence +
log-magnitude L1, `losses/stft.py`, on the channel mean), SI-SDR, the mel distance, and the
output level where the input is silent or has no energy (`metrics/reconstruction.py`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel, pretrained
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference import pretrained_parts
from stable_audio_jax.inference.evaluation import audio_files
from stable_audio_jax.inference.generate import decode_latents, encode_mean
from stable_audio_jax.input_pipeline.audio_io import decode_stereo
from stable_audio_jax.losses.stft import multi_resolution_stft_loss
from stable_audio_jax.metrics import reconstruction
from stable_audio_jax.models.autoencoder import AudioAutoencoder
from stable_audio_jax.training.runs import load_run, run_task


@dataclasses.dataclass(frozen=True)
class LoadedAutoencoder:
    autoencoder: AudioAutoencoder
    params: Any
    sample_rate: int
    mesh: jax.sharding.Mesh
    source: str

    def round_trip(self, audio: np.ndarray) -> np.ndarray:
        """`[samples, 2]` -> its reconstruction `[samples, 2]` (padded to a latent frame, cut back)."""
        ratio = self.autoencoder.config.downsampling_ratio
        padded = np.zeros((-(-len(audio) // ratio) * ratio, 2), np.float32)
        padded[: len(audio)] = audio
        with jax.set_mesh(self.mesh):
            mean = encode_mean(self.params, jnp.asarray(padded[None]), autoencoder=self.autoencoder)
            decoded = decode_latents(self.params, mean, autoencoder=self.autoencoder)
        return np.asarray(jax.device_get(decoded), np.float32)[0, : len(audio)]


def load_autoencoder(path: str) -> LoadedAutoencoder:
    """The VAE of a VAE run directory (its EMA weights) or of a pretrained directory."""
    if not os.path.isdir(path):
        raise UserError(f"--vae={path} is not a directory")
    if os.path.exists(os.path.join(path, pretrained.CONFIG_FILE)):
        config = pretrained.read_pretrained_config(path)
        mesh = parallel.create_mesh((-1, 1, 1))
        params = pretrained_parts.restore_parts(path, config, ("autoencoder",), mesh, parallel.DEFAULT_RULES)
        autoencoder = pretrained_parts.autoencoder(config)
        return LoadedAutoencoder(autoencoder, params["autoencoder"], int(config["sample_rate"]), mesh, path)
    try:
        task = run_task(path)
    except FileNotFoundError as e:
        raise UserError(f"--vae={path}: {e}") from None
    if task != "vae":
        raise UserError(f"--vae={path} is a {task or 'task-less'} run, not a VAE run or a pretrained directory")
    run = load_run(path, ema_only=True)
    return LoadedAutoencoder(
        run.task.autoencoder, run.state.ema_params["autoencoder"], int(run.config.data.sample_rate), run.mesh, path
    )


def file_metrics(original: np.ndarray, output: np.ndarray, sample_rate: int) -> dict[str, float | None]:
    """Every reconstruction metric of one `[samples, 2]` pair."""
    mono = lambda a: jnp.asarray(a.mean(axis=1)[None])  # noqa: E731
    return {
        "mrstft": float(multi_resolution_stft_loss(mono(output), mono(original), sample_rate=sample_rate)),
        "si_sdr_db": reconstruction.si_sdr(original, output),
        "mel_distance": reconstruction.mel_distance(original, output, sample_rate),
        "silent_frames_output_db": reconstruction.silent_frame_output_db(original, output, sample_rate),
        "empty_bins_output_db": reconstruction.empty_band_output_db(original, output),
    }


def evaluate_reconstructions(
    vae: LoadedAutoencoder, source: str, *, max_seconds: float = 30.0, progress: bool = False
) -> dict:
    """Per-file metrics of `source`'s files and their means (None-valued ones left out of a mean)."""
    from tqdm.auto import tqdm

    rows = []
    for path in tqdm(audio_files(source), desc="reconstructing", unit="file", disable=not progress):
        original = decode_stereo(path, vae.sample_rate)[: int(round(max_seconds * vae.sample_rate))]
        row = file_metrics(original, vae.round_trip(original), vae.sample_rate)
        rows.append({"file": path, "seconds": len(original) / vae.sample_rate, **row})
    overall = {}
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r[key], float) and np.isfinite(r[key])]
        if key not in ("file", "seconds") and values:
            overall[key] = float(np.mean(values))
    return {"vae": os.path.abspath(vae.source), "files": len(rows), "overall": overall, "per_file": rows}
