"""A pretrained model directory: converted weights ready for sampling and fine-tuning.

Unlike a run directory (train state, optimizer and data iterator per step), this holds one
set of inference weights and what is needed to rebuild the modules:

    <dir>/config.json       architecture (diffusion model, VAE, text encoder), sample rate,
                            window, latent scale, sampling defaults, where it came from
    <dir>/params/           Orbax checkpoint {"diffusion", "autoencoder", "text_encoder"}
    <dir>/tokenizer.json    the text encoder's tokenizer

`convert/sao_checkpoint.py` writes one from a stable-audio-tools checkpoint;
`AudioGenerator.from_pretrained` and `launch/sample.py --pretrained=<dir>` read it, and so do
`data/pre_encode.py --pretrained=<dir>` (its VAE and T5) and `config.init_from=<dir>`
(fine-tuning, `training/init_from.py`), each reading only the parts it needs.
Restoring takes an abstract tree whose leaves carry the target shardings, so the weights
land directly in their place on any mesh.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp

FORMAT = "stable-audio-jax-pretrained"
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
TOKENIZER_FILE = "tokenizer.json"
PARTS = ("diffusion", "autoencoder", "text_encoder")


def save_pretrained(
    directory: str | os.PathLike, config: dict[str, Any], params: dict[str, Any], tokenizer: Any
) -> str:
    """Write `config` (JSON-able), `params` (`{part: tree}` for every part in PARTS) and the
    tokenizer (anything with `save(path)`) to `directory`, which must not hold params yet."""
    directory = os.path.abspath(os.fspath(directory))
    if sorted(params) != sorted(PARTS):
        raise ValueError(f"params must have exactly the parts {PARTS}, got {sorted(params)}")
    params_dir = os.path.join(directory, PARAMS_DIR)
    if os.path.exists(params_dir):
        raise FileExistsError(f"{params_dir} already exists; choose a new --output_dir or remove it")
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, params)
    checkpointer.wait_until_finished()
    tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
    # The config goes last: a directory with a config.json is complete.
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, **config}, f, indent=2)
    return directory


def read_pretrained_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The config of a pretrained directory; one-line errors for anything else."""
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"pretrained model directory {directory!r} does not exist")
    if not os.path.isfile(path) and os.path.isdir(os.path.join(directory, "checkpoints")):
        raise FileNotFoundError(
            f"{directory!r} is a training run directory, not a pretrained model directory "
            "(one written by launch/convert_sao.py)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{directory!r} is not a pretrained model directory (no {CONFIG_FILE}; "
            "an interrupted conversion leaves none)"
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} config (format={config.get('format')!r})")
    return config


def restore_pretrained_params(directory: str | os.PathLike, abstract_params: dict[str, Any]) -> dict[str, Any]:
    """The params of `directory`, restored onto the shardings of `abstract_params`
    (`{part: tree of jax.ShapeDtypeStruct with .sharding}`); any subset of the parts."""
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        return checkpointer.restore(
            _params_dir(directory),
            args=ocp.args.PyTreeRestore(
                abstract_params,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_params),
                partial_restore=True,
            ),
        )
    finally:
        checkpointer.close()


def pretrained_params_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """`{part: tree of array metadata (.shape, .dtype)}` as stored, reading no weights."""
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        return checkpointer.metadata(_params_dir(directory)).item_metadata.tree
    finally:
        checkpointer.close()


def _params_dir(directory: str | os.PathLike) -> str:
    params_dir = os.path.join(os.path.abspath(os.fspath(directory)), PARAMS_DIR)
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"no {PARAMS_DIR}/ in pretrained model directory {os.fspath(directory)!r}")
    return params_dir
