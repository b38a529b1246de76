"""Evaluate generated audio against a reference set: Frechet distance of embeddings and the CLAP score.

    python launch/evaluate.py --generated=outputs/demo/samples --reference=outputs/demo/data/valid.jsonl \
        --clap_dir=outputs/demo/clap --metrics=fd_clap,clap --output_json=eval.json
    # embed a large reference set once, then compare against the saved statistics
    python launch/evaluate.py --generated=samples --reference=data/valid.jsonl --clap_dir=... \
        --metrics=fd_clap --save_stats=valid_stats.npz
    python launch/evaluate.py --generated=samples --reference=valid_stats.npz --clap_dir=... --metrics=fd_clap
    # KL_passt: generated files named as their reference clips (captions' prompts)
    python launch/evaluate.py --generated=samples --reference=references --metrics=kl_passt \
        --passt_weights=passt-s-f128-p16-s10-ap.476-swa.pt
    # the LAION-CLAP score of captioned generations
    python launch/evaluate.py --generated=samples --metrics=clap_laion --roberta_dir=roberta-base \
        --laion_clap_checkpoint=630k-audioset-fusion-best.pt
    # an autoencoder (a VAE run or a pretrained directory) on reference audio
    python launch/evaluate.py --vae=outputs/demo/vae --reference=outputs/demo/data/valid.jsonl

`--generated` and `--reference` are folders of audio with caption sidecars or JSONL/CSV
manifests (what `data/make_shards.py` reads); `--reference` may also be a `.npz` written by
`--save_stats`, which must come from the same embedder and weights (for kl_passt it holds the
reference's label distributions). Metrics:

  fd_openl3  the paper's FD_openl3: OpenL3 mel256 512-d embeddings of each channel's 1 s
             windows every 0.5 s at 48 kHz, `[left || right]`; needs --openl3_weights
             (torchopenl3's torchopenl3_mel256_music_512.pth.tar, a local file)
  fd_clap    the same with the project's CLAP audio tower (--clap_dir): the offline default
  kl_passt   the paper's KL_passt: PaSST AudioSet label distributions (softmax of the logits
             averaged over 10 s windows every 5 s, mono at 32 kHz), mean KL(generated ||
             reference) over the files with the same name in both sets; needs --passt_weights
             (passt-s-f128-p16-s10-ap.476-swa.pt from the PaSST releases, a local file)
  clap       CLAP score of the generated files with their captions, against other captions
  clap_laion the same with LAION-CLAP (the paper's CLAP score): --laion_clap_checkpoint
             (630k-audioset-fusion-best.pt, stable-audio-metrics' default, or a non-fusion
             HTSAT-base one such as music_speech_audioset_epoch_15_esc_89.98.pt) and
             --roberta_dir, a local roberta-base folder (config.json, vocab.json, merges.txt);
             mono 48 kHz; clips over 10 s fused (global + three local views) or cropped at a
             seeded random offset, shorter ones repeated and zero-padded, as laion-clap does

With `--vae`, the files of `--reference` go through the autoencoder instead and each gets its
multi-resolution STFT distance, SI-SDR, mel distance and the output level where the input is
silent or empty (`inference/autoencoder_evaluation.py`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags, logging  # noqa: E402

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402

METRICS = ("fd_openl3", "fd_clap", "kl_passt", "clap", "clap_laion")
FD_METRICS = ("fd_openl3", "fd_clap")
REFERENCE_METRICS = FD_METRICS + ("kl_passt",)  # compare with --reference; --save_stats holds one's

_GENERATED = flags.DEFINE_string("generated", None, "Generated audio: a folder or a manifest.")
_REFERENCE = flags.DEFINE_string("reference", None, "Reference audio (folder or manifest) or a --save_stats .npz.")
_METRICS = flags.DEFINE_list("metrics", ["fd_clap", "clap"], f"Metrics among {list(METRICS)}.")
_CLAP_DIR = flags.DEFINE_string("clap_dir", None, "Run directory of the trained CLAP (fd_clap, clap).")
_OPENL3 = flags.DEFINE_string("openl3_weights", None, "torchopenl3 weights file (fd_openl3).")
_OPENL3_CONTENT = flags.DEFINE_enum("openl3_content", "music", ["music", "env"], "OpenL3 content type of the weights.")
_PASST = flags.DEFINE_string("passt_weights", None, "PaSST AudioSet weights file (kl_passt).")
_PASST_COLLECT = flags.DEFINE_enum("passt_collect", "mean", ["mean", "max"], "kl_passt: pooling of window logits.")
_LAION = flags.DEFINE_string("laion_clap_checkpoint", None, "LAION-CLAP checkpoint (clap_laion), a local file.")
_ROBERTA = flags.DEFINE_string(
    "roberta_dir", None, "Local roberta-base folder for LAION-CLAP's text branch (clap_laion)."
)
_SAVE_STATS = flags.DEFINE_string("save_stats", "", "Write the reference's embedding statistics to this .npz.")
_OUTPUT = flags.DEFINE_string("output_json", "", "Also write the results here.")
_VAE = flags.DEFINE_string("vae", None, "Evaluate this VAE run or pretrained directory on --reference instead.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 30.0, "--vae: reconstruct at most this much of each file.")


def _vae_main() -> None:
    if not _REFERENCE.value or _REFERENCE.value.endswith(".npz"):
        raise UserError("--vae needs --reference: the audio (a folder or manifest) to reconstruct")
    if not os.path.exists(_REFERENCE.value):
        raise UserError(f"--reference={_REFERENCE.value} does not exist")
    if _MAX_SECONDS.value <= 0:
        raise UserError(f"--max_seconds must be > 0, got {_MAX_SECONDS.value:g}")
    from stable_audio_jax.inference import autoencoder_evaluation

    vae = autoencoder_evaluation.load_autoencoder(_VAE.value)
    report = autoencoder_evaluation.evaluate_reconstructions(
        vae, _REFERENCE.value, max_seconds=_MAX_SECONDS.value, progress=True
    )
    print(f"{'file':<40} {'mrstft':>8} {'si_sdr':>8} {'mel':>7} {'silent':>8} {'empty':>8}")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for row in report["per_file"] + [dict(report["overall"], file="mean")]:
        print(
            f"{os.path.basename(row['file'])[:40]:<40} {fmt(row.get('mrstft'), '8.3f')} "
            f"{fmt(row.get('si_sdr_db'), '8.2f')} {fmt(row.get('mel_distance'), '7.3f')} "
            f"{fmt(row.get('silent_frames_output_db'), '8.1f')} {fmt(row.get('empty_bins_output_db'), '8.1f')}"
        )
    print("(si_sdr in dB; silent / empty: output level in dB where the input is silent / has no energy)")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(report, f, indent=2)


def _check_flags() -> list[str]:
    metrics = [m.strip() for m in _METRICS.value if m.strip()]
    for metric in metrics:
        if metric not in METRICS:
            raise UserError(f"--metrics: unknown metric {metric!r}; available: {list(METRICS)}")
    if not metrics:
        raise UserError("--metrics is empty")
    if not _GENERATED.value:
        raise UserError("--generated is required (or --vae with --reference, to evaluate an autoencoder)")
    if not os.path.exists(_GENERATED.value):
        raise UserError(f"--generated={_GENERATED.value} does not exist")
    compared = [m for m in metrics if m in REFERENCE_METRICS]
    if compared:
        if not _REFERENCE.value:
            raise UserError(f"--metrics={compared[0]} needs --reference (audio, or a --save_stats .npz)")
        if not os.path.exists(_REFERENCE.value):
            raise UserError(f"--reference={_REFERENCE.value} does not exist")
        if _SAVE_STATS.value and _REFERENCE.value.endswith(".npz"):
            raise UserError("--save_stats writes the statistics of reference audio, but --reference is already a .npz")
        if (_SAVE_STATS.value or _REFERENCE.value.endswith(".npz")) and len(compared) > 1:
            raise UserError(
                f"statistics files hold one embedder's: give one of {', '.join(REFERENCE_METRICS)} with them"
            )
    elif _SAVE_STATS.value:
        raise UserError(f"--save_stats needs one of {', '.join(REFERENCE_METRICS)} in --metrics")
    if "fd_openl3" in metrics and not _OPENL3.value:
        raise UserError("--metrics=fd_openl3 needs --openl3_weights (torchopenl3_mel256_music_512.pth.tar)")
    if "kl_passt" in metrics and not _PASST.value:
        raise UserError("--metrics=kl_passt needs --passt_weights (passt-s-f128-p16-s10-ap.476-swa.pt)")
    if "clap_laion" in metrics and not (_LAION.value and _ROBERTA.value):
        raise UserError(
            "--metrics=clap_laion needs --laion_clap_checkpoint (e.g. 630k-audioset-fusion-best.pt) "
            "and --roberta_dir (a local roberta-base folder)"
        )
    needs_clap = [m for m in metrics if m in ("fd_clap", "clap")]
    if needs_clap and not _CLAP_DIR.value:
        raise UserError(f"--metrics={','.join(needs_clap)} needs --clap_dir (the CLAP run that embeds)")
    if _CLAP_DIR.value:
        cli.check_run_tasks({"clap_dir": (_CLAP_DIR.value, "clap")})
    return metrics


def _reference_side(load: Callable, compute: Callable, save: Callable, describe: Callable) -> Any:
    """The reference side of a metric: `load(npz)` when --reference is a saved file, else
    `compute(audio source)`, written with `save(path, value, source)` when --save_stats asks."""
    if _REFERENCE.value.endswith(".npz"):
        return load(_REFERENCE.value)
    value = compute(_REFERENCE.value)
    if _SAVE_STATS.value:
        save(_SAVE_STATS.value, value, _REFERENCE.value)
        print(f"reference {describe(value)} written to {_SAVE_STATS.value}")
    return value


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if _VAE.value:
        return _vae_main()
    metrics = _check_flags()
    from stable_audio_jax.inference import evaluation
    from stable_audio_jax.inference.clap import CLAPEncoder

    encoder = CLAPEncoder.from_run(_CLAP_DIR.value) if _CLAP_DIR.value else None
    results: dict = {"generated": os.path.abspath(_GENERATED.value)}
    for metric in (m for m in metrics if m in FD_METRICS):
        if metric == "fd_openl3":
            from stable_audio_jax.models.openl3 import OpenL3Config

            embedder = evaluation.OpenL3Embedder(_OPENL3.value, OpenL3Config(content_type=_OPENL3_CONTENT.value))
        else:
            embedder = evaluation.ClapAudioEmbedder(encoder)
        reference = _reference_side(
            lambda path: evaluation.load_statistics(path, embedder),
            lambda source: evaluation.embedding_statistics(embedder, source, progress=True),
            lambda path, value, source: evaluation.save_statistics(path, value, embedder, source),
            lambda value: f"statistics ({value.count} frames)",
        )
        results[metric] = evaluation.frechet_report(embedder, _GENERATED.value, reference, progress=True)
        results[metric]["reference"] = os.path.abspath(_REFERENCE.value)
    if "kl_passt" in metrics:
        tagger = evaluation.PaSSTTagger(_PASST.value, collect=_PASST_COLLECT.value)
        reference_labels = _reference_side(
            lambda path: evaluation.load_label_distributions(path, tagger),
            lambda source: evaluation.label_distributions(tagger, source, progress=True),
            lambda path, value, source: evaluation.save_label_distributions(path, value, tagger, source),
            lambda value: f"label distributions ({len(value)} clips)",
        )
        results["kl_passt"] = evaluation.kl_report(tagger, _GENERATED.value, reference_labels, progress=True)
        results["kl_passt"]["reference"] = os.path.abspath(_REFERENCE.value)
    if "clap" in metrics:
        results["clap"] = evaluation.captioned_clap_score(encoder, _GENERATED.value)
    if "clap_laion" in metrics:
        laion = CLAPEncoder.from_laion_checkpoint(_LAION.value, _ROBERTA.value)
        results["clap_laion"] = evaluation.captioned_clap_score(laion, _GENERATED.value)
        results["clap_laion"].update(
            embedder="laion-clap-htsat", embedder_fingerprint=evaluation.params_fingerprint(laion.params)
        )

    print(f"{'metric':<10} {'value':>10}  details")
    for metric in (m for m in FD_METRICS if m in results):
        r = results[metric]
        print(
            f"{metric:<10} {r['fd']:>10.4f}  {r['generated_files']} files ({r['generated_frames']} frames) vs "
            f"{r['reference_frames']} reference frames; {r['embedder']} {r['dims']}-d, weights {r['embedder_fingerprint']}"
        )
    if "kl_passt" in results:
        r = results["kl_passt"]
        print(
            f"{'kl_passt':<10} {r['kl']:>10.4f}  {r['pairs']} pairs ({len(r['generated_without_reference'])} generated "
            f"files without a reference); {r['embedder']}, weights {r['embedder_fingerprint']}"
        )
    for metric in (m for m in ("clap", "clap_laion") if m in results):
        r = results[metric]
        weights = f"; weights {r['embedder_fingerprint']}" if "embedder_fingerprint" in r else ""
        print(
            f"{metric:<10} {r['clap_score']:>10.4f}  {r['num_items']} captioned files; other captions "
            f"{r.get('shuffled_clap_score', float('nan')):.4f}{weights}"
        )
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
