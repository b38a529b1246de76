"""The command-line flags that pick the model to sample from, shared by `launch/sample.py` and
`launch/app.py`: `--diffusion_dir`, `--pretrained`, `--lora`, `--vae_dir`, `--clap_dir`, `--mesh`.

    check_model_flags()            # one UserError line for a bad combination, before loading
    check_model_runs()             # ... or for a directory that holds no run of the right task
    generator = load_generator()   # the AudioGenerator they name
    model_dirs()                   # what was loaded, for the settings written beside outputs
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags

from stable_audio_jax import cli
from stable_audio_jax.errors import UserError

_DIFFUSION_DIR = flags.DEFINE_string(
    "diffusion_dir", None, "Run directory of the diffusion model (with --pretrained: one fine-tuned from it)."
)
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "A converted pretrained directory (with --diffusion_dir: only its VAE and text encoder)."
)
_LORA = flags.DEFINE_multi_string(
    "lora",
    [],
    "A LoRA run trained on --pretrained, as run_dir[:scale] (scale 1 by default; repeatable: the adapters add up).",
)
_VAE_DIR = flags.DEFINE_string("vae_dir", None, "VAE run (default: the one named in the diffusion config).")
_CLAP_DIR = flags.DEFINE_string("clap_dir", None, "CLAP run (default: the one named in the diffusion config).")
_ATTENTION = flags.DEFINE_enum(
    "attention_impl",
    "auto",
    ["auto", "xla", "cudnn", "pallas_tpu"],
    "Attention kernel (models/attention.py): the backend's fused one with an XLA fallback, or one named.",
)
_MESH = flags.DEFINE_list(
    "mesh",
    None,
    "data,fsdp,tensor mesh over the local devices, e.g. 1,8,1 to shard a large "
    "model's weights FSDP-style as in training (default: every device on the data axis).",
)


def check_model_flags() -> None:
    """The checks that need no model, so a bad combination fails before anything loads."""
    if _LORA.value and _PRETRAINED.value is None:
        raise UserError("--lora needs --pretrained: the directory whose diffusion model the adapters were trained on")
    if _DIFFUSION_DIR.value is None and _PRETRAINED.value is None:
        raise UserError(
            "give --diffusion_dir (a training run), --pretrained (a converted model), or both "
            "(a run fine-tuned from the converted model)"
        )
    if _PRETRAINED.value is not None and (_VAE_DIR.value or _CLAP_DIR.value):
        raise UserError("--vae_dir and --clap_dir do not go with --pretrained (the VAE and text encoder are its own)")
    if _PRETRAINED.value is not None and not os.path.isdir(_PRETRAINED.value):
        raise UserError(f"--pretrained={_PRETRAINED.value} does not exist")
    if _LORA.value and _DIFFUSION_DIR.value is not None:
        raise UserError(
            "--diffusion_dir (a full fine-tuning run) and --lora (adapters over --pretrained) do not go together"
        )
    for value in _LORA.value:
        cli.check_run_tasks({"lora": (cli.split_scale(value)[0], "diffusion")})


def check_model_runs() -> None:
    """The run directories hold runs of the right tasks (after the cheaper checks of a script)."""
    if _DIFFUSION_DIR.value is not None:  # a converted --pretrained directory is no training run
        cli.check_run_tasks(
            {
                "diffusion_dir": (_DIFFUSION_DIR.value, "diffusion"),
                "vae_dir": (_VAE_DIR.value, "vae"),
                "clap_dir": (_CLAP_DIR.value, "clap"),
            }
        )


def _mesh():
    """The --mesh over the local devices, or None for the default."""
    if _MESH.value is None:
        return None
    from stable_audio_jax import parallel

    try:
        shape = tuple(int(v) for v in _MESH.value)
    except ValueError:
        raise UserError(f"--mesh={','.join(_MESH.value)}: give three integers, data,fsdp,tensor") from None
    return parallel.create_mesh(shape)


def load_generator() -> Any:
    """The `AudioGenerator` the flags name (`FileNotFoundError`/`ValueError` from the loaders pass through)."""
    from stable_audio_jax.inference.generate import AudioGenerator
    from stable_audio_jax.models.attention import set_attention_implementation

    set_attention_implementation(_ATTENTION.value)
    mesh = _mesh()
    if _PRETRAINED.value:
        return AudioGenerator.from_pretrained(
            _PRETRAINED.value,
            diffusion_dir=_DIFFUSION_DIR.value,
            adapters=[cli.split_scale(v) for v in _LORA.value],
            mesh=mesh,
        )
    return AudioGenerator.from_runs(_DIFFUSION_DIR.value, vae_dir=_VAE_DIR.value, clap_dir=_CLAP_DIR.value, mesh=mesh)


def model_dirs() -> dict[str, Any]:
    """The model directories given, as absolute paths (LoRA runs with their scales)."""
    dirs: dict[str, Any] = {
        name: os.path.abspath(flag.value)
        for name, flag in (("pretrained", _PRETRAINED), ("diffusion_dir", _DIFFUSION_DIR))
        if flag.value
    }
    if _LORA.value:
        dirs["lora"] = [[os.path.abspath(path), scale] for path, scale in map(cli.split_scale, _LORA.value)]
    return dirs
