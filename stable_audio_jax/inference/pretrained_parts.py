"""The parts of a pretrained directory rebuilt as modules, and restored one by one.

    config = pretrained.read_pretrained_config("pretrained/sao")
    params = restore_parts("pretrained/sao", config, ("autoencoder", "text_encoder"), mesh)
    vae = autoencoder(config)                       # AudioAutoencoder
    t5 = text_encoder("pretrained/sao", config, params["text_encoder"], mesh)

Sampling needs every part; pre-encoding only the VAE and the text encoder; fine-tuning
only the part it trains. Only the requested parts are read, so pre-encoding for a 1B DiT
never holds the DiT's weights.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax

from stable_audio_jax import parallel, pretrained
from stable_audio_jax.convert.clap_text_checkpoint import abstract_params as abstract_clap_text_params
from stable_audio_jax.convert.sao_checkpoint import abstract_diffusion_params
from stable_audio_jax.convert.sao_vae import abstract_autoencoder_params
from stable_audio_jax.convert.t5_checkpoint import abstract_params as abstract_t5_params
from stable_audio_jax.inference.clap_text import CLAPTextEncoder
from stable_audio_jax.inference.frozen_text import FrozenTextEncoder
from stable_audio_jax.inference.t5 import T5TextEncoder
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.autoencoder import AudioAutoencoder, AutoencoderConfig
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel
from stable_audio_jax.models.t5 import T5Config
from stable_audio_jax.models.text_encoder import TextEncoderConfig

TEXT_ENCODER_KINDS = ("t5", "clap_text")  # SAO's T5; SA 1.0's CLAP text branch


def diffusion_model(config: Mapping[str, Any]) -> LatentDiffusionModel:
    return LatentDiffusionModel(LatentDiffusionConfig.from_dict(config["model"]))


def autoencoder(config: Mapping[str, Any]) -> AudioAutoencoder:
    return AudioAutoencoder(AutoencoderConfig.from_dict(config["autoencoder"]))


def text_encoder_kind(config: Mapping[str, Any]) -> str:
    kind = config["text_encoder"].get("kind")
    if kind not in TEXT_ENCODER_KINDS:
        raise ValueError(f"unsupported text encoder {kind!r} in a pretrained directory (one of {TEXT_ENCODER_KINDS})")
    return kind


def text_encoder_config(config: Mapping[str, Any]) -> T5Config | TextEncoderConfig:
    """The text encoder's architecture: a T5 encoder or a RoBERTa-shaped CLAP text tower."""
    kind = text_encoder_kind(config)
    return (T5Config if kind == "t5" else TextEncoderConfig).from_dict(config["text_encoder"]["config"])


def abstract_part(config: Mapping[str, Any], part: str) -> Any:
    """The parameter shapes of one part (a key of `pretrained.PARTS`), allocating nothing."""
    if part == "diffusion":
        return abstract_diffusion_params(diffusion_model(config).config)
    if part == "autoencoder":
        return abstract_autoencoder_params(autoencoder(config).config)
    if part == "text_encoder":
        abstract = abstract_t5_params if text_encoder_kind(config) == "t5" else abstract_clap_text_params
        return abstract(text_encoder_config(config))
    raise ValueError(f"unknown pretrained part {part!r}; parts: {pretrained.PARTS}")


def restore_parts(
    directory: str | os.PathLike,
    config: Mapping[str, Any],
    parts: Sequence[str],
    mesh: jax.sharding.Mesh,
    rules: parallel.Rules = parallel.DEFAULT_RULES,
) -> dict[str, Any]:
    """`{part: params}` for `parts` of `directory`, placed on `mesh` by the logical rules."""
    abstract = {part: abstract_part(config, part) for part in parts}
    return pretrained.restore_pretrained_params(directory, parallel.with_shardings(abstract, mesh, rules)[0])


def text_encoder(
    directory: str | os.PathLike,
    config: Mapping[str, Any],
    params: Any,
    mesh: jax.sharding.Mesh,
    rules: parallel.Rules = parallel.DEFAULT_RULES,
) -> FrozenTextEncoder:
    """The frozen prompt encoder of `directory` (its tokenizer and `params`), as sampling runs it."""
    text = config["text_encoder"]
    tokenizer = TextTokenizer.from_file(
        os.path.join(os.fspath(directory), pretrained.TOKENIZER_FILE), max_length=int(text["max_length"])
    )
    if text_encoder_kind(config) == "t5":
        return T5TextEncoder(text_encoder_config(config), params, tokenizer, mesh=mesh, rules=rules)
    return CLAPTextEncoder(
        text_encoder_config(config), params, tokenizer, feature_layer=int(text["feature_layer"]), mesh=mesh, rules=rules
    )
