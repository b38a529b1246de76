"""Generate audio from text prompts with a trained diffusion model (and its VAE and text encoder).

    python launch/sample.py --diffusion_dir=outputs/demo/diffusion --prompt="drum groove, 120 BPM" \
        --seconds_total=3 --output_dir=outputs/samples
    python launch/sample.py --diffusion_dir=... --prompts_file=prompts.txt --steps=100 --cfg_scale=6 \
        --sampler=dpmpp_3m_sde --negative_prompt="noise" --batch_size=4 --seed=1
    # a converted Stable Audio Open (launch/convert_sao.py): DiT, T5 and VAE in one directory
    python launch/sample.py --pretrained=pretrained/sao --prompt="128 BPM tech house drum loop" --seconds_total=10
    # a run fine-tuned from it (config.init_from): the run's DiT with the directory's T5 and VAE
    python launch/sample.py --pretrained=pretrained/sao --diffusion_dir=runs/sao_finetune --prompt="..."
    # LoRA runs trained on it, merged at their scales (0: the base model exactly)
    python launch/sample.py --pretrained=pretrained/sao --lora=runs/sao_lora:0.8 --lora=runs/other:0.5 --prompt="..."

Sampling settings left unset take the model's defaults (its config's `sampling` section:
for SAO 100 steps of dpmpp_3m_sde, CFG 7, sigma 0.3..500; for a converted SA 1.0, 100 steps
of dpmpp_2m_sde, CFG 6 with rescale 0.4, sigma 0.01..100). A batch is split over all local
devices.

Writes, per prompt, `<i>_<slug>.wav` (44.1 kHz stereo, cut to --seconds_total), a spectrogram
`<i>_<slug>.png`, the prompt as `<i>_<slug>.txt` (so `launch/clap_score.py --input=<dir>` can
score the folder), and `settings.json`. With --init_audio the sampler starts from that
audio's latents plus noise at --init_noise_level (audio-to-audio). With --inpaint_audio and
one or more --inpaint_region=start:end (seconds) only those regions are regenerated; the
rest of the clip keeps its own latents (`diffusion/inpainting.py`):

    python launch/sample.py --pretrained=pretrained/sao --inpaint_audio=loop.wav \
        --inpaint_region=4:8 --prompt="drum fill" --seconds_total=12

With --continue_audio the clip is continued to --seconds_total, which may be longer than the
model's window (`inference/continuation.py`: each window keeps the last --continue_context
seconds and inpaints the rest):

    python launch/sample.py --pretrained=pretrained/sao --continue_audio=intro.wav \
        --prompt="ambient techno, 120 BPM" --seconds_total=180
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags, logging  # noqa: E402

from stable_audio_jax import cli, generator_flags  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A text prompt (repeatable).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A text file with one prompt per line.")
_SECONDS_TOTAL = flags.DEFINE_float("seconds_total", None, "Length to generate (default: the model's window).")
_SECONDS_START = flags.DEFINE_float("seconds_start", 0.0, "Timing conditioning: where the clip starts.")
_WINDOW_SECONDS = flags.DEFINE_float(
    "window_seconds",
    None,
    "Generate a shorter (or longer) window than the "
    "model's (DiT only: it has no absolute positions); default: the model's.",
)
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the model's, 100).", lower_bound=1)
_CFG_SCALE = flags.DEFINE_float(
    "cfg_scale", None, "Classifier-free guidance scale, 1: off (default: the model's).", lower_bound=0.0
)
_RESCALE_PHI = flags.DEFINE_float(
    "rescale_phi", None, "CFG rescale amount in [0, 1] (default: the model's).", lower_bound=0.0, upper_bound=1.0
)
_SAMPLER = flags.DEFINE_string(
    "sampler",
    None,
    "For v-objective models: dpmpp_3m_sde, dpmpp_2m_sde, dpmpp_2m, "
    "euler, ddim, heun, lms, dpm_2, dpm_fast, euler_ancestral, dpm_2_ancestral or "
    "dpmpp_2s_ancestral, or stable-audio-tools' spelling (k-heun, k-dpm-fast, v-ddim, ...); "
    "for rectified-flow models: euler, rk4, dpmpp or pingpong (default: the model's).",
)
_SIGMA_MIN = flags.DEFINE_float("sigma_min", None, "Smallest noise level of the schedule (default: the model's).")
_SIGMA_MAX = flags.DEFINE_float(
    "sigma_max",
    None,
    "Largest noise level of the schedule; in (0, 1] for a rectified-flow model (default: the model's).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed (each batch adds its index).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Prompts generated together.", lower_bound=1)
_NEGATIVE = flags.DEFINE_string("negative_prompt", None, "Negative prompt for the unconditional branch.")
_INIT_AUDIO = flags.DEFINE_string("init_audio", None, "Audio file to start from (audio-to-audio).")
_INIT_NOISE = flags.DEFINE_float("init_noise_level", 1.0, "Noise level added to --init_audio.", lower_bound=0.0)
_INPAINT_AUDIO = flags.DEFINE_string("inpaint_audio", None, "Audio file to edit (with --inpaint_region).")
_INPAINT_REGION = flags.DEFINE_multi_string(
    "inpaint_region", [], "start:end in seconds of --inpaint_audio to regenerate (repeatable; overlaps merge)."
)
_INPAINT_CROSSFADE = flags.DEFINE_float(
    "inpaint_crossfade", 0.1, "Seconds blended inside each region's edges.", lower_bound=0.0
)
_CONTINUE_AUDIO = flags.DEFINE_string(
    "continue_audio", None, "Audio file to continue to --seconds_total (which may pass the window)."
)
_CONTINUE_CONTEXT = flags.DEFINE_float(
    "continue_context", None, "Seconds of the audio so far each window keeps (default: half the window)."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "samples", "Where the files are written.")
# Lengths must be positive: 0 would otherwise mean "the model's default".
for _name in ("seconds_total", "window_seconds"):
    flags.register_validator(_name, lambda value: value is None or value > 0, message="must be > 0")
flags.adopt_module_key_flags(generator_flags)  # --help lists the model flags too


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "empty"


def _prompts() -> list[str]:
    prompts = list(_PROMPT.value)
    if _PROMPTS_FILE.value:
        if not os.path.isfile(_PROMPTS_FILE.value):
            raise UserError(f"--prompts_file={_PROMPTS_FILE.value}: no such file")
        with open(_PROMPTS_FILE.value) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise UserError("give at least one --prompt or a --prompts_file")
    return prompts


def _check_inputs() -> list[str]:
    """The checks that need no model, so bad input fails before anything loads; the prompts."""
    prompts = _prompts()
    generator_flags.check_model_flags()
    if _INIT_AUDIO.value and not os.path.isfile(_INIT_AUDIO.value):
        raise UserError(f"--init_audio={_INIT_AUDIO.value}: no such file")
    if bool(_INPAINT_AUDIO.value) != bool(_INPAINT_REGION.value):
        raise UserError("--inpaint_audio and --inpaint_region go together")
    if _INPAINT_AUDIO.value and _INIT_AUDIO.value:
        raise UserError("--init_audio (audio-to-audio) and --inpaint_audio cannot be combined")
    if _INPAINT_AUDIO.value and not os.path.isfile(_INPAINT_AUDIO.value):
        raise UserError(f"--inpaint_audio={_INPAINT_AUDIO.value}: no such file")
    if _CONTINUE_AUDIO.value and (_INPAINT_AUDIO.value or _INIT_AUDIO.value):
        raise UserError("--continue_audio does not go with --init_audio or --inpaint_audio")
    if _CONTINUE_AUDIO.value and not os.path.isfile(_CONTINUE_AUDIO.value):
        raise UserError(f"--continue_audio={_CONTINUE_AUDIO.value}: no such file")
    if _CONTINUE_AUDIO.value and _SECONDS_TOTAL.value is None:
        raise UserError("--continue_audio needs --seconds_total, the length to continue to")
    _inpaint_regions()
    cli.check_output_dir(_OUTPUT_DIR.value, "--output_dir")
    generator_flags.check_model_runs()
    return prompts


def _inpaint_regions() -> list[tuple[float, float]]:
    """--inpaint_region values as (start, end) seconds; their range is checked against the audio."""
    regions = []
    for value in _INPAINT_REGION.value:
        try:
            start, end = (float(v) for v in value.split(":"))
        except ValueError:
            raise UserError(f"--inpaint_region={value}: expected start:end in seconds, e.g. 4.0:8.0") from None
        regions.append((start, end))
    return regions


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    prompts = _check_inputs()
    from stable_audio_jax.diffusion.inpainting import check_regions
    from stable_audio_jax.diffusion.sampling_config import SamplingConfig, check_known_sampler
    from stable_audio_jax.inference.continuation import check_continuation
    from stable_audio_jax.inference.generate import spectrogram_png
    from stable_audio_jax.input_pipeline.audio_io import decode_stereo, write_wav

    try:
        if _SAMPLER.value is not None:  # a name no model knows fails before any loading
            check_known_sampler(_SAMPLER.value)
        generator = generator_flags.load_generator()
        settings = {
            name: generator.sampling[name] if flag.value is None else flag.value
            for name, flag in (
                ("steps", _STEPS),
                ("cfg_scale", _CFG_SCALE),
                ("rescale_phi", _RESCALE_PHI),
                ("sampler", _SAMPLER),
                ("sigma_min", _SIGMA_MIN),
                ("sigma_max", _SIGMA_MAX),
            )
        }
        # Checked against the model's objective: a v-sampler on a flow model (or the reverse),
        # or a flow model's sigma_max above 1, is one line.
        settings = SamplingConfig.from_dict(settings, objective=generator.objective).to_dict()
        if _WINDOW_SECONDS.value is not None and generator.model.config.backbone != "dit":
            raise ValueError("--window_seconds needs a DiT model; a U-Net generates the window it was trained on")
        window_seconds = _WINDOW_SECONDS.value or generator.window_seconds
        seconds_total = window_seconds if _SECONDS_TOTAL.value is None else _SECONDS_TOTAL.value
        if not _CONTINUE_AUDIO.value and not 0 < seconds_total <= window_seconds + 1e-6:
            raise ValueError(
                f"--seconds_total={seconds_total} is outside (0, {window_seconds:.2f}], "
                "the window" + ("" if _WINDOW_SECONDS.value else " the model was trained on")
            )
        init_audio = inpaint_audio = None
        if _INIT_AUDIO.value:
            init_audio = decode_stereo(_INIT_AUDIO.value, generator.sample_rate)
        if _INPAINT_AUDIO.value:  # any rate or channel count, converted as the data pipeline does
            inpaint_audio = decode_stereo(_INPAINT_AUDIO.value, generator.sample_rate)
            # Checked before anything is written: the regions must lie in the audio (and window).
            check_regions(_inpaint_regions(), min(len(inpaint_audio), generator.window_samples) / generator.sample_rate)
        continue_audio = None
        if _CONTINUE_AUDIO.value:
            continue_audio = decode_stereo(_CONTINUE_AUDIO.value, generator.sample_rate)
            check_continuation(
                len(continue_audio),
                seconds_total,
                _CONTINUE_CONTEXT.value,
                generator.sample_rate,
                generator.window_samples,
            )
    except (FileNotFoundError, ValueError) as e:  # a run directory or a setting the model rejects
        raise UserError(str(e)) from None

    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    settings = {
        **generator_flags.model_dirs(),
        "prompts": prompts,
        "seconds_total": seconds_total,
        "seconds_start": _SECONDS_START.value,
        "window_seconds": window_seconds,
        **settings,
        "seed": _SEED.value,
        "negative_prompt": _NEGATIVE.value,
        "init_audio": _INIT_AUDIO.value,
        "init_noise_level": _INIT_NOISE.value,
        "inpaint_audio": _INPAINT_AUDIO.value,
        "inpaint_regions": _inpaint_regions(),
        "inpaint_crossfade": _INPAINT_CROSSFADE.value,
        "continue_audio": _CONTINUE_AUDIO.value,
        "continue_context": _CONTINUE_CONTEXT.value,
        "sample_rate": generator.sample_rate,
        "files": [],
    }
    start = time.time()
    sampler_settings = {
        k: settings[k] for k in ("steps", "cfg_scale", "sampler", "rescale_phi", "sigma_min", "sigma_max")
    }
    for first in range(0, len(prompts), _BATCH_SIZE.value):
        chunk = prompts[first : first + _BATCH_SIZE.value]
        if continue_audio is not None:  # one prompt at a time, window after window
            audio = [
                generator.continue_audio(
                    prompt,
                    continue_audio,
                    seconds_total=seconds_total,
                    context_seconds=_CONTINUE_CONTEXT.value,
                    seed=_SEED.value + first + i,
                    negative_prompt=_NEGATIVE.value,
                    inpaint_crossfade=_INPAINT_CROSSFADE.value,
                    progress=True,
                    **sampler_settings,
                )
                for i, prompt in enumerate(chunk)
            ]
        else:
            audio = generator.generate(
                chunk,
                seconds_total=seconds_total,
                seconds_start=_SECONDS_START.value,
                seed=_SEED.value + first,
                negative_prompt=_NEGATIVE.value,
                init_audio=init_audio,
                init_noise_level=_INIT_NOISE.value,
                inpaint_audio=inpaint_audio,
                inpaint_regions=_inpaint_regions() or None,
                inpaint_crossfade=_INPAINT_CROSSFADE.value,
                window_seconds=_WINDOW_SECONDS.value,
                progress=True,
                **sampler_settings,
            )
        for i, (prompt, clip) in enumerate(zip(chunk, audio)):
            name = f"{first + i:03d}_{_slug(prompt)}"
            write_wav(os.path.join(_OUTPUT_DIR.value, name + ".wav"), clip, generator.sample_rate)
            png = os.path.join(_OUTPUT_DIR.value, name + ".png")
            spectrogram_png(clip, generator.sample_rate, png, prompt, regions=settings["inpaint_regions"])
            with open(os.path.join(_OUTPUT_DIR.value, name + ".txt"), "w") as f:
                f.write(prompt + "\n")
            settings["files"].append(name + ".wav")
    settings["seconds"] = round(time.time() - start, 2)
    with open(os.path.join(_OUTPUT_DIR.value, "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
    print(f"wrote {len(settings['files'])} clips to {_OUTPUT_DIR.value} in {settings['seconds']:.1f} s")


if __name__ == "__main__":
    cli.run(main)
