"""Evaluating a set of generated clips against a reference set (arXiv 2402.04825, section 5.2).

    embedder = ClapAudioEmbedder(CLAPEncoder.from_run("outputs/demo/clap"))
    reference = embedding_statistics(embedder, "outputs/demo/data/valid.jsonl")     # or load_statistics(path)
    result = frechet_report(embedder, "outputs/demo/samples", reference)          # {"fd": ..., ...}

The Frechet distance compares the Gaussians of the two sets' frame embeddings
(`metrics/frechet.py`), every analysis frame of every clip one sample, as stable-audio-metrics
does for OpenL3. An embedder is anything with `name`, `sample_rate`, `fingerprint` and
`embed_file(path) -> [frames, dims]` (`AudioEmbedder`): it applies its own protocol
(resampling, normalisation, windows, channels). `ClapAudioEmbedder` is the project's CLAP audio
tower, the offline default: each channel's consecutive windows embedded separately and joined
`[left || right]`, the paper's stereo protocol. A reference side can be saved once
(`save_statistics`) with the embedder's name and weights fingerprint, which loading checks.

KL_passt pairs each generated file with the reference file of the same name:

    tagger = PaSSTTagger("passt-s-f128-p16-s10-ap.476-swa.pt")
    reference = label_distributions(tagger, "musiccaps/")                         # {clip id: [527]}
    result = kl_report(tagger, "samples/", reference)                             # {"kl": ..., ...}
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np

from stable_audio_jax.errors import UserError
from stable_audio_jax.inference.clap import CLAPEncoder, prepare_audio
from stable_audio_jax.integrity import host_checksum
from stable_audio_jax.metrics.frechet import GaussianStatistics, frechet_distance

STATISTICS_FORMAT = "stable-audio-jax embedding statistics v1"


class AudioEmbedder(Protocol):
    name: str  # what made the embeddings, e.g. "clap-audio-tower"
    sample_rate: int
    fingerprint: str  # of the weights: statistics from other weights do not compare

    def embed_file(self, path: str) -> np.ndarray:
        """`[frames, dims]` float embeddings of one audio file."""


def params_fingerprint(params) -> str:
    """A short hex digest of a parameter tree's bit-exact checksums (`integrity.host_checksum`)."""
    return hashlib.sha256(host_checksum(params).tobytes()).hexdigest()[:16]


class ClapAudioEmbedder:
    """The project's CLAP audio tower as a frame embedder: per channel, the clip's consecutive
    tower windows (the last zero-padded), each embedded alone -> `[windows, 2 * embed_dim]`
    (`[left || right]`; a mono file counts as both). Preprocessing is the CLAP score's
    (`inference.clap.prepare_audio`: resample, peak -1 dBFS, int16 round trip)."""

    name = "clap-audio-tower"

    def __init__(self, encoder: CLAPEncoder):
        self.encoder = encoder
        self.sample_rate = encoder.sample_rate
        self.fingerprint = params_fingerprint(encoder.params)

    def embed_file(self, path: str) -> np.ndarray:
        from stable_audio_jax.input_pipeline.audio_io import decode_audio

        audio, rate = decode_audio(path)
        audio = prepare_audio(audio, rate, self.sample_rate)
        audio = np.repeat(audio, 2, axis=1) if audio.shape[1] == 1 else audio[:, :2]
        window = self.encoder.window_samples
        count = max(1, -(-len(audio) // window))
        padded = np.zeros((count * window, 2), np.float32)
        padded[: len(audio)] = audio
        # [left windows; right windows], each a mono [window, 1] input to the tower.
        windows = padded.reshape(count, window, 2).transpose(2, 0, 1).reshape(2 * count, window, 1)
        embeddings = self.encoder.embed_audio(windows)
        return np.concatenate([embeddings[:count], embeddings[count:]], axis=-1)


def _import_weights(path: str, model: str, origin: str, convert: Callable[[Any], Any]) -> Any:
    """`convert(StateDictReader)` of the public weights file `path`; `UserError` naming the file
    and where it comes from when it is missing, or what is wrong with it."""
    from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, load_state_dict

    if not os.path.isfile(path):
        raise UserError(f"{model} weights file not found: {path} ({origin}; nothing is downloaded here)")
    try:
        return convert(StateDictReader(load_state_dict(path), path))
    except (ConversionError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


def _in_batches(fn: Callable[[np.ndarray], Any], rows: np.ndarray, batch_size: int) -> np.ndarray:
    """`fn` over `rows [n, ...]` in batches of `batch_size`, the last one zero-padded (one
    compiled shape), cut back to `[n, ...]`."""
    out = []
    for first in range(0, len(rows), batch_size):
        chunk = rows[first : first + batch_size]
        padded = np.zeros((batch_size,) + chunk.shape[1:], np.float32)
        padded[: len(chunk)] = chunk
        out.append(np.asarray(fn(padded))[: len(chunk)])
    return np.concatenate(out)


class OpenL3Embedder:
    """OpenL3 (`models/openl3.py`) with imported weights, as the paper's FD_openl3 protocol:
    the file peak-normalised to -1 dBFS, resampled to 48 kHz, each channel's 1 s windows every
    `hop_seconds` (0.5 s) embedded alone -> `[windows, 2 * embedding_size]` (`[left || right]`;
    a mono file counts as both), as stable-audio-metrics' `openl3_fd` with `channels=2`. The
    reference resamples with resampy, here with soxr (the figures then differ slightly)."""

    def __init__(self, weights_path: str, config=None, *, hop_seconds: float = 0.5, batch_size: int = 32):
        from stable_audio_jax.convert.openl3_checkpoint import openl3_params_from_state_dict
        from stable_audio_jax.models import openl3

        config = config or openl3.OpenL3Config()
        params = _import_weights(
            weights_path,
            "OpenL3",
            f"torchopenl3's torchopenl3_{config.input_repr}_{config.content_type}_{config.embedding_size}.pth.tar, "
            "from github.com/torchopenl3/torchopenl3-models",
            lambda reader: openl3_params_from_state_dict(reader, config),
        )
        self.name = f"openl3-{config.input_repr}-{config.content_type}-{config.embedding_size}"
        self.sample_rate = openl3.SAMPLE_RATE
        self.fingerprint = params_fingerprint(params)
        self.hop_seconds = hop_seconds
        self.batch_size = batch_size
        self._windows = openl3.analysis_windows
        model = openl3.OpenL3(config)
        self._embed = jax.jit(lambda windows: model.apply({"params": params}, windows))

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """`[n, 48000]` -> `[n, embedding_size]`, in batches of `batch_size` (the last one padded)."""
        return _in_batches(self._embed, windows, self.batch_size)

    def embed_file(self, path: str) -> np.ndarray:
        from stable_audio_jax.input_pipeline.audio_io import decode_audio, peak_normalise, resample

        audio, rate = decode_audio(path)
        audio = resample(peak_normalise(audio), rate, self.sample_rate)
        channels = [audio[:, 0], audio[:, 0]] if audio.shape[1] == 1 else [audio[:, 0], audio[:, 1]]
        halves = [self.embed_windows(self._windows(c, self.hop_seconds)) for c in channels]
        return np.concatenate(halves, axis=-1)


class PaSSTTagger:
    """PaSST (`models/passt.py`) with imported weights, as stable-audio-metrics' `passt_kld`
    applies it: the file's channels averaged (librosa's mono), resampled to 32 kHz (soxr HQ,
    librosa's default), peak-normalised to -1 dB, cut into 10 s windows every 5 s
    (`passt.analysis_windows`), AudioSet logits per window, pooled by `collect` ("mean" or
    "max") into one softmax distribution (`metrics/label_divergence.py`)."""

    def __init__(self, weights_path: str, config=None, *, collect: str = "mean", batch_size: int = 4):
        """`config`: the checkpoint's layout, None to read it off the file's shapes."""
        from stable_audio_jax.convert.passt_checkpoint import passt_config_from_state_dict, passt_params_from_state_dict
        from stable_audio_jax.metrics.label_divergence import COLLECT
        from stable_audio_jax.models import passt

        if collect not in COLLECT:
            raise UserError(f"PaSST collect must be one of {list(COLLECT)}, got {collect!r}")

        def convert(reader):
            nonlocal config
            config = config or passt_config_from_state_dict(reader)
            return passt_params_from_state_dict(reader, config)

        params = _import_weights(
            weights_path,
            "PaSST",
            "passt-s-f128-p16-s10-ap.476-swa.pt, the AudioSet model hear21passt's get_basic_model loads, "
            "from github.com/kkoutini/PaSST/releases",
            convert,
        )
        self.name = f"passt-{config.embed_dim}d-{config.depth}x{config.num_heads}-collect-{collect}"
        self.sample_rate = passt.SAMPLE_RATE
        self.fingerprint = params_fingerprint(params)
        self.collect = collect
        self.batch_size = batch_size
        self._windows = passt.analysis_windows
        model = passt.PaSST(config)
        self._logits = jax.jit(lambda windows: model.apply({"params": params}, windows))

    def window_logits(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Logits `[n, classes]` of windows of at most two lengths (full ones batched, the last
        batch padded; a short one alone)."""
        full = [i for i, w in enumerate(windows) if len(w) == len(windows[0])]
        out = dict(zip(full, _in_batches(self._logits, np.stack([windows[i] for i in full]), self.batch_size)))
        for i, window in enumerate(windows):
            if i not in out:
                out[i] = np.asarray(self._logits(np.asarray(window, np.float32)[None]))[0]
        return np.stack([out[i] for i in range(len(windows))])

    def label_distribution(self, path: str) -> np.ndarray:
        """The label distribution `[classes]` float64 of one audio file."""
        from stable_audio_jax.input_pipeline.audio_io import decode_audio, peak_normalise, resample
        from stable_audio_jax.metrics.label_divergence import clip_distribution

        audio, rate = decode_audio(path)
        mono = resample(np.mean(audio, axis=1, keepdims=True), rate, self.sample_rate)
        windows = self._windows(peak_normalise(mono)[:, 0])
        return clip_distribution(self.window_logits(windows), self.collect)


def _discover(source: str) -> list:
    """`shard_writer.discover_audio(source)` (a folder or a JSONL/CSV manifest, what
    `data/make_shards.py` reads), its errors as `UserError`s."""
    from stable_audio_jax.input_pipeline.shard_writer import discover_audio

    try:
        return discover_audio(source)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None


def _audio_items(source: str) -> list:
    """The discovered items of `source`; `UserError` when there is none."""
    items = _discover(source)
    if not items:
        raise UserError(f"{source}: no audio files")
    return items


def audio_files(source: str) -> list[str]:
    """The audio files of `source`; `UserError` when there is none."""
    return [item.path for item in _audio_items(source)]


def embed_files(embedder: AudioEmbedder, paths: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """Every frame embedding of every file, stacked: `[total frames, dims]` float64."""
    from tqdm.auto import tqdm

    frames = []
    for path in tqdm(paths, desc=f"embedding ({embedder.name})", unit="file", disable=not progress):
        frames.append(np.asarray(embedder.embed_file(path), np.float64))
    return np.concatenate(frames)


def embedding_statistics(embedder: AudioEmbedder, source: str, *, progress: bool = False) -> GaussianStatistics:
    """The Gaussian of `source`'s frame embeddings (a folder or manifest)."""
    return GaussianStatistics.of(embed_files(embedder, audio_files(source), progress=progress))


def _save_reference(path: str, file_format: str, embedder: Any, source: str, **arrays: np.ndarray) -> None:
    """`arrays` of a reference set, with the embedder's name and fingerprint and the source, to an `.npz`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(
        path,
        **arrays,
        format=file_format,
        embedder=embedder.name,
        fingerprint=embedder.fingerprint,
        source=os.path.abspath(source),
    )


def _load_reference(path: str, file_format: str, embedder: Any, what: str) -> dict[str, np.ndarray]:
    """The arrays `_save_reference` wrote; `UserError` for another file or other weights."""
    try:
        with np.load(path, allow_pickle=False) as f:
            fields = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a {what} file ({e})") from None
    if str(fields.get("format", "")) != file_format:
        raise UserError(f"{path}: not a {what} file written by --save_stats")
    made_by = (str(fields["embedder"]), str(fields["fingerprint"]))
    if made_by != (embedder.name, embedder.fingerprint):
        raise UserError(
            f"{path} holds {what} of {made_by[0]} weights {made_by[1]}, but the embedder is "
            f"{embedder.name} weights {embedder.fingerprint}: embed the reference again"
        )
    return fields


def save_statistics(path: str, statistics: GaussianStatistics, embedder: AudioEmbedder, source: str) -> None:
    """Write `statistics` (with the embedder's name and fingerprint and the source) to an `.npz`."""
    _save_reference(path, STATISTICS_FORMAT, embedder, source, **statistics.to_arrays())


def load_statistics(path: str, embedder: AudioEmbedder) -> GaussianStatistics:
    """Statistics saved by `save_statistics`; `UserError` when they come from another embedder
    or other weights."""
    return GaussianStatistics.from_arrays(_load_reference(path, STATISTICS_FORMAT, embedder, "statistics"))


def frechet_report(
    embedder: AudioEmbedder, generated: str | Sequence[str], reference: GaussianStatistics, *, progress: bool = False
) -> dict:
    """FD of the generated set's frame embeddings to `reference`, with the counts and the embedder;
    `generated` is a folder or manifest, or the audio paths themselves."""
    paths = audio_files(generated) if isinstance(generated, str) else list(generated)
    statistics = GaussianStatistics.of(embed_files(embedder, paths, progress=progress))
    return {
        "fd": frechet_distance(statistics, reference),
        "generated_files": len(paths),
        "generated_frames": statistics.count,
        "reference_frames": reference.count,
        "embedder": embedder.name,
        "embedder_fingerprint": embedder.fingerprint,
        "dims": int(reference.mean.shape[0]),
    }


def captioned_clap_score(encoder: CLAPEncoder, source: str) -> dict:
    """CLAP score of `source`'s captioned files (`metrics/clap_score.py`), against every pair of
    a caption and another caption's file; files without a caption are counted and skipped."""
    from stable_audio_jax.metrics.clap_score import clap_score

    items = _discover(source)
    captioned = [item for item in items if item.caption]
    if len({item.caption for item in captioned}) < 2:
        raise UserError(f"{source}: the CLAP score needs files with at least two different captions")
    result = clap_score(
        encoder, [i.caption for i in captioned], [i.path for i in captioned], shuffled="other_prompts", recall_ks=(1,)
    )
    result.update(files=[i.rel_path for i in captioned], skipped_without_caption=len(items) - len(captioned))
    return result


LABELS_FORMAT = "stable-audio-jax label distributions v1"


def _clip_id(item) -> str:
    """What pairs a generated file with its reference: the relative path without extension
    (stable-audio-metrics pairs files by id = file name)."""
    return os.path.splitext(item.rel_path)[0]


def label_distributions(tagger: PaSSTTagger, source: str, *, progress: bool = False) -> dict[str, np.ndarray]:
    """`{clip id: label distribution}` of every audio file of `source` (a folder or manifest)."""
    from tqdm.auto import tqdm

    items = _audio_items(source)
    ids = [_clip_id(item) for item in items]
    if len(set(ids)) != len(ids):
        raise UserError(f"{source}: two files share a name without extension; KL pairs files by that name")
    return {
        clip: tagger.label_distribution(item.path)
        for clip, item in tqdm(
            list(zip(ids, items)), desc=f"tagging ({tagger.name})", unit="file", disable=not progress
        )
    }


def save_label_distributions(path: str, distributions: dict[str, np.ndarray], tagger: PaSSTTagger, source: str) -> None:
    """Write a reference's `{clip id: distribution}` (with the tagger's name and fingerprint) to an `.npz`."""
    ids, values = np.array(list(distributions)), np.stack(list(distributions.values()))
    _save_reference(path, LABELS_FORMAT, tagger, source, ids=ids, distributions=values)


def load_label_distributions(path: str, tagger: PaSSTTagger) -> dict[str, np.ndarray]:
    """Distributions saved by `save_label_distributions`; `UserError` when another tagger or
    other weights made them."""
    fields = _load_reference(path, LABELS_FORMAT, tagger, "label distributions")
    return {str(k): v for k, v in zip(fields["ids"], fields["distributions"])}


def kl_report(tagger: PaSSTTagger, generated: str, reference: dict[str, np.ndarray], *, progress: bool = False) -> dict:
    """Mean KL(generated || reference) over the generated files whose id has a reference clip
    (`metrics/label_divergence.py`), with the per-file values and the ids left unpaired."""
    from stable_audio_jax.metrics.label_divergence import kl_divergence

    produced = label_distributions(tagger, generated, progress=progress)
    paired = [clip for clip in produced if clip in reference]
    if not paired:
        raise UserError(
            f"{generated}: no file has a reference clip of the same name (KL pairs generated and reference "
            f"files by their relative path without extension, e.g. {next(iter(produced))!r})"
        )
    values = kl_divergence(np.stack([produced[c] for c in paired]), np.stack([reference[c] for c in paired]))
    return {
        "kl": float(values.mean()),
        "pairs": len(paired),
        "per_file": dict(zip(paired, map(float, values))),
        "generated_without_reference": sorted(set(produced) - set(paired)),
        "embedder": tagger.name,
        "embedder_fingerprint": tagger.fingerprint,
        "collect": tagger.collect,
    }
