"""Pre-encode audio shards for diffusion training: a frozen VAE posterior + frozen text features.

    audio shards --Grain (crop/pad to the window, seconds_start/total)--> VAE encoder (EMA,
    jitted) -> latent mean/std;  captions -> text encoder -> text features + mask
    --> latent shards (`input_pipeline/latent_records.py`) + `<prefix>_pre_encode.json`

The encoders come from trained runs (a VAE and a CLAP run directory) or from a pretrained
directory (its VAE and T5, e.g. converted Stable Audio Open weights for fine-tuning); the
crops, timing and record layout are the same either way. Each file gives `num_crops`
random crops (seeded), so longer files contribute several windows, as the random crops of
on-the-fly training would over several epochs. The report records the shapes the
diffusion config must match.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import numpy as np

from stable_audio_jax import parallel, pretrained
from stable_audio_jax.inference import pretrained_parts
from stable_audio_jax.inference.clap import CLAPEncoder
from stable_audio_jax.inference.generate import TextEncoder
from stable_audio_jax.input_pipeline import latent_records, records
from stable_audio_jax.input_pipeline.grain_pipeline import make_audio_dataset
from stable_audio_jax.models.autoencoder import AudioAutoencoder
from stable_audio_jax.training.runs import load_run


class AudioEncoder:
    """A frozen VAE encoder on a mesh: audio `[batch, samples, channels]` -> posterior."""

    def __init__(
        self,
        autoencoder: AudioAutoencoder,
        params: Any,
        sample_rate: int,
        mesh: jax.sharding.Mesh,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
    ):
        self.autoencoder = autoencoder
        self.params = params
        self.sample_rate = int(sample_rate)
        self.mesh = mesh
        self.rules = rules

    @property
    def ratio(self) -> int:
        """Audio samples per latent frame."""
        return self.autoencoder.config.downsampling_ratio

    @functools.cached_property
    def _encode_fn(self):
        method = type(self.autoencoder).encode_posterior
        return jax.jit(
            parallel.with_rules(
                lambda p, audio: self.autoencoder.apply({"params": p}, audio, method=method), self.rules
            )
        )

    def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior `(mean, std)`, each `[batch, samples / ratio, latent_dim]` float32 on the host,
        for audio `[batch, samples, channels]`; the batch is split over the mesh's batch axes."""
        return jax.device_get(parallel.run_batch_on_mesh(self._encode_fn, self.params, [audio], self.mesh, self.rules))


def run_encoders(vae_dir: str, clap_dir: str) -> tuple[AudioEncoder, TextEncoder, dict[str, str]]:
    """The EMA weights of a VAE run and a CLAP run, and the report entries naming them."""
    vae = load_run(vae_dir, ema_only=True)
    audio = AudioEncoder(
        vae.task.autoencoder, vae.state.ema_params["autoencoder"], int(vae.config.data.sample_rate), vae.mesh
    )
    return (
        audio,
        CLAPEncoder.from_run(clap_dir),
        {"vae_dir": os.path.abspath(vae_dir), "clap_dir": os.path.abspath(clap_dir)},
    )


def pretrained_encoders(
    directory: str, mesh: jax.sharding.Mesh | None = None, rules: parallel.Rules = parallel.DEFAULT_RULES
) -> tuple[AudioEncoder, TextEncoder, dict[str, str]]:
    """The VAE and text encoder of a pretrained directory (its diffusion weights stay on disk),
    and the report entry naming it."""
    config = pretrained.read_pretrained_config(directory)
    mesh = mesh or parallel.create_mesh((-1, 1, 1))
    params = pretrained_parts.restore_parts(directory, config, ("autoencoder", "text_encoder"), mesh, rules)
    audio = AudioEncoder(
        pretrained_parts.autoencoder(config), params["autoencoder"], config["sample_rate"], mesh, rules
    )
    text = pretrained_parts.text_encoder(directory, config, params["text_encoder"], mesh, rules)
    return audio, text, {"pretrained": os.path.abspath(directory)}


def pre_encode(
    audio_source: Any,
    output_dir: str,
    *,
    vae_dir: str | None = None,
    clap_dir: str | None = None,
    pretrained_dir: str | None = None,
    sample_size: int,
    num_crops: int = 1,
    batch_size: int = 8,
    num_shards: int = 1,
    prefix: str = "train",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write latent shards for `audio_source` (audio shards, as `make_audio_dataset` reads them).

    Args:
      vae_dir, clap_dir: run directories of the trained VAE and CLAP (EMA weights are used), or
      pretrained_dir: a pretrained directory whose VAE and text encoder are used instead.
      sample_size: the diffusion window in samples; a multiple of the VAE's downsampling ratio.
      num_crops: random crops per file.

    Returns the report that is also written to `<output_dir>/<prefix>_pre_encode.json`.
    """
    if pretrained_dir is not None:
        if vae_dir is not None or clap_dir is not None:
            raise ValueError("give either a pretrained directory or the VAE and CLAP run directories, not both")
        audio_encoder, text_encoder, sources = pretrained_encoders(pretrained_dir)
    elif vae_dir is None or clap_dir is None:
        raise ValueError("give a pretrained directory or both the VAE and the CLAP run directories")
    else:
        audio_encoder, text_encoder, sources = run_encoders(vae_dir, clap_dir)
    return encode_shards(
        audio_source,
        output_dir,
        audio_encoder,
        text_encoder,
        sources=sources,
        sample_size=sample_size,
        num_crops=num_crops,
        batch_size=batch_size,
        num_shards=num_shards,
        prefix=prefix,
        seed=seed,
        progress=progress,
    )


def encode_shards(
    audio_source: Any,
    output_dir: str,
    audio_encoder: AudioEncoder,
    text_encoder: TextEncoder,
    *,
    sources: dict[str, str],
    sample_size: int,
    num_crops: int = 1,
    batch_size: int = 8,
    num_shards: int = 1,
    prefix: str = "train",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """`pre_encode` with given encoders; `sources` (what they were loaded from) goes into the report."""
    ratio = audio_encoder.ratio
    sample_rate = audio_encoder.sample_rate
    if sample_size % ratio:
        raise ValueError(f"sample_size={sample_size} is not a multiple of the VAE's downsampling ratio {ratio}")
    dataset = make_audio_dataset(
        audio_source,
        sample_rate=sample_rate,
        sample_size=sample_size,
        batch_size=batch_size,
        seed=seed,
        shuffle=False,
        num_epochs=num_crops,
        random_crop=True,
        worker_count=0,
        shard_index=0,
        shard_count=1,
        drop_remainder=False,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="pre-encode", unit="crop")
    written = 0
    start = time.time()
    with records.ShardWriter(output_dir, prefix, num_shards) as writer:
        for batch in dataset:
            n = len(batch["audio"])
            audio = np.asarray(batch["audio"], np.float32)
            if n < batch_size:  # keep one compiled shape for the last, partial batch
                audio = np.concatenate([audio, np.zeros((batch_size - n,) + audio.shape[1:], np.float32)])
            mean, std = audio_encoder.encode(audio)
            features, text_mask = jax.device_get(text_encoder.text_conditioning([str(c) for c in batch["caption"]]))
            latent_mask = np.asarray(batch["padding_mask"]).reshape(n, -1, ratio).any(axis=-1)
            for i in range(n):
                arrays = {
                    "latent_mean": mean[i],
                    "latent_std": std[i],
                    "latent_mask": latent_mask[i],
                    "text_features": features[i].astype(np.float16),
                    "text_mask": text_mask[i],
                }
                metadata = {
                    "caption": str(batch["caption"][i]),
                    "id": f"{written:08d}",
                    "seconds_start": int(batch["seconds_start"][i]),
                    "seconds_total": int(batch["seconds_total"][i]),
                }
                writer.write(latent_records.encode_latent_record(arrays, metadata))
                written += 1
            if bar is not None:
                bar.update(n)
    if bar is not None:
        bar.close()
    if written == 0:
        raise ValueError(f"no audio could be read from {audio_source}")
    report = {
        "records": written,
        "seconds": round(time.time() - start, 1),
        "shards": writer.paths,
        **sources,
        "sample_rate": sample_rate,
        "sample_size": sample_size,
        "downsampling_ratio": ratio,
        "latent_frames": sample_size // ratio,
        "latent_dim": int(mean.shape[-1]),
        "text_length": int(features.shape[1]),
        "text_dim": int(features.shape[2]),
        "num_crops": num_crops,
    }
    with open(os.path.join(output_dir, f"{prefix}_pre_encode.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
