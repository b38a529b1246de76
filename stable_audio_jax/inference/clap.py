"""A trained, frozen CLAP: text conditioning for the diffusion model and embeddings.

    encoder = CLAPEncoder.from_run("outputs/demo/clap")
    features, mask = encoder.text_conditioning(["lo-fi piano, 80 BPM", ""])
    # features [2, 77, hidden] (penultimate text layer), mask [2, 77] bool
    text = encoder.embed_text(prompts)             # [n, embed_dim], unit norm
    audio = encoder.embed_audio_file("x.wav")      # [embed_dim], unit norm
    laion = CLAPEncoder.from_laion_checkpoint("music_speech_audioset_epoch_15_esc_89.98.pt", "roberta-base/")

Every device function is jitted once per input shape and runs on a mesh: inputs are
split over the batch axes and the parameters placed by the logical rules (replicated on
a data-parallel mesh, split on `fsdp`/`tensor` ones), so the same code serves one CPU
and a pod slice. Batches are padded to a multiple of the batch axes' size and cut back.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.errors import UserError
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.clap import CLAP
from stable_audio_jax.models.htsat import FUSION_LOCAL_VIEWS, FusionViews, antialiased_resize_matrix, clip_log_mel
from stable_audio_jax.training.clap_task import clap_params, tokenizer_in_run
from stable_audio_jax.training.runs import load_run


def prepare_audio(audio: np.ndarray, sample_rate: int, target_sample_rate: int) -> np.ndarray:
    """The CLAP-score preprocessing of stable-audio-metrics' CLAP score: resample, peak-normalise to -1 dBFS,
    round-trip through int16. `[time, channels]` or `[time]` -> float32 `[time, channels]`."""
    from stable_audio_jax.input_pipeline.audio_io import peak_normalise, resample

    audio = np.asarray(audio, np.float32)
    audio = audio[:, None] if audio.ndim == 1 else audio
    audio = peak_normalise(resample(audio, sample_rate, target_sample_rate))
    return np.round(audio * 32767).astype(np.int16).astype(np.float32) / 32767


LONG_AUDIO = ("windows", "crop", "fusion")


class CLAPEncoder:
    """Frozen CLAP parameters, the tokenizer and jitted, mesh-sharded encoders.

    `long_audio` says how a clip becomes the tower's input: "windows" (the towers trained here:
    consecutive windows of the model's `num_samples`, embeddings averaged) or "crop" (LAION-CLAP
    without fusion, laion-clap's `get_audio_features(..., "rand_trunc", "repeatpad")`: the mono
    clip cut to `window_samples` at a uniform random offset, drawn from `crop_seed` so that a run
    repeats, or repeated `window_samples // length` times and zero-padded when shorter) or "fusion"
    (a LAION-CLAP fusion tower, `get_audio_features(..., "fusion", "repeatpad")`: a clip that fits
    the window is repeat-padded, a longer one becomes `FusionViews`, see `fusion_views`).
    """

    AUDIO_CHUNK = 16  # audio windows per device call

    def __init__(
        self,
        model: CLAP,
        params,
        tokenizer: TextTokenizer,
        mesh: jax.sharding.Mesh,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
        *,
        long_audio: str = "windows",
        window_samples: int | None = None,
        crop_seed: int = 0,
    ):
        if long_audio not in LONG_AUDIO:
            raise ValueError(f"long_audio must be one of {LONG_AUDIO}, got {long_audio!r}")
        self.model = model
        self.params = params
        self.tokenizer = tokenizer
        self.mesh = mesh
        self.rules = rules
        self.sample_rate = model.config.audio.sample_rate
        self.window_samples = window_samples or model.config.audio.num_samples
        self.long_audio = long_audio
        self._crops = np.random.default_rng(crop_seed)

    @classmethod
    def from_run(
        cls, run_dir: str, *, step: int | None = None, use_ema: bool = True, mesh: jax.sharding.Mesh | None = None
    ) -> "CLAPEncoder":
        """Load a CLAP run directory (written by `launch/train.py --config=configs/clap_*.py`)."""

        def use_run_tokenizer(config):
            if config.get("task") != "clap":
                raise ValueError(f"{run_dir} holds a {config.get('task')!r} run, not a CLAP run")
            config.text.tokenizer = tokenizer_in_run(os.path.abspath(run_dir)) or config.text.tokenizer

        run = load_run(run_dir, step=step, mesh=mesh, edit_config=use_run_tokenizer, ema_only=use_ema)
        return cls(run.task.model, clap_params(run.state, use_ema), run.task.tokenizer, run.mesh)

    @classmethod
    def from_laion_checkpoint(
        cls,
        checkpoint: str,
        roberta_dir: str,
        *,
        mesh: jax.sharding.Mesh | None = None,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
        crop_seed: int = 0,
    ) -> "CLAPEncoder":
        """A LAION-CLAP checkpoint (`convert/laion_clap_checkpoint.py`; fusion or not) and its
        RoBERTa folder, placed on `mesh` (default: every device on the data axis); `UserError`
        naming a missing file and where it comes from, or what does not fit."""
        from stable_audio_jax.convert import laion_clap_checkpoint as laion
        from stable_audio_jax.convert.state_dict import ConversionError

        if not os.path.isfile(checkpoint):
            raise UserError(
                f"LAION-CLAP checkpoint not found: {checkpoint} (630k-audioset-fusion-best.pt or "
                "music_speech_audioset_epoch_15_esc_89.98.pt from huggingface.co/lukewys/laion_clap; "
                "nothing is downloaded here)"
            )
        if not os.path.isfile(os.path.join(roberta_dir, "config.json")):
            raise UserError(
                f"RoBERTa folder without config.json: {roberta_dir} (LAION-CLAP's text branch needs "
                "huggingface.co/roberta-base's config.json, vocab.json and merges.txt)"
            )
        try:
            config, params, tokenizer = laion.load_laion_clap(checkpoint, roberta_dir)
        except (ConversionError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
        mesh = mesh or parallel.create_mesh((-1, 1, 1))
        shardings = parallel.logical_to_shardings(laion.abstract_params(config), mesh, rules)
        return cls(
            CLAP(config),
            jax.device_put(params, shardings),
            tokenizer,
            mesh,
            rules,
            long_audio="fusion" if config.audio.fusion else "crop",
            window_samples=laion.LAION_WINDOW_SAMPLES,
            crop_seed=crop_seed,
        )

    # ------------------------------------------------------------- helpers
    def _run(self, fn, *arrays: np.ndarray) -> np.ndarray | tuple:
        """`fn(params, *arrays)` jitted, the batch padded to the mesh and split over it."""
        return parallel.run_batch_on_mesh(fn, self.params, arrays, self.mesh, self.rules)

    def _jit(self, fn):
        """jit of `fn` traced under the logical axis rules (activation constraints resolve)."""
        return jax.jit(parallel.with_rules(fn, self.rules))

    @functools.cached_property
    def _text_features_fn(self):
        return self._jit(
            lambda p, ids, mask: (self.model.apply({"params": p}, ids, mask, method=CLAP.text_features), mask)
        )

    @functools.cached_property
    def _text_embedding_fn(self):
        return self._jit(lambda p, ids, mask: self.model.apply({"params": p}, ids, mask, method=CLAP.encode_text)[0])

    @functools.cached_property
    def _fusion_embedding_fn(self):
        def embed(p, global_mel, local_mels, fused):
            views = FusionViews(global_mel, local_mels, fused)
            return self.model.apply({"params": p}, views, method=CLAP.encode_audio)

        return self._jit(embed)

    @functools.cached_property
    def _clip_log_mel_fn(self):
        return jax.jit(lambda audio: clip_log_mel(audio, self.model.config.audio))

    @functools.cached_property
    def _audio_embedding_fn(self):
        return self._jit(lambda p, audio: self.model.apply({"params": p}, audio, method=CLAP.encode_audio))

    # ----------------------------------------------------------------- text
    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids int32 and mask bool, both `[batch, max_length]` (truncated, padded)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        return self.tokenizer(list(prompts))

    def text_conditioning(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        """Conditioning tokens for the diffusion model.

        Returns `(features [batch, max_length, hidden] float32, mask [batch, max_length]
        bool)`: the text tower's `feature_layer` hidden states (penultimate by default)
        and the tokenizer's padding mask, as arrays split over the mesh's batch axes.
        Empty prompts give the start/end tokens only; over-long ones are truncated.
        """
        return self._run(self._text_features_fn, *self.tokenize(prompts))

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        """Unit-norm text embeddings `[batch, embed_dim]`."""
        return np.asarray(self._run(self._text_embedding_fn, *self.tokenize(prompts)))

    # ---------------------------------------------------------------- audio
    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """Unit-norm embeddings `[batch, embed_dim]` of windows `[batch, window_samples, channels]`
        at `sample_rate`."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 3 or audio.shape[1] != self.window_samples or not len(audio):
            raise ValueError(f"expected audio [batch >= 1, {self.window_samples}, channels], got {audio.shape}")
        # Files give any number of windows: chunks of AUDIO_CHUNK, the last padded to a power of
        # two, keep the compiled shapes to a handful instead of one per window count.
        embeddings = []
        for start in range(0, len(audio), self.AUDIO_CHUNK):
            chunk = audio[start : start + self.AUDIO_CHUNK]
            size = min(self.AUDIO_CHUNK, 1 << (len(chunk) - 1).bit_length())
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            embeddings.append(np.asarray(self._run(self._audio_embedding_fn, padded))[: len(chunk)])
        return np.concatenate(embeddings)

    def crop_or_repeat(self, audio: np.ndarray, offset: int | None = None) -> np.ndarray:
        """LAION-CLAP's input rule for one mono clip `[time]` -> `[window_samples]`: a longer clip
        cut at `offset` (None: drawn uniformly from the encoder's seeded generator), a shorter one
        repeated `window_samples // time` times, then zero-padded."""
        window = self.window_samples
        if len(audio) > window:
            start = int(self._crops.integers(0, len(audio) - window + 1)) if offset is None else int(offset)
            return audio[start : start + window]
        repeated = np.tile(audio, window // len(audio))
        return np.pad(repeated, (0, window - len(repeated)))

    def fusion_views(self, audio: np.ndarray, starts: Sequence[int] | None = None) -> FusionViews:
        """laion-clap's fusion input of one mono clip `[time]`: `FusionViews` of one example,
        `global_mel [frames, n_mels]`, `local_mels [3, frames, n_mels]`, `fused` (a 0-d bool),
        `frames = window_samples // hop_length + 1`. `starts`: the local windows' first frames
        (None: drawn from the encoder's seeded generator, one per third of the possible starts)."""
        if len(audio) <= self.window_samples:
            audio = self.crop_or_repeat(audio)
        mel = np.asarray(self._clip_log_mel_fn(np.asarray(audio, np.float32)[None]))[0]
        frames = self.window_samples // self.model.config.audio.hop_length + 1
        if len(mel) == frames:  # it fits one window (laion-clap: the same mel four times, not fused)
            return FusionViews(mel, np.stack([mel] * FUSION_LOCAL_VIEWS), np.array(False))
        thirds = [r if len(r) else np.array([0]) for r in np.array_split(np.arange(len(mel) - frames + 1), 3)]
        starts = [int(self._crops.choice(r)) for r in thirds] if starts is None else [int(s) for s in starts]
        local = np.stack([mel[s : s + frames] for s in starts])
        shrunk = antialiased_resize_matrix(len(mel), frames) @ mel
        return FusionViews(shrunk.astype(np.float32), local, np.array(True))

    def embed_fusion_views(self, views: FusionViews) -> np.ndarray:
        """Unit-norm embeddings `[batch, embed_dim]` of batched `FusionViews` (see `fusion_views`)."""
        return np.asarray(self._run(self._fusion_embedding_fn, *(np.asarray(v) for v in views)))

    def embed_long_audio(self, audio: np.ndarray) -> np.ndarray:
        """Unit-norm embedding `[embed_dim]` of one clip `[time, channels]` of any length.

        With `long_audio="windows"`, a clip shorter than the tower's window is zero-padded (as
        training crops are); a longer one is cut into consecutive windows (the last one padded)
        whose embeddings are averaged and re-normalised. This stands in for LAION-CLAP's
        "fusion" of a global down-sampled view with local crops, which our towers do not have.
        With "crop", the channels are averaged and `crop_or_repeat` makes the one window; with
        "fusion", `fusion_views` makes the tower's input.
        """
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or not len(audio):
            raise ValueError(f"expected one non-empty clip [time, channels], got shape {audio.shape}")
        if self.long_audio == "fusion":
            views = self.fusion_views(audio.mean(axis=1))
            return self.embed_fusion_views(FusionViews(*(np.asarray(v)[None] for v in views)))[0]
        if self.long_audio == "crop":
            window = self.crop_or_repeat(audio.mean(axis=1))
            return self.embed_audio(window[None, :, None])[0]
        num_windows = max(1, -(-len(audio) // self.window_samples))
        padded = np.zeros((num_windows * self.window_samples, audio.shape[1]), np.float32)
        padded[: len(audio)] = audio
        windows = padded.reshape(num_windows, self.window_samples, audio.shape[1])
        mean = self.embed_audio(windows).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def embed_audio_file(self, path: str) -> np.ndarray:
        """Unit-norm embedding `[embed_dim]` of an audio file, with the CLAP-score preprocessing."""
        from stable_audio_jax.input_pipeline.audio_io import decode_audio

        if not os.path.exists(path):
            raise FileNotFoundError(f"audio file not found: {path}")
        audio, sample_rate = decode_audio(path)
        if self.long_audio != "windows":  # stable-audio-metrics loads LAION-CLAP's input as mono
            audio = np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=1)
        return self.embed_long_audio(prepare_audio(audio, sample_rate, self.sample_rate))
