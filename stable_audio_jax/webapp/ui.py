"""The Gradio page over a `GenerationService` (`launch/app.py` starts it).

Prompt, negative prompt, duration, steps, sampler (the model's list), CFG scale, seed (-1:
random), batch size, and an "edit audio" section (audio-to-audio with a noise level,
inpainting a region, continuation) go to `GenerationService.check`; its `FormError`s and any
other `UserError`/`ValueError` are shown in the status line, never as a traceback. Results:
one audio player per clip, the spectrograms, the files to download and the settings used.
The sampler's steps drive the page's progress bar. Nothing is fetched from the
internet: analytics are off (set before Gradio is imported) and the theme uses system fonts
instead of Google Fonts.
"""

from __future__ import annotations

import contextvars
import os
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from stable_audio_jax.errors import UserError  # noqa: E402
from stable_audio_jax.webapp.service import MAX_BATCH, MODES, GenerationService  # noqa: E402

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


def theme() -> gr.themes.Base:
    """The default look with local fonts only (the stock themes load theirs from Google Fonts)."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def _describe(service: GenerationService) -> str:
    d = service.defaults
    source = ", ".join(f"{k}: `{v}`" for k, v in service.model_dirs.items()) or "a loaded model"
    return (
        f"**stable-audio-jax**: {source}. Objective `{d['objective']}`, window {d['max_seconds']:.2f} s at "
        f"{d['sample_rate']} Hz; defaults {d['steps']} steps of `{d['sampler']}`, CFG {d['cfg_scale']:g}."
    )


def build_app(service: GenerationService) -> gr.Blocks:
    """The page; `launch(app, ...)` serves it."""
    d = service.defaults
    with gr.Blocks(title="stable-audio-jax", analytics_enabled=False) as app:
        gr.Markdown(_describe(service))
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt (empty: unconditional)", lines=2, elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", elem_id="negative_prompt")
                with gr.Row():
                    seconds = gr.Number(
                        value=d["seconds_total"],
                        label=f"Duration, s (up to {d['max_seconds']:.2f})",
                        elem_id="duration",
                    )
                    steps = gr.Number(value=d["steps"], label="Steps", precision=0, elem_id="steps")
                    sampler = gr.Dropdown(
                        list(service.samplers), value=d["sampler"], label="Sampler", elem_id="sampler"
                    )
                with gr.Row():
                    cfg = gr.Number(value=d["cfg_scale"], label="CFG scale (1: no guidance)", elem_id="cfg_scale")
                    seed = gr.Number(value=-1, label="Seed (-1: random)", precision=0, elem_id="seed")
                    batch = gr.Slider(1, MAX_BATCH, value=1, step=1, label="Batch size", elem_id="batch_size")
                with gr.Accordion("Edit audio: audio-to-audio, inpainting, continuation", open=False):
                    mode = gr.Radio(list(MODES), value="generate", label="Mode", elem_id="mode")
                    upload = gr.File(label="Audio to start from or edit", type="filepath", elem_id="audio_upload")
                    with gr.Row():
                        noise = gr.Number(value=1.0, label="Noise level (audio-to-audio)", elem_id="noise_level")
                        start = gr.Number(value=0.0, label="Region start, s (inpaint)", elem_id="region_start")
                        end = gr.Number(value=0.0, label="Region end, s (inpaint)", elem_id="region_end")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=4):
                status = gr.Markdown("Ready.", elem_id="status")
                players = [
                    gr.Audio(label=f"Clip {i + 1}", type="filepath", visible=False, elem_id=f"clip_{i}")
                    for i in range(MAX_BATCH)
                ]
                images = gr.Gallery(
                    label="Spectrograms", columns=2, height="auto", object_fit="contain", elem_id="spectrograms"
                )
                files = gr.File(label="Download", file_count="multiple", elem_id="downloads")
                settings = gr.JSON(label="Settings used", elem_id="settings")

        def generate(*values: Any, progress=gr.Progress()):  # noqa: B008 (how Gradio injects it)
            names = (
                "prompt",
                "negative_prompt",
                "seconds_total",
                "steps",
                "sampler",
                "cfg_scale",
                "seed",
                "batch_size",
            )
            form = dict(zip(names, values[: len(names)]))
            form.update(
                zip(("mode", "audio_path", "init_noise_level", "region_start", "region_end"), values[len(names) :])
            )
            hidden = [gr.update(value=None, visible=False)] * MAX_BATCH
            # The sampler reports its steps from XLA's callback thread; Gradio finds the request's
            # progress bar through context variables, so each report runs in this request's context.
            context = contextvars.copy_context()

            def steps(done: int, total: int) -> None:
                context.run(progress, (done, total), desc="sampling", unit="steps")

            try:
                result = service.run(service.check(**form), progress=steps)
            except (UserError, ValueError) as e:
                return [f"**Error:** {e}", *hidden, [], None, None]
            shown = [gr.update(value=p, visible=True) for p in result.audio_paths]
            message = " ".join(
                [f"Generated {len(result.audio_paths)} clip(s) in {result.settings['seconds']:.1f} s "
                 f"(seed {result.settings['seed']})."] + result.notes
            )  # fmt: skip
            downloads = result.audio_paths + [result.settings_path]
            return [message, *shown, *hidden[len(shown) :], result.spectrogram_paths, downloads, result.settings]

        button.click(
            generate,
            [prompt, negative, seconds, steps, sampler, cfg, seed, batch, mode, upload, noise, start, end],
            [status, *players, images, files, settings],
        )
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve `app` with a request queue (one generation at a time), local assets only."""
    app.queue(default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        theme=theme(),
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=False,
        quiet=True,
    )
