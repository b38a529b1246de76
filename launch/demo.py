"""The main job on the embedded demo data, start to finish on a CPU.

    1. render a small captioned music dataset (music21 corpus + generated material,
       General MIDI soundfont, 44.1 kHz stereo) into <output_dir>/data
    2. write ArrayRecord shards for its train and valid splits into <output_dir>/shards
    3. train the tiny VAE (configs/vae_tiny.py) in <output_dir>/vae (resumable)
    4. reconstruct held-out clips with the EMA weights into <output_dir>/reconstructions
       and write <output_dir>/summary.json with the loss curve

Every stage is skipped when its output already exists, so a second run (or a run after
an interruption) continues where the first stopped.

    python launch/demo.py --output_dir=outputs/demo
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_OUTPUT = flags.DEFINE_string("output_dir", "outputs/demo", "Where everything is written.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 48, "Clips to render (train + valid).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the rendered dataset.")
_RECON_SECONDS = flags.DEFINE_float("reconstruction_seconds", 4.0, "Length of each reconstructed clip.")
_NUM_RECON = flags.DEFINE_integer("num_reconstructions", 4, "Held-out clips to reconstruct.")
_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "vae_tiny.py"),
                                          "Training config.", lock_config=True)


def render_data(out: str) -> dict:
    from stable_audio_jax.datasets.demo_music import render_demo_dataset

    data_dir = os.path.join(out, "data")
    if os.path.exists(os.path.join(data_dir, "valid.jsonl")):
        logging.info("demo data already rendered in %s", data_dir)
        return {"skipped": True}
    return render_demo_dataset(data_dir, num_clips=_NUM_CLIPS.value, seed=_SEED.value)


def make_shards(out: str) -> dict:
    from stable_audio_jax.input_pipeline.shard_writer import write_shards

    reports = {}
    for split, num_shards in (("train", 4), ("valid", 1)):
        shard_dir = os.path.join(out, "shards", split)
        if os.path.isdir(shard_dir) and any(f.endswith(".array_record") for f in os.listdir(shard_dir)):
            continue
        reports[split] = write_shards(os.path.join(out, "data", f"{split}.jsonl"), shard_dir,
                                      num_shards=num_shards, prefix=split)
    return reports


def train_vae(out: str, config):
    from stable_audio_jax.training.registry import build_task
    from stable_audio_jax.training.trainer import Trainer

    config.data.train_shards = os.path.join(out, "shards", "train")
    config.data.eval_shards = os.path.join(out, "shards", "valid")
    trainer = Trainer(config, os.path.join(out, "vae"), build_task(config))
    summary = trainer.train()
    return trainer, summary


def reconstruct(out: str, config, task, state) -> list[dict]:
    """Encode/decode the start of held-out clips with the EMA weights; write WAV pairs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stable_audio_jax.input_pipeline.audio_io import decode_audio, resample, to_stereo, write_wav
    from stable_audio_jax.losses.stft import stereo_stft_losses

    sample_rate = config.data.sample_rate
    ratio = task.autoencoder.config.downsampling_ratio
    length = ratio * int(_RECON_SECONDS.value * sample_rate // ratio)
    params = jax.device_get(state.ema_params["autoencoder"])

    @jax.jit
    def roundtrip(audio):
        recon, _, _ = task.autoencoder.apply({"params": params}, audio, None)
        loss = lambda pred: stereo_stft_losses(pred, audio, task.stft_config)["spectral"]
        # A silent output is the trivial baseline a reconstruction has to beat.
        return recon, loss(recon), loss(jnp.zeros_like(audio))

    folder = os.path.join(out, "reconstructions")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(out, "data", "valid.jsonl")) as f:
        entries = [json.loads(line) for line in f][: _NUM_RECON.value]
    results = []
    for entry in entries:
        audio, sr = decode_audio(os.path.join(out, "data", entry["path"]))
        audio = to_stereo(resample(audio, sr, sample_rate))[:length]
        audio = np.pad(audio, ((0, length - len(audio)), (0, 0)))
        recon, loss, silent_loss = roundtrip(audio[None])
        name = os.path.splitext(os.path.basename(entry["path"]))[0]
        write_wav(os.path.join(folder, f"{name}_original.wav"), audio, sample_rate)
        write_wav(os.path.join(folder, f"{name}_reconstruction.wav"), np.asarray(recon[0]), sample_rate)
        results.append({"clip": name, "caption": entry["caption"], "spectral_loss": float(loss),
                        "silent_output_spectral_loss": float(silent_loss)})
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # library INFO logs (checkpointing) would drown the stages
    out = os.path.abspath(_OUTPUT.value)
    os.makedirs(out, exist_ok=True)
    config = _CONFIG.value
    timings = {}

    t = time.time()
    print("[1/4] rendering the demo dataset", flush=True)
    data_summary = render_data(out)
    timings["render_seconds"] = time.time() - t
    t = time.time()
    print("[2/4] writing ArrayRecord shards", flush=True)
    shard_reports = make_shards(out)
    timings["shards_seconds"] = time.time() - t
    t = time.time()
    print("[3/4] training the tiny VAE", flush=True)
    trainer, train_summary = train_vae(out, config)
    timings["train_seconds"] = time.time() - t
    t = time.time()
    print("[4/4] reconstructing held-out clips", flush=True)
    recon = reconstruct(out, config, trainer.task, trainer.state)
    timings["reconstruction_seconds"] = time.time() - t

    history = train_summary.get("history", [])
    summary = {
        "data": data_summary,
        "shards": {k: {"written": v.get("written")} for k, v in shard_reports.items()},
        "train": {k: v for k, v in train_summary.items() if k != "history"},
        "spectral_loss_curve": [[h["step"], h["spectral"]] for h in history if "spectral" in h],
        "reconstructions": recon,
        "timings": timings,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    spectral = [v for _, v in summary["spectral_loss_curve"]]
    print(f"\nDemo finished in {sum(timings.values()):.0f} s; outputs in {out}")
    if spectral:
        print(f"  multi-resolution STFT loss (train, per log window): {spectral[0]:.3f} -> {spectral[-1]:.3f}")
    for r in recon:
        print(f"  {r['clip']}: held-out spectral loss {r['spectral_loss']:.3f} (silent output: "
              f"{r['silent_output_spectral_loss']:.3f})  {r['caption'][:50]}")
    print(f"  reconstructions: {os.path.join(out, 'reconstructions')}   summary: {os.path.join(out, 'summary.json')}")


if __name__ == "__main__":
    app.run(main)
