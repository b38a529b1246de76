"""What the web app runs, without the web: form values checked into a request, one generation
at a time on the loaded model, each request's files in a folder of its own.

    service = GenerationService(AudioGenerator.from_pretrained("pretrained/sao"), "outputs/app")
    request = service.check(prompt="lo-fi piano", seconds_total=6, steps=8)   # FormError on bad input
    result = service.run(request)          # result.audio_paths, result.spectrogram_paths, result.settings

`check` turns every problem a user can cause into a `FormError` whose message the page shows
(an empty prompt is allowed: it generates unconditionally, and the result says so). `run`
holds a lock: the model, its compiled programs and the sampler's progress bar are shared, so
requests run one after another, and each writes into `<output_dir>/<time>-<id>/`, so two
users never see or overwrite each other's files. The jitted sampler compiles once per shape
(batch size, steps, sampler, guidance on or off, edit mode); `result.first_compile` says when
a request paid for that.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import threading
import time
from typing import Any, Callable

import numpy as np

from stable_audio_jax.diffusion.sampling_config import SamplingConfig, is_flow, sampler_names
from stable_audio_jax.errors import UserError

MODES = ("generate", "audio-to-audio", "inpaint", "continue")
MAX_BATCH = 8
MAX_SEED = 2**31 - 1


class FormError(UserError):
    """Bad input from the page: the message is shown to the user."""


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """A checked form. `audio` is the uploaded clip `[samples, 2]` at the model's rate for the
    edit modes (None for "generate"); `region` the inpainted `(start, end)` seconds."""

    mode: str
    prompt: str
    negative_prompt: str | None
    seconds_total: float
    sampling: dict[str, Any]  # steps, sampler, cfg_scale (+ the model's other defaults)
    seed: int
    batch_size: int
    audio: np.ndarray | None = None
    audio_name: str | None = None
    init_noise_level: float = 1.0
    region: tuple[float, float] | None = None

    @property
    def compile_key(self) -> tuple:
        """What makes the jitted sampler compile anew (its static arguments and shapes)."""
        s = self.sampling
        return (self.mode, self.batch_size, int(s["steps"]), s["sampler"], float(s["cfg_scale"]) != 1.0)


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    folder: str
    audio_paths: list[str]
    spectrogram_paths: list[str]
    settings: dict[str, Any]
    settings_path: str
    first_compile: bool
    notes: list[str]


def _number(value: Any, name: str, kind: type = float) -> float:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise FormError(f"{name}: expected a number, got {value!r}") from None
    if kind is float and not np.isfinite(number):
        raise FormError(f"{name}: expected a finite number, got {value!r}")
    return number


class GenerationService:
    """A loaded `AudioGenerator` behind a lock, writing each request under `output_dir`."""

    def __init__(self, generator: Any, output_dir: str, *, model_dirs: dict[str, Any] | None = None):
        self.generator = generator
        self.output_dir = os.path.abspath(output_dir)
        self.model_dirs = dict(model_dirs or {})
        self._lock = threading.Lock()
        self._compiled: set[tuple] = set()

    # ------------------------------------------------------------------ what the page offers
    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers of this model's objective (a v-model's or a rectified flow's)."""
        return sampler_names(self.generator.objective)

    @property
    def defaults(self) -> dict[str, Any]:
        s = self.generator.sampling
        return {
            "steps": int(s["steps"]),
            "sampler": s["sampler"],
            "cfg_scale": float(s["cfg_scale"]),
            # Two decimals on the page, never past the window.
            "seconds_total": math.floor(self.generator.window_seconds * 100) / 100,
            "max_seconds": self.generator.window_seconds,
            "objective": self.generator.objective,
            "sample_rate": self.generator.sample_rate,
        }

    # ---------------------------------------------------------------------------- checking
    def _read_audio(self, path: str | None, mode: str) -> np.ndarray:
        from stable_audio_jax.input_pipeline.audio_io import decode_stereo

        if not path:
            raise FormError(f"mode {mode!r} needs an audio file: upload the clip to start from or to edit")
        try:
            return decode_stereo(path, self.generator.sample_rate)
        except Exception:  # soundfile / the decoder: anything that is not readable audio
            raise FormError(
                f"{os.path.basename(path)}: not an audio file this app can read (WAV, FLAC, MP3, OGG)"
            ) from None

    def check(self, **form: Any) -> GenerationRequest:
        """The form's values (`_check`'s keywords) as a request; `FormError` with a message for
        the page otherwise, also for what the library's own checks refuse. None takes the
        model's default; seed -1 draws one."""
        try:
            return self._check(**form)
        except FormError:
            raise
        except (UserError, ValueError) as e:
            raise FormError(str(e)) from None

    def _check(
        self,
        *,
        prompt: str | None = "",
        negative_prompt: str | None = "",
        seconds_total: Any = None,
        steps: Any = None,
        sampler: str | None = None,
        cfg_scale: Any = None,
        seed: Any = 0,
        batch_size: Any = 1,
        mode: str = "generate",
        audio_path: str | None = None,
        init_noise_level: Any = 1.0,
        region_start: Any = 0.0,
        region_end: Any = 0.0,
    ) -> GenerationRequest:
        if mode not in MODES:
            raise FormError(f"mode: one of {list(MODES)}, got {mode!r}")
        defaults = self.defaults
        seconds = defaults["seconds_total"] if seconds_total in (None, "") else _number(seconds_total, "duration")
        window = self.generator.window_seconds
        if mode != "continue" and not 0 < seconds <= window + 1e-6:
            raise FormError(f"duration {seconds:g} s is outside (0, {window:.2f}] s, the window this model generates")
        steps_value = defaults["steps"] if steps in (None, "") else _number(steps, "steps", float)
        if steps_value < 1 or steps_value != int(steps_value):
            raise FormError(f"steps must be a whole number >= 1, got {steps_value:g}")
        batch = _number(batch_size, "batch size", float)
        if not 1 <= batch <= MAX_BATCH or batch != int(batch):
            raise FormError(f"batch size must be a whole number from 1 to {MAX_BATCH}, got {batch:g}")
        seed_value = int(_number(seed, "seed", float))
        if seed_value == -1:
            seed_value = secrets.randbelow(MAX_SEED)
        if not 0 <= seed_value <= MAX_SEED:
            raise FormError(f"seed must be from 0 to {MAX_SEED}, or -1 for a random one; got {seed_value}")
        settings = {
            **self.generator.sampling,
            "steps": int(steps_value),
            "sampler": sampler or defaults["sampler"],
            "cfg_scale": defaults["cfg_scale"] if cfg_scale in (None, "") else _number(cfg_scale, "CFG scale"),
        }
        # The sampler list and ranges follow the model's objective.
        settings = SamplingConfig.from_dict(settings, objective=self.generator.objective).to_dict()
        request = dict(
            mode=mode,
            prompt=(prompt or "").strip(),
            negative_prompt=(negative_prompt or "").strip() or None,
            seconds_total=float(seconds),
            sampling=settings,
            seed=seed_value,
            batch_size=int(batch),
        )
        if mode == "generate":
            return GenerationRequest(**request)
        audio = self._read_audio(audio_path, mode)
        request.update(audio=audio, audio_name=os.path.basename(audio_path))
        audio_seconds = len(audio) / self.generator.sample_rate
        if mode == "audio-to-audio":
            level = _number(init_noise_level, "noise level")
            if level <= 0 or (is_flow(self.generator.objective) and level > 1):
                raise FormError(f"noise level must be > 0 (and at most 1 for a rectified-flow model), got {level:g}")
            request.update(init_noise_level=level)
        elif mode == "inpaint":
            from stable_audio_jax.diffusion.inpainting import check_regions

            region = (_number(region_start, "region start"), _number(region_end, "region end"))
            check_regions([region], min(audio_seconds, window))
            request.update(region=region)
        else:  # continue
            from stable_audio_jax.inference.continuation import check_continuation

            rate = self.generator.sample_rate
            check_continuation(len(audio), seconds, None, rate, self.generator.window_samples)
        return GenerationRequest(**request)

    # ----------------------------------------------------------------------------- running
    def run(self, request: GenerationRequest, *, progress: bool | Callable[[int, int], Any] = True) -> GenerationResult:
        """Generate `request.batch_size` clips (one request at a time) and write them, their
        spectrograms and `settings.json` into a new folder. `progress`: a tqdm bar over the
        sampler steps, or a function `(done, total)` called at each step (the page's bar)."""
        from stable_audio_jax.inference.generate import spectrogram_png
        from stable_audio_jax.input_pipeline.audio_io import write_wav

        g = request.sampling
        sampler_settings = {k: g[k] for k in ("steps", "cfg_scale", "sampler", "rescale_phi", "sigma_min", "sigma_max")}
        with self._lock:
            first_compile = request.compile_key not in self._compiled
            start = time.time()
            prompts = [request.prompt] * request.batch_size
            common = dict(seed=request.seed, negative_prompt=request.negative_prompt, progress=progress)
            if request.mode == "continue":  # window after window, one clip at a time (seeds seed, seed + 1, ...)
                clips = []
                for i in range(request.batch_size):
                    common["seed"] = request.seed + i
                    clips.append(
                        self.generator.continue_audio(
                            request.prompt,
                            request.audio,
                            seconds_total=request.seconds_total,
                            **common,
                            **sampler_settings,
                        )
                    )
            else:
                clips = self.generator.generate(
                    prompts,
                    seconds_total=request.seconds_total,
                    init_audio=request.audio if request.mode == "audio-to-audio" else None,
                    init_noise_level=request.init_noise_level,
                    inpaint_audio=request.audio if request.mode == "inpaint" else None,
                    inpaint_regions=[request.region] if request.region else None,
                    **common,
                    **sampler_settings,
                )
            seconds = time.time() - start
            self._compiled.add(request.compile_key)
        folder = os.path.join(self.output_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}")
        os.makedirs(folder)
        rate = self.generator.sample_rate
        regions = [request.region] if request.region else []
        audio_paths, png_paths = [], []
        title = request.prompt or "(no prompt: unconditional)"
        for i, clip in enumerate(clips):
            path = os.path.join(
                folder, f"{i:02d}_seed{request.seed + i if request.mode == 'continue' else request.seed}.wav"
            )
            write_wav(path, np.asarray(clip, np.float32), rate)
            spectrogram_png(np.asarray(clip, np.float32), rate, path[:-4] + ".png", title[:60], regions=regions)
            audio_paths.append(path)
            png_paths.append(path[:-4] + ".png")
        notes = []
        if not request.prompt:
            notes.append("The prompt was empty: the clips are unconditional (no text conditioning).")
        if first_compile:
            notes.append(
                "The first request with this batch size, step count, sampler and guidance compiled the "
                "sampler, which takes longer; later requests with the same settings reuse it."
            )
        settings = {
            **self.model_dirs,
            "mode": request.mode,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seconds_total": request.seconds_total,
            **sampler_settings,
            "seed": request.seed,
            "batch_size": request.batch_size,
            "audio": request.audio_name,
            "init_noise_level": request.init_noise_level if request.mode == "audio-to-audio" else None,
            "region": list(request.region) if request.region else None,
            "sample_rate": rate,
            "seconds": round(seconds, 2),
            "files": [os.path.basename(p) for p in audio_paths],
        }
        settings_path = os.path.join(folder, "settings.json")
        with open(settings_path, "w") as f:
            json.dump(settings, f, indent=2)
        return GenerationResult(folder, audio_paths, png_paths, settings, settings_path, first_compile, notes)
