"""Import a Stable Audio Open checkpoint (stable-audio-tools) into a pretrained directory.

    python launch/convert_sao.py --checkpoint=stable-audio-open-1.0/model.safetensors \
        --model_config=stable-audio-open-1.0/model_config.json --t5_dir=t5-base \
        --output_dir=pretrained/sao

Inputs: the checkpoint (`model.safetensors`, or `model.ckpt` read without running its
pickle), its `model_config.json`, and a local Hugging Face T5 folder for the prompt
conditioner (the reference keeps T5 outside its checkpoint, SPEC.md 2.2). The model config
decides the architecture (`architecture_from_model_config`); every tensor of the checkpoint
must land in a parameter and every parameter must be filled, else `ConversionError` names
the key. The result (`inference/pretrained.py`) samples with `launch/sample.py
--pretrained=<dir>` using SAO's defaults (100 steps of DPM-Solver++ 3M SDE, CFG 7, sigma
0.3..500).

Tensor layout: `model.model.*` is the DiT (`convert/sao_dit.py`),
`conditioner.conditioners.seconds_{start,total}.*` the timing embedders
(`convert/sao_conditioners.py`), `pretransform.model.*` the VAE (`convert/sao_vae.py`).
Training checkpoints that still wrap the model (`diffusion.` / `diffusion_ema.` prefixes)
are read from the EMA copy when there is one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping

import jax

from stable_audio_jax.convert import sao_conditioners, sao_dit, sao_vae
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, check_tree, load_state_dict
from stable_audio_jax.convert.t5_checkpoint import load_t5_checkpoint
from stable_audio_jax.inference import pretrained
from stable_audio_jax.models.autoencoder import AutoencoderConfig
from stable_audio_jax.models.dit import DiTConfig
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel, example_inputs

# SAO's sampling settings (the HF model card and SAT's Gradio defaults of the release).
SAO_SAMPLING = {"steps": 100, "sampler": "dpmpp_3m_sde", "cfg_scale": 7.0, "sigma_min": 0.3, "sigma_max": 500.0}

# SAT DiT options: ours by name, or a value that must hold because only it is implemented.
_DIT_RENAMES = {"io_channels": "io_channels", "embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads",
                "cond_token_dim": "cond_token_dim", "global_cond_dim": "global_cond_dim"}
_DIT_FIXED = {"project_cond_tokens": False, "transformer_type": "continuous_transformer", "patch_size": 1,
              "input_concat_dim": 0, "prepend_cond_dim": 0, "global_cond_type": "prepend",
              "timestep_cond_type": "global"}
_WRAPPER_PREFIXES = ("diffusion_ema.", "diffusion.")
_TIMING_IDS = ("seconds_start", "seconds_total")


@dataclasses.dataclass(frozen=True)
class SaoArchitecture:
    """What a stable-audio-tools `model_config.json` describes, in this project's configs."""

    diffusion: LatentDiffusionConfig
    autoencoder: AutoencoderConfig
    latent_scale: float  # latents the model sees = VAE latents * latent_scale (1 / SAT's `scale`)
    sample_rate: int
    sample_size: int  # the window in audio samples
    text_max_length: int
    t5_model_name: str


def _get(d: Mapping[str, Any], path: str) -> Any:
    node: Any = d
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ConversionError(f"model_config: missing {path!r}")
        node = node[key]
    return node


def _require(value: Any, want: Any, what: str) -> None:
    if value != want:
        raise ConversionError(f"model_config: {what} is {value!r}; only {want!r} (the SAO layout) is supported")


def _oobleck(side: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    _require(side.get("type"), "oobleck", f"pretransform.config.{name}.type")
    cfg = side.get("config", {})
    _require(cfg.get("use_snake", False), True, f"pretransform.config.{name}.config.use_snake")
    _require(cfg.get("antialias_activation", False), False, f"pretransform.config.{name}.config.antialias_activation")
    return cfg


def _autoencoder(model: Mapping[str, Any]) -> tuple[AutoencoderConfig, float]:
    pre = _get(model, "pretransform")
    _require(pre.get("type"), "autoencoder", "pretransform.type")
    cfg = _get(pre, "config")
    _require(_get(cfg, "bottleneck").get("type"), "vae", "pretransform.config.bottleneck.type")
    enc, dec = _oobleck(_get(cfg, "encoder"), "encoder"), _oobleck(_get(cfg, "decoder"), "decoder")
    latent_dim = int(_get(cfg, "latent_dim"))
    _require(int(enc.get("latent_dim", 0)), 2 * latent_dim, "pretransform.config.encoder.config.latent_dim")
    _require(int(dec.get("latent_dim", 0)), latent_dim, "pretransform.config.decoder.config.latent_dim")
    _require(list(enc.get("strides", [])), list(dec.get("strides", [])), "the decoder strides (vs the encoder's)")
    config = AutoencoderConfig(
        io_channels=int(enc.get("in_channels", 2)), latent_dim=latent_dim, strides=tuple(enc["strides"]),
        encoder_channels=int(enc["channels"]), encoder_multipliers=(1,) + tuple(enc["c_mults"]),
        decoder_channels=int(dec["channels"]), decoder_multipliers=(1,) + tuple(dec["c_mults"]),
        snake_beta=True, decoder_final_bias=False, final_tanh=bool(dec.get("final_tanh", True)))
    _require(config.downsampling_ratio, int(cfg.get("downsampling_ratio", config.downsampling_ratio)),
             "pretransform.config.downsampling_ratio (vs the product of the strides)")
    return config, 1.0 / float(pre.get("scale", 1.0))


def _dit(diffusion: Mapping[str, Any]) -> DiTConfig:
    _require(diffusion.get("type"), "dit", "diffusion.type")
    _require(diffusion.get("diffusion_objective", "v"), "v", "diffusion.diffusion_objective")
    cfg = dict(_get(diffusion, "config"))
    unknown = sorted(set(cfg) - set(_DIT_RENAMES) - set(_DIT_FIXED))
    if unknown:
        raise ConversionError(f"model_config: unsupported diffusion.config keys {unknown}")
    for key, want in _DIT_FIXED.items():
        if key in cfg:
            _require(cfg[key], want, f"diffusion.config.{key}")
    return DiTConfig(**{ours: int(cfg[theirs]) for theirs, ours in _DIT_RENAMES.items() if theirs in cfg})


def architecture_from_model_config(model_config: Mapping[str, Any]) -> SaoArchitecture:
    """Parse a stable-audio-tools `model_config.json` of the SAO kind.

    Raises:
      ConversionError naming the field for anything this port does not implement (another
      backbone, conditioner or VAE type, an option with a non-default value).
    """
    _require(model_config.get("model_type"), "diffusion_cond", "model_type")
    model = _get(model_config, "model")
    autoencoder, latent_scale = _autoencoder(model)
    diffusion = _get(model, "diffusion")
    dit = _dit(diffusion)
    conditioners = {c.get("id"): c for c in _get(model, "conditioning.configs")}
    cond_dim = int(_get(model, "conditioning.cond_dim"))
    _require(sorted(conditioners), sorted(("prompt",) + _TIMING_IDS), "the conditioner ids")
    prompt = conditioners["prompt"]
    _require(prompt.get("type"), "t5", "conditioning prompt type")
    _require(prompt.get("config", {}).get("project_out", False), False, "the T5 conditioner's project_out")
    max_seconds = None
    for name in _TIMING_IDS:
        c = conditioners[name]
        _require(c.get("type"), "number", f"conditioning {name} type")
        _require(float(c.get("config", {}).get("min_val", 0)), 0.0, f"conditioning {name} min_val")
        value = int(c.get("config", {}).get("max_val", 1))
        _require(max_seconds if max_seconds is not None else value, value, f"conditioning {name} max_val")
        max_seconds = value
    _require(list(diffusion.get("cross_attention_cond_ids", [])), ["prompt", *_TIMING_IDS],
             "diffusion.cross_attention_cond_ids")
    _require(list(diffusion.get("global_cond_ids", [])), list(_TIMING_IDS), "diffusion.global_cond_ids")
    _require(dit.cond_token_dim, cond_dim, "diffusion.config.cond_token_dim (vs conditioning.cond_dim)")
    _require(dit.io_channels, autoencoder.latent_dim, "diffusion.config.io_channels (vs the VAE latent_dim)")
    text_max_length = int(prompt.get("config", {}).get("max_length", 128))
    return SaoArchitecture(
        diffusion=LatentDiffusionConfig(dit=dit, timing_kind="number", max_seconds=max_seconds,
                                        global_timing=True, text_tokens=text_max_length),
        autoencoder=autoencoder, latent_scale=latent_scale, sample_rate=int(_get(model_config, "sample_rate")),
        sample_size=int(_get(model_config, "sample_size")), text_max_length=text_max_length,
        t5_model_name=str(prompt.get("config", {}).get("t5_model_name", "t5-base")))


def _model_prefix(reader: StateDictReader) -> StateDictReader:
    """The reader scoped past a training wrapper (EMA copy preferred), if any."""
    probe = sao_dit.DIT_PREFIX + "timestep_features.weight"
    if reader.has(probe):
        return reader
    for prefix in _WRAPPER_PREFIXES:
        if reader.scoped(prefix).has(probe):
            return reader.scoped(prefix)
    raise ConversionError(f"{reader.source}: no {probe!r}; is this a Stable Audio Open diffusion checkpoint?")


def diffusion_params_from_state_dict(reader: StateDictReader, arch: SaoArchitecture) -> dict[str, Any]:
    """`LatentDiffusionModel` params (`timing` + `dit`) from the DiT and conditioner tensors."""
    params = {"timing": sao_conditioners.timing_params_from_state_dict(reader, arch.diffusion.context_features),
              "dit": sao_dit.dit_params_from_state_dict(reader, arch.diffusion.dit)}
    check_tree(params, abstract_diffusion_params(arch.diffusion), "diffusion model")
    return params


def abstract_diffusion_params(config: LatentDiffusionConfig) -> Any:
    """The diffusion model's parameter shapes, traced without allocating."""
    inputs = example_inputs(config, frames=config.downsampling_factor)
    return jax.eval_shape(LatentDiffusionModel(config).init, jax.random.key(0), *inputs)["params"]


def convert_sao_checkpoint(checkpoint: str, model_config: str, t5_dir: str, output_dir: str, *,
                           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Convert checkpoint + model config + T5 folder into a pretrained directory.

    Returns a summary: parameter counts per part and the time taken.
    """
    start = time.perf_counter()
    if not os.path.isfile(model_config):
        raise FileNotFoundError(f"model config not found: {model_config}")
    with open(model_config, encoding="utf-8") as f:
        arch = architecture_from_model_config(json.load(f))
    log(f"reading {checkpoint}")
    reader = _model_prefix(StateDictReader(load_state_dict(checkpoint), source=os.fspath(checkpoint)))
    diffusion = diffusion_params_from_state_dict(reader, arch)
    autoencoder = sao_vae.autoencoder_params_from_state_dict(reader.scoped(sao_vae.DIFFUSION_PREFIX), arch.autoencoder)
    reader.finish()
    log(f"reading the T5 encoder in {t5_dir}")
    t5_config, t5_params, tokenizer = load_t5_checkpoint(t5_dir, max_length=arch.text_max_length)
    if t5_config.d_model != arch.diffusion.context_features:
        raise ConversionError(f"{t5_dir}: T5 width {t5_config.d_model} but the model's conditioning is "
                              f"{arch.diffusion.context_features}-d")
    params = {"diffusion": diffusion, "autoencoder": autoencoder, "text_encoder": t5_params}
    config = {
        "source": {"checkpoint": os.path.abspath(checkpoint), "model_config": os.path.abspath(model_config),
                   "t5_dir": os.path.abspath(t5_dir), "t5_model_name": arch.t5_model_name},
        "sample_rate": arch.sample_rate, "sample_size": arch.sample_size, "latent_scale": arch.latent_scale,
        "model": arch.diffusion.to_dict(), "autoencoder": dataclasses.asdict(arch.autoencoder),
        "text_encoder": {"kind": "t5", "config": dataclasses.asdict(t5_config),
                         "max_length": arch.text_max_length},
        "sampling": dict(SAO_SAMPLING),
    }
    log(f"writing {output_dir}")
    pretrained.save_pretrained(output_dir, config, params, tokenizer)
    counts = {part: pretrained.count_params(tree) for part, tree in params.items()}
    return {"output_dir": os.path.abspath(output_dir), "params": counts,
            "seconds": round(time.perf_counter() - start, 1)}
