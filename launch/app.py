"""A web page for generation (Gradio), on localhost by default:

    pip install -e ".[app]"
    python launch/app.py --pretrained=pretrained/sao            # or --diffusion_dir=outputs/demo/diffusion
    python launch/app.py --pretrained=pretrained/sao --lora=runs/sao_lora:0.8 --host=0.0.0.0 --port=7860

The model loads (and is placed on the devices) once at start; each new combination of batch
size, steps, sampler and guidance compiles the sampler once, the page says so, and later
requests reuse it. Requests queue and run one at a time; every request writes its clips,
spectrograms and settings.json into its own folder under --output_dir. Nothing is fetched
from the internet (Gradio's analytics are off, fonts are local).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from absl import flags, logging  # noqa: E402

from stable_audio_jax import cli, generator_flags  # noqa: E402
from stable_audio_jax.errors import UserError  # noqa: E402

_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: every interface).")
_PORT = flags.DEFINE_integer("port", 7860, "Port to serve on.", lower_bound=1, upper_bound=65535)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "outputs/app", "Where each request's folder is written.")
flags.adopt_module_key_flags(generator_flags)  # --help lists the model flags too


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    generator_flags.check_model_flags()
    cli.check_output_dir(_OUTPUT_DIR.value, "--output_dir")
    generator_flags.check_model_runs()
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the web app needs Gradio: pip install -e ".[app]"') from None
    from stable_audio_jax.webapp.service import GenerationService
    from stable_audio_jax.webapp.ui import build_app, launch

    try:
        generator = generator_flags.load_generator()
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    service = GenerationService(generator, _OUTPUT_DIR.value, model_dirs=generator_flags.model_dirs())
    print(
        f"serving on http://{_HOST.value}:{_PORT.value} (outputs in {os.path.abspath(_OUTPUT_DIR.value)})", flush=True
    )
    launch(build_app(service), host=_HOST.value, port=_PORT.value)


if __name__ == "__main__":
    cli.run(main)
