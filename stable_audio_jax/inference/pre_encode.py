"""Pre-encode audio shards for diffusion training: frozen VAE posterior + frozen CLAP text features.

    audio shards --Grain (crop/pad to the window, seconds_start/total)--> VAE encoder (EMA,
    jitted) -> latent mean/std;  captions -> CLAP text tower -> text features + mask
    --> latent shards (`input_pipeline/latent_records.py`) + `<prefix>_pre_encode.json`

Each file gives `num_crops` random crops (seeded), so longer files contribute several
windows, as the random crops of on-the-fly training would over several epochs. The
report records the shapes the diffusion config must match.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.inference.checkpoints import load_run
from stable_audio_jax.inference.clap import CLAPEncoder
from stable_audio_jax.input_pipeline import latent_records, records
from stable_audio_jax.input_pipeline.grain_pipeline import make_audio_dataset
from stable_audio_jax.training.trainer import with_rules


def pre_encode(audio_source: Any, output_dir: str, *, vae_dir: str, clap_dir: str, sample_size: int,
               num_crops: int = 1, batch_size: int = 8, num_shards: int = 1, prefix: str = "train",
               seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Write latent shards for `audio_source` (audio shards, as `make_audio_dataset` reads them).

    Args:
      vae_dir, clap_dir: run directories of the trained VAE and CLAP (EMA weights are used).
      sample_size: the diffusion window in samples; a multiple of the VAE's downsampling ratio.
      num_crops: random crops per file.

    Returns the report that is also written to `<output_dir>/<prefix>_pre_encode.json`.
    """
    vae = load_run(vae_dir)
    autoencoder = vae.task.autoencoder
    ratio = autoencoder.config.downsampling_ratio
    sample_rate = int(vae.config.data.sample_rate)
    if sample_size % ratio:
        raise ValueError(f"sample_size={sample_size} is not a multiple of the VAE's downsampling ratio {ratio}")
    clap = CLAPEncoder.from_run(clap_dir)
    vae_params = vae.state.ema_params["autoencoder"]
    encode = jax.jit(with_rules(lambda p, audio: autoencoder.apply({"params": p}, audio,
                                                                   method=type(autoencoder).encode_posterior),
                                parallel.DEFAULT_RULES))

    dataset = make_audio_dataset(audio_source, sample_rate=sample_rate, sample_size=sample_size,
                                 batch_size=batch_size, seed=seed, shuffle=False, num_epochs=num_crops,
                                 random_crop=True, worker_count=0, shard_index=0, shard_count=1,
                                 drop_remainder=False)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(desc="pre-encode", unit="crop")
    written = 0
    start = time.time()
    with records.ShardWriter(output_dir, prefix, num_shards) as writer, jax.set_mesh(vae.mesh):
        for batch in dataset:
            n = len(batch["audio"])
            audio = np.asarray(batch["audio"], np.float32)
            if n < batch_size:  # keep one compiled shape for the last, partial batch
                audio = np.concatenate([audio, np.zeros((batch_size - n,) + audio.shape[1:], np.float32)])
            mean, std = jax.device_get(encode(vae_params, audio))
            features, text_mask = jax.device_get(clap.text_conditioning([str(c) for c in batch["caption"]]))
            latent_mask = np.asarray(batch["padding_mask"]).reshape(n, -1, ratio).any(axis=-1)
            for i in range(n):
                arrays = {"latent_mean": mean[i], "latent_std": std[i], "latent_mask": latent_mask[i],
                          "text_features": features[i].astype(np.float16), "text_mask": text_mask[i]}
                metadata = {"caption": str(batch["caption"][i]), "id": f"{written:08d}",
                            "seconds_start": int(batch["seconds_start"][i]),
                            "seconds_total": int(batch["seconds_total"][i])}
                writer.write(latent_records.encode_latent_record(arrays, metadata))
                written += 1
            if bar is not None:
                bar.update(n)
    if bar is not None:
        bar.close()
    if written == 0:
        raise ValueError(f"no audio could be read from {audio_source}")
    report = {
        "records": written, "seconds": round(time.time() - start, 1), "shards": writer.paths,
        "vae_dir": os.path.abspath(vae_dir), "clap_dir": os.path.abspath(clap_dir),
        "sample_rate": sample_rate, "sample_size": sample_size, "downsampling_ratio": ratio,
        "latent_frames": sample_size // ratio, "latent_dim": int(mean.shape[-1]),
        "text_length": int(features.shape[1]), "text_dim": int(features.shape[2]), "num_crops": num_crops,
    }
    with open(os.path.join(output_dir, f"{prefix}_pre_encode.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
