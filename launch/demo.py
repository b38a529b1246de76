"""The main job on the embedded demo data, start to finish on a CPU.

    1. render a small captioned music dataset (music21 corpus + generated material,
       General MIDI soundfont, 44.1 kHz stereo) into <output_dir>/data
    2. write ArrayRecord shards for its train and valid splits into <output_dir>/shards
    3. train the tiny VAE (configs/vae_tiny.py) in <output_dir>/vae (resumable)
    4. reconstruct held-out clips with the EMA weights into <output_dir>/reconstructions
    5. train a BPE tokenizer on the training captions (<output_dir>/tokenizer.json)
    6. train the tiny CLAP (configs/clap_tiny.py) in <output_dir>/clap (resumable)
    7. score the held-out clips with it: text->audio retrieval recall@k against chance, and
       the CLAP score of matched against shuffled (caption, audio) pairs
    8. pre-encode the training shards with the frozen VAE and CLAP (<output_dir>/latents)
    9. train the tiny timing-conditioned diffusion model (configs/diffusion_tiny.py) in
       <output_dir>/diffusion (resumable)
   10. generate held-out prompts at several seconds_total with the model's sampler (100
       steps with CFG) into <output_dir>/samples, and for a rectified-flow model also with
       8 pingpong steps without CFG into <output_dir>/samples_8_steps_pingpong: WAV cut to
       seconds_total + spectrogram PNG each; per run, how far the non-silent length of the
       uncut output is from the request, the CLAP score of the clips (matched prompts
       against other prompts) and the wall time per clip
   11. inpaint held-out clips into <output_dir>/inpainting: regenerate 3-8 s of each with its
       own caption and with another clip's, report how exactly the rest is kept (log-spectral
       distance to the VAE reconstruction, against a fresh generation's) and the region's
       CLAP score against its caption and the others
   12. Frechet distance of each sampling run's clips to half of the held-out clips, with the
       demo CLAP's audio tower as the embedder, next to the other half's (the floor) and
       white noise's (the ceiling)
    and write <output_dir>/summary.json with the loss curves and every figure

Every stage is skipped when its output is complete (a training stage: its run reached
`num_steps`), so a second run (or a run after an interruption) continues where the first
stopped. SIGTERM or Ctrl-C during a training stage saves a checkpoint and stops the demo
there with exit code 143; later stages never run on an unfinished model.

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

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import EXIT_PREEMPTED  # noqa: E402

_OUTPUT = flags.DEFINE_string("output_dir", "outputs/demo", "Where everything is written.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 256, "Clips to render (train + valid).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the rendered dataset.")
_RECON_SECONDS = flags.DEFINE_float("reconstruction_seconds", 4.0, "Length of each reconstructed clip.")
_NUM_RECON = flags.DEFINE_integer("num_reconstructions", 4, "Held-out clips to reconstruct.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(ROOT, "configs", "vae_tiny.py"), "VAE training config.", lock_config=True
)
_CLAP_CONFIG = config_flags.DEFINE_config_file(
    "clap_config", os.path.join(ROOT, "configs", "clap_tiny.py"), "CLAP training config.", lock_config=True
)
_DIFFUSION_CONFIG = config_flags.DEFINE_config_file(
    "diffusion_config",
    os.path.join(ROOT, "configs", "diffusion_tiny.py"),
    "Diffusion training config.",
    lock_config=True,
)
_NUM_CROPS = flags.DEFINE_integer("num_crops", 2, "Random windows pre-encoded per training clip.")
_SAMPLE_SECONDS = flags.DEFINE_list("sample_seconds", ["3", "6", "10"], "seconds_total of the generated clips.")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 4, "Held-out captions used as prompts.")
_NUM_INPAINT = flags.DEFINE_integer("num_inpaint", 6, "Held-out clips whose region is regenerated.")
_INPAINT_REGION = flags.DEFINE_string("inpaint_region", "3:8", "start:end seconds regenerated in each clip.")


def render_data(out: str) -> dict:
    from stable_audio_jax.demo_corpus.demo_music import render_demo_dataset

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
        if os.path.exists(os.path.join(shard_dir, f"{split}_report.json")):  # written last: the split is complete
            continue
        reports[split] = write_shards(
            os.path.join(out, "data", f"{split}.jsonl"), shard_dir, num_shards=num_shards, prefix=split
        )
    return reports


def train(out: str, name: str, config):
    """Train `config` on the demo shards in <out>/<name>; resumes if interrupted."""
    from stable_audio_jax.training.registry import build_task
    from stable_audio_jax.training.trainer import Trainer

    config.data.train_shards = os.path.join(out, "shards", "train")
    config.data.eval_shards = os.path.join(out, "shards", "valid")
    trainer = Trainer(config, os.path.join(out, name), build_task(config))
    summary = trainer.train()
    stop_if_interrupted(name, summary)
    return trainer, summary


def stop_if_interrupted(name: str, summary: dict) -> None:
    """End the demo after a training stage that SIGTERM/SIGINT cut short (its checkpoint is
    saved): later stages must not use an unfinished model."""
    if "interrupted_at" in summary:
        cli.exit_with_line(
            f"demo interrupted while training {name} (checkpoint saved at step "
            f"{summary['interrupted_at']}); run it again to resume",
            EXIT_PREEMPTED,
        )


def train_tokenizer(out: str) -> dict:
    """BPE on the training captions (held-out captions stay unseen)."""
    from stable_audio_jax.input_pipeline.tokenizer import train_bpe_tokenizer

    path = os.path.join(out, "tokenizer.json")
    if not os.path.exists(path):
        with open(os.path.join(out, "data", "train.jsonl")) as f:
            captions = [json.loads(line)["caption"] for line in f]
        vocab_size = _CLAP_CONFIG.value.model.text.vocab_size
        train_bpe_tokenizer(captions, vocab_size=vocab_size).save(path)
    return {"path": path}


def evaluate_clap(out: str) -> dict:
    """Retrieval and CLAP score on every held-out clip, with the trained CLAP (EMA weights)."""
    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.metrics.clap_score import clap_score

    encoder = CLAPEncoder.from_run(os.path.join(out, "clap"))
    with open(os.path.join(out, "data", "valid.jsonl")) as f:
        entries = [json.loads(line) for line in f]
    result = clap_score(
        encoder,
        [e["caption"] for e in entries],
        [os.path.join(out, "data", e["path"]) for e in entries],
        recall_ks=(1, 5),
    )
    features, mask = encoder.text_conditioning([entries[0]["caption"], ""])
    result["text_conditioning_shape"] = list(features.shape)
    return result


def pre_encode_latents(out: str, config) -> dict:
    """VAE posteriors + CLAP text features of random training windows, written once."""
    from stable_audio_jax.inference.pre_encode import pre_encode

    folder = os.path.join(out, "latents")
    report_path = os.path.join(folder, "train_pre_encode.json")
    if os.path.exists(report_path):
        with open(report_path) as f:
            return json.load(f)
    return pre_encode(
        os.path.join(out, "shards", "train"),
        folder,
        vae_dir=os.path.join(out, "vae"),
        clap_dir=os.path.join(out, "clap"),
        sample_size=config.data.sample_size,
        num_crops=_NUM_CROPS.value,
        num_shards=2,
    )


def train_diffusion(out: str, config):
    """The tiny diffusion model on the pre-encoded latents in <out>/diffusion (resumable)."""
    from stable_audio_jax.training.registry import build_task
    from stable_audio_jax.training.trainer import Trainer

    config.data.train_shards = os.path.join(out, "latents")
    config.pretransform.vae_dir = os.path.join(out, "vae")
    config.pretransform.clap_dir = os.path.join(out, "clap")
    trainer = Trainer(config, os.path.join(out, "diffusion"), build_task(config))
    summary = trainer.train()
    stop_if_interrupted("diffusion", summary)
    return summary


def generate_samples(out: str) -> dict:
    """Held-out prompts at each requested length, with the model's own sampler settings and,
    for a rectified-flow model, also 8 pingpong steps without CFG. Each run writes a WAV +
    spectrogram per clip into its folder (`samples/`, `samples_8_steps_pingpong/`) and
    reports the timing error, the CLAP score of its clips and the wall time per clip.

    The model always generates its whole window; the timing error compares where the
    uncut output's content really stops with `seconds_total`. "Silence" is what this VAE
    decodes from the latents of digital silence (the tiny VAE leaves a hiss about 12 dB
    under its music), so a 50 ms frame counts as sound 6 dB (twice the amplitude) above it.
    The clips are generated in two equal batches: the first compiles the sampler, the
    second (same shapes) times it.
    """
    import numpy as np

    from stable_audio_jax.diffusion.sampling_config import FEW_STEP_FLOW, is_flow
    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.inference.generate import AudioGenerator, spectrogram_png
    from stable_audio_jax.input_pipeline.audio_io import write_wav
    from stable_audio_jax.metrics.clap_score import clap_score
    from stable_audio_jax.metrics.timing import loudest_frame_db, timing_errors

    generator = AudioGenerator.from_runs(os.path.join(out, "diffusion"))
    clap = CLAPEncoder.from_run(os.path.join(out, "clap"))
    rate = generator.sample_rate
    with open(os.path.join(out, "data", "valid.jsonl")) as f:
        captions = [json.loads(line)["caption"] for line in f][: _NUM_PROMPTS.value]
    lengths = [float(s) for s in _SAMPLE_SECONDS.value]
    prompts = [c for c in captions for _ in lengths]
    seconds = [s for _ in captions for s in lengths]
    silence_db = loudest_frame_db(generator.decode_silence(), rate)
    # A rectified-flow model is also sampled the few-step way (arXiv 2505.08175).
    few_step = {k: FEW_STEP_FLOW.to_dict()[k] for k in ("sampler", "steps", "cfg_scale")}
    settings = [("samples", {})] + ([("samples_8_steps_pingpong", few_step)] if is_flow(generator.objective) else [])
    half = len(prompts) // 2 if len(captions) > 1 else len(prompts)
    runs = []
    for folder_name, overrides in settings:
        batches, walls = [], []
        for first in range(0, len(prompts), half):
            chunk = slice(first, first + half)
            start = time.perf_counter()
            batches.append(
                generator.generate(
                    prompts[chunk], seconds_total=seconds[chunk], seed=first, cut=False, progress=True, **overrides
                )
            )
            walls.append(time.perf_counter() - start)
        audio = np.concatenate(batches)
        rows = timing_errors(list(audio), seconds, rate, relative_db=60.0, floor_db=silence_db + 6.0)
        folder = os.path.join(out, folder_name)
        os.makedirs(folder, exist_ok=True)
        for i, (prompt, clip, row) in enumerate(zip(prompts, audio, rows)):
            clip = clip[: int(round(row["requested"] * rate))]
            name = f"{i:02d}_{row['requested']:g}s"
            write_wav(os.path.join(folder, name + ".wav"), clip, rate)
            spectrogram_png(clip, rate, os.path.join(folder, name + ".png"), f"{prompt[:60]} ({row['requested']:g} s)")
            with open(os.path.join(folder, name + ".txt"), "w") as f:
                f.write(prompt + "\n")
            row.update(file=name + ".wav", prompt=prompt)
        score = clap_score(
            clap, prompts, [os.path.join(folder, r["file"]) for r in rows], shuffled="other_prompts", recall_ks=(1,)
        )
        errors = np.abs([r["error"] for r in rows])
        timed = len(walls) > 1  # the last batch reused the first one's compiled sampler
        runs.append(
            {
                "folder": folder_name,
                "sampling": {k: v for k, v in generator.sampling.items() if k not in overrides} | overrides,
                "clips": rows,
                "mean_abs_error_seconds": float(errors.mean()),
                "within_1s": float(np.mean(errors <= 1.0)),
                "clap_score": score["clap_score"],
                "shuffled_clap_score": score.get("shuffled_clap_score"),
                "seconds_per_clip": walls[-1] / half if timed else walls[0] / len(prompts),
                "seconds_per_clip_includes_compile": not timed,
                "first_batch_seconds": walls[0],
            }
        )
    return {"silence_level_db": round(silence_db, 1), "runs": runs}


def inpaint_examples(out: str) -> dict:
    """Regenerate `_INPAINT_REGION` of held-out clips (their first window) and measure what
    is kept and what follows the prompt.

    Three batches over the same clips: the region inpainted with each clip's own caption,
    inpainted with another clip's caption (a derangement), and a fresh generation of the
    whole window with the own caption. Outside the region (clear of it by `margin`, which
    covers the latent crossfade and the decoder's reach) the log-spectral distance to the
    clip's VAE reconstruction is that of the kept audio, against the fresh generation's;
    inside it the output must differ. The region's CLAP score is reported against its own
    caption and against the other captions, for both batches, and the swapped batch's regions
    against the captions they were made with versus the own-caption regions against those.
    """
    import numpy as np

    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.inference.generate import AudioGenerator, spectrogram_png
    from stable_audio_jax.input_pipeline.audio_io import decode_stereo, write_wav
    from stable_audio_jax.metrics.clap_score import clap_score, derangement
    from stable_audio_jax.metrics.spectral_distance import log_spectral_distance

    generator = AudioGenerator.from_runs(os.path.join(out, "diffusion"))
    clap = CLAPEncoder.from_run(os.path.join(out, "clap"))
    rate, window = generator.sample_rate, generator.window_samples
    region = tuple(float(x) for x in _INPAINT_REGION.value.split(":"))
    with open(os.path.join(out, "data", "valid.jsonl")) as f:
        items = [json.loads(line) for line in f]
    items = [it for it in items if it["duration_seconds"] >= generator.window_seconds][: _NUM_INPAINT.value]
    if len(items) < 2:
        raise RuntimeError(f"need 2 held-out clips of at least {generator.window_seconds:.1f} s, found {len(items)}")
    clips = []
    for item in items:
        clips.append(decode_stereo(os.path.join(out, "data", item["path"]), rate)[:window])
    captions = [it["caption"] for it in items]
    swapped_captions = [captions[j] for j in derangement(len(captions), seed=0)]
    kwargs = dict(seconds_total=generator.window_seconds, cut=False, progress=True, seed=0)
    start = time.perf_counter()
    own = generator.generate(captions, inpaint_audio=clips, inpaint_regions=[region], **kwargs)
    wall = time.perf_counter() - start
    swapped = generator.generate(swapped_captions, inpaint_audio=clips, inpaint_regions=[region], **kwargs)
    fresh = generator.generate(captions, **kwargs)
    reconstructions = [generator.reconstruct(c) for c in clips]

    folder = os.path.join(out, "inpainting")
    os.makedirs(folder, exist_ok=True)
    first, last = (int(round(x * rate)) for x in region)
    paths = {"own": [], "swapped": [], "original": []}
    for i, caption in enumerate(captions):
        for kind, audio, text in (("own", own[i], caption), ("swapped", swapped[i], swapped_captions[i])):
            write_wav(os.path.join(folder, f"{i:02d}_{kind}.wav"), audio, rate)
            spectrogram_png(audio, rate, os.path.join(folder, f"{i:02d}_{kind}.png"), text, regions=[region])
            with open(os.path.join(folder, f"{i:02d}_{kind}.txt"), "w") as f:
                f.write(text + "\n")
        for kind, audio in (("own", own[i]), ("swapped", swapped[i]), ("original", clips[i])):
            path = os.path.join(folder, f"{i:02d}_{kind}_region.wav")
            write_wav(path, audio[first:last], rate)
            paths[kind].append(path)

    margin = 0.25
    lsd = lambda outputs, inside: float(  # noqa: E731
        np.mean(
            [
                log_spectral_distance(o, r, rate, regions=[region], inside=inside, margin=margin)
                for o, r in zip(outputs, reconstructions)
            ]
        )
    )
    clear = np.ones(window, bool)
    clear[max(0, first - int(margin * rate)) : last + int(margin * rate)] = False
    kept_jump = max(float(np.max(np.abs(o[clear] - r[clear]))) for o, r in zip(own, reconstructions))
    scores = {
        kind: clap_score(clap, texts, paths[kind], shuffled="other_prompts", recall_ks=(1,))
        for kind, texts in (("own", captions), ("swapped", swapped_captions), ("original", captions))
    }
    own_against_swapped = clap_score(clap, swapped_captions, paths["own"], shuffled_baseline=False, recall_ks=(1,))
    return {
        "region_seconds": list(region),
        "clips": [it["clip_id"] for it in items],
        "margin_seconds": margin,
        "kept_lsd_db": {"inpainted": lsd(own, False), "fresh_generation": lsd(fresh, False)},
        "region_lsd_db_inpainted": lsd(own, True),
        "kept_max_abs_difference": kept_jump,
        "region_clap": {
            "own_caption": {"matched": scores["own"]["clap_score"], "other": scores["own"]["shuffled_clap_score"]},
            "swapped_caption": {
                "matched": scores["swapped"]["clap_score"],
                "other": scores["swapped"]["shuffled_clap_score"],
                "own_caption_regions": own_against_swapped["clap_score"],
            },
            "original": {
                "matched": scores["original"]["clap_score"],
                "other": scores["original"]["shuffled_clap_score"],
            },
        },
        "seconds_per_clip": wall / len(items),
        "seconds_per_clip_includes_compile": True,
    }


def frechet_examples(out: str, samples: dict) -> dict:
    """FD of each sampling run's clips to the held-out clips, with the offline embedder (the
    demo CLAP's audio tower, `inference.evaluation.ClapAudioEmbedder`), between two bounds:
    the held-out clips are split at random into halves, the first half is the reference, the
    second half against it is the floor (real music of the same kind), and white noise of the
    generated clips' lengths against it is the ceiling. At this size (tens of frames of
    256-d embeddings) FD is dominated by estimation noise; the bounds say how far apart sets are."""
    import numpy as np

    from stable_audio_jax.inference.clap import CLAPEncoder
    from stable_audio_jax.inference.evaluation import ClapAudioEmbedder, embed_files, frechet_report
    from stable_audio_jax.input_pipeline.audio_io import write_wav
    from stable_audio_jax.metrics.frechet import GaussianStatistics

    embedder = ClapAudioEmbedder(CLAPEncoder.from_run(os.path.join(out, "clap")))
    with open(os.path.join(out, "data", "valid.jsonl")) as f:
        held_out = [os.path.join(out, "data", json.loads(line)["path"]) for line in f]
    order = np.random.default_rng(_SEED.value).permutation(len(held_out))
    reference_paths = [held_out[i] for i in order[: len(order) // 2]]
    floor_paths = [held_out[i] for i in order[len(order) // 2 :]]
    reference = GaussianStatistics.of(embed_files(embedder, reference_paths))

    noise_dir = os.path.join(out, "frechet_noise")
    os.makedirs(noise_dir, exist_ok=True)
    rng = np.random.default_rng(_SEED.value)
    noise_paths = []
    for i, row in enumerate(samples["runs"][0]["clips"]):
        path = os.path.join(noise_dir, f"{i:02d}_{row['requested']:g}s.wav")
        write_wav(
            path,
            (0.1 * rng.standard_normal((int(row["requested"] * embedder.sample_rate), 2))).astype(np.float32),
            embedder.sample_rate,
        )
        noise_paths.append(path)

    sets = {"held_out_second_half": floor_paths}
    sets.update((run["folder"], os.path.join(out, run["folder"])) for run in samples["runs"])
    sets["white_noise"] = noise_paths
    sets = {name: frechet_report(embedder, generated, reference) for name, generated in sets.items()}
    return {
        "embedder": embedder.name,
        "embedder_fingerprint": embedder.fingerprint,
        "reference": {"files": len(reference_paths), "frames": reference.count, "dims": int(reference.mean.shape[0])},
        "fd_to_held_out_first_half": sets,
    }


def reconstruct(out: str, config, task, state) -> list[dict]:
    """Encode/decode the start of held-out clips with the EMA weights; write WAV pairs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stable_audio_jax.input_pipeline.audio_io import decode_stereo, write_wav
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
        audio = decode_stereo(os.path.join(out, "data", entry["path"]), sample_rate)[:length]
        audio = np.pad(audio, ((0, length - len(audio)), (0, 0)))
        recon, loss, silent_loss = roundtrip(audio[None])
        name = os.path.splitext(os.path.basename(entry["path"]))[0]
        write_wav(os.path.join(folder, f"{name}_original.wav"), audio, sample_rate)
        write_wav(os.path.join(folder, f"{name}_reconstruction.wav"), np.asarray(recon[0]), sample_rate)
        results.append(
            {
                "clip": name,
                "caption": entry["caption"],
                "spectral_loss": float(loss),
                "silent_output_spectral_loss": float(silent_loss),
            }
        )
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # library INFO logs (checkpointing) would drown the stages
    out = os.path.abspath(_OUTPUT.value)
    os.makedirs(out, exist_ok=True)
    config = _CONFIG.value
    timings = {}

    def stage(number: int, name: str, title: str, fn, *args):
        print(f"[{number}/12] {title}", flush=True)
        t = time.time()
        result = fn(*args)
        timings[f"{name}_seconds"] = round(time.time() - t, 1)
        return result

    data_summary = stage(1, "render", "rendering the demo dataset", render_data, out)
    shard_reports = stage(2, "shards", "writing ArrayRecord shards", make_shards, out)
    vae_trainer, vae_summary = stage(3, "vae_train", "training the tiny VAE", train, out, "vae", config)
    recon = stage(
        4,
        "reconstruction",
        "reconstructing held-out clips",
        reconstruct,
        out,
        config,
        vae_trainer.task,
        vae_trainer.state,
    )
    stage(5, "tokenizer", "training a BPE tokenizer on the captions", train_tokenizer, out)
    clap_config = _CLAP_CONFIG.value
    clap_config.text.tokenizer = os.path.join(out, "tokenizer.json")
    _, clap_summary = stage(6, "clap_train", "training the tiny CLAP", train, out, "clap", clap_config)
    clap_eval = stage(7, "clap_eval", "scoring held-out clips with the CLAP", evaluate_clap, out)
    diffusion_config = _DIFFUSION_CONFIG.value
    latents = stage(
        8, "pre_encode", "pre-encoding training windows (frozen VAE + CLAP)", pre_encode_latents, out, diffusion_config
    )
    diffusion_summary = stage(
        9, "diffusion_train", "training the tiny diffusion model", train_diffusion, out, diffusion_config
    )
    samples = stage(10, "sampling", "generating held-out prompts at several lengths", generate_samples, out)
    inpainted = stage(11, "inpainting", "regenerating a region of held-out clips", inpaint_examples, out)
    frechet = stage(
        12, "frechet", "Frechet distances to held-out clips (CLAP audio tower)", frechet_examples, out, samples
    )

    curve = lambda summary, key: [[h["step"], h[key]] for h in summary.get("history", []) if key in h]
    summary = {
        "data": data_summary,
        "shards": {k: {"written": v.get("written")} for k, v in shard_reports.items()},
        "vae": {k: v for k, v in vae_summary.items() if k != "history"},
        "spectral_loss_curve": curve(vae_summary, "spectral"),
        "reconstructions": recon,
        "clap": {k: v for k, v in clap_summary.items() if k != "history"},
        "clap_loss_curve": curve(clap_summary, "contrastive_loss"),
        "clap_heldout": {k: v for k, v in clap_eval.items() if k != "per_item"},
        "latents": {k: latents.get(k) for k in ("records", "latent_frames", "latent_dim", "sample_size")},
        "diffusion": {k: v for k, v in diffusion_summary.items() if k != "history"},
        "diffusion_loss_curve": curve(diffusion_summary, "loss"),
        "samples": samples,
        "inpainting": inpainted,
        "frechet": frechet,
        "timings": timings,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(f"\nDemo finished in {sum(timings.values()):.0f} s; outputs in {out}")
    spectral = [v for _, v in summary["spectral_loss_curve"]]
    if spectral:
        print(f"  VAE multi-resolution STFT loss (train, per log window): {spectral[0]:.3f} -> {spectral[-1]:.3f}")
    for r in recon:
        print(
            f"  {r['clip']}: held-out spectral loss {r['spectral_loss']:.3f} (silent output: "
            f"{r['silent_output_spectral_loss']:.3f})  {r['caption'][:50]}"
        )
    contrastive = [v for _, v in summary["clap_loss_curve"]]
    if contrastive:
        print(f"  CLAP contrastive loss (train): {contrastive[0]:.3f} -> {contrastive[-1]:.3f}")
    retrieval = clap_eval.get("retrieval", {})
    for k in (1, 5):
        if f"text_to_audio_recall@{k}" in retrieval:
            print(
                f"  held-out text->audio recall@{k}: {retrieval[f'text_to_audio_recall@{k}']:.3f} "
                f"(chance {retrieval[f'chance@{k}']:.3f}, {clap_eval['num_items']} clips)"
            )
    print(
        f"  held-out CLAP score: matched {clap_eval['clap_score']:.3f}, "
        f"shuffled {clap_eval.get('shuffled_clap_score', float('nan')):.3f}"
    )
    diffusion_loss = [v for _, v in summary["diffusion_loss_curve"]]
    if diffusion_loss:
        objective = diffusion_config.model.objective
        print(f"  diffusion loss ({objective} objective, train): {diffusion_loss[0]:.3f} -> {diffusion_loss[-1]:.3f}")
    for run in samples["runs"]:
        s = run["sampling"]
        print(f"  {run['folder']}: {s['steps']} steps of {s['sampler']}, CFG {s['cfg_scale']:g}")
        for row in run["clips"]:
            print(
                f"    {row['file']}: asked {row['requested']:g} s, content ends at {row['measured']:.2f} s "
                f"(error {row['error']:+.2f} s)"
            )
        print(
            f"    timing: mean |error| {run['mean_abs_error_seconds']:.2f} s, within 1 s: "
            f"{run['within_1s']:.0%} (silence = the VAE's {samples['silence_level_db']:.0f} dB hiss); "
            f"CLAP score matched {run['clap_score']:.3f}, other prompts {run['shuffled_clap_score']:.3f}; "
            f"{run['seconds_per_clip']:.2f} s per clip"
        )
    region, clap_region = inpainted["region_seconds"], inpainted["region_clap"]
    print(
        f"  inpainting {region[0]:g}-{region[1]:g} s of {len(inpainted['clips'])} held-out clips: kept part "
        f"{inpainted['kept_lsd_db']['inpainted']:.4f} dB from the VAE reconstruction (a fresh generation: "
        f"{inpainted['kept_lsd_db']['fresh_generation']:.2f} dB), region {inpainted['region_lsd_db_inpainted']:.2f} dB"
    )
    print(
        f"    region CLAP score: own caption {clap_region['own_caption']['matched']:.3f} vs other captions "
        f"{clap_region['own_caption']['other']:.3f}; made with another clip's caption: against it "
        f"{clap_region['swapped_caption']['matched']:.3f}, the own-caption regions against it "
        f"{clap_region['swapped_caption']['own_caption_regions']:.3f}"
    )
    reference = frechet["reference"]
    print(
        f"  FD ({frechet['embedder']}, {reference['dims']}-d) to {reference['files']} held-out clips "
        f"({reference['frames']} frames): "
        + ", ".join(f"{name} {row['fd']:.3f}" for name, row in frechet["fd_to_held_out_first_half"].items())
    )
    print(f"  reconstructions: {os.path.join(out, 'reconstructions')}   samples: {os.path.join(out, 'samples')}")
    print(f"  summary: {os.path.join(out, 'summary.json')}")
    print(
        f"  more: python launch/sample.py --diffusion_dir={os.path.join(out, 'diffusion')} "
        f'--prompt="solo piano, waltz, 90 BPM" --seconds_total=6 --output_dir={os.path.join(out, "my_samples")}'
    )


if __name__ == "__main__":
    cli.run(main)
