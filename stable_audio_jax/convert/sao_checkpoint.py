"""Import a stable-audio-tools `diffusion_cond` (or `diffusion_cond_inpaint`) checkpoint into a pretrained directory.

    python launch/convert_sao.py --checkpoint=stable-audio-open-1.0/model.safetensors \
        --model_config=stable-audio-open-1.0/model_config.json --t5_dir=t5-base \
        --output_dir=pretrained/sao
    python launch/convert_sao.py --checkpoint=sa1/model.ckpt --model_config=sa1/model_config.json \
        --clap_checkpoint=sa1/clap.ckpt --roberta_dir=roberta-base --output_dir=pretrained/sa1

Two model kinds, told apart by `diffusion.type` in the model config:

- Stable Audio Open (`dit`): the DiT (`convert/sao_dit.py`), number timing conditioners,
  and T5 prompts from a local Hugging Face T5 folder (the reference keeps T5 outside its
  checkpoint, `T5Conditioner`). Samples with SAO's defaults (100 steps of DPM-Solver++ 3M
  SDE, CFG 7, sigma 0.3..500). Stable Audio Open Small is this kind too: `seconds_total`
  as its only timing conditioner, projected prompt tokens, q/k LayerNorms, the
  `rf_denoiser` objective and its defaults (8 pingpong steps, no CFG). A
  `diffusion_cond_inpaint` model is this kind with `input_concat_ids` naming the mask and
  the masked latents (`input_concat_dim` = latent_dim + 1), kept in the checkpoint's order.
- Stable Audio 1.0 (`adp_cfg_1d`): the U-Net (`convert/sa1_unet.py`) with the reference's
  mask semantics, per-second table timing conditioners, and the CLAP text branch from its
  own checkpoint plus a RoBERTa folder for config and tokenizer
  (`convert/clap_text_checkpoint.py`). Samples with SA 1.0's defaults (100 steps, CFG 6
  with rescale 0.4, as `generate_diffusion_cond` + `UNetCFG1d.forward`).

The model config decides the architecture (`architecture_from_model_config`); every
tensor of the checkpoint must land in a parameter and every parameter must be filled,
else `ConversionError` names the key. Tensor layout: `model.model.*` is the backbone,
`conditioner.conditioners.seconds_{start,total}.*` the timing embedders
(`convert/sao_conditioners.py`), `pretransform.model.*` the VAE (`convert/sao_vae.py`,
Oobleck only). Training checkpoints that still wrap the model (`diffusion.` /
`diffusion_ema.` prefixes) are read from the EMA copy when there is one. The result
(`pretrained.py`) samples with `launch/sample.py --pretrained=<dir>`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping

from stable_audio_jax import parallel, pretrained
from stable_audio_jax.convert import sa1_unet, sao_conditioners, sao_dit, sao_vae
from stable_audio_jax.convert.clap_text_checkpoint import CLAP_MAX_LENGTH, load_clap_text_branch
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, check_tree, load_state_dict
from stable_audio_jax.convert.t5_checkpoint import load_t5_checkpoint
from stable_audio_jax.diffusion import sampling_config
from stable_audio_jax.models.autoencoder import AutoencoderConfig
from stable_audio_jax.models.conditioning import TIMING_IDS as _TIMING_IDS
from stable_audio_jax.models.dit import QK_NORMS, DiTConfig
from stable_audio_jax.models.latent_diffusion import (
    INPAINT_INPUTS,
    LatentDiffusionConfig,
    LatentDiffusionModel,
    example_inputs,
)
from stable_audio_jax.models.unet import UNetConfig

# SAT DiT options: ours by name, or a value that must hold because only it is implemented.
_DIT_RENAMES = {
    "io_channels": "io_channels",
    "embed_dim": "embed_dim",
    "depth": "depth",
    "num_heads": "num_heads",
    "cond_token_dim": "cond_token_dim",
    "global_cond_dim": "global_cond_dim",
    "project_cond_tokens": "project_cond_tokens",
    "input_concat_dim": "input_concat_dim",  # an inpainting model's mask and masked latents
    "attn_kwargs": "attn_kwargs",  # parsed by `_dit`: only `qk_norm`
}
_DIT_FIXED = {
    "transformer_type": "continuous_transformer",
    "patch_size": 1,
    "prepend_cond_dim": 0,
    "global_cond_type": "prepend",
    "timestep_cond_type": "global",
}
# SAT `adp_cfg_1d` (UNetCFG1d) options: ours by name, or a value that must hold because only it is implemented.
_UNET_RENAMES = {
    "in_channels": "in_channels",
    "channels": "channels",
    "multipliers": "multipliers",
    "factors": "factors",
    "num_blocks": "num_blocks",
    "attentions": "attentions",
    "attention_heads": "attention_heads",
    "attention_multiplier": "attention_multiplier",
    "resnet_groups": "resnet_groups",
    "kernel_multiplier_downsample": "kernel_multiplier_downsample",
    "use_skip_scale": "use_skip_scale",
    "context_features_multiplier": "mapping_multiplier",
    "context_embedding_features": "context_features",
    "context_embedding_max_length": "context_length",
}
_UNET_FIXED = {
    "use_nearest_upsample": False,
    "use_context_time": True,
    "use_xattn_time": False,
    "patch_size": 1,
    "use_stft": False,
    "use_stft_context": False,
    "context_features": None,
    "context_channels": None,
    "attention_features": None,
}
_WRAPPER_PREFIXES = ("diffusion_ema.", "diffusion.")
# `diffusion_cond_inpaint`: the same wrapper, its DiT also reading `INPAINT_INPUTS`.
_MODEL_TYPES = ("diffusion_cond", "diffusion_cond_inpaint")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a stable-audio-tools `model_config.json` describes, in this project's configs.

    `text_encoder` is the prompt conditioner: 't5' (SAO) or 'clap_text' (SA 1.0, hidden
    state `feature_layer` of the CLAP text branch); `text_model_name` is the reference's
    name for it (`t5_model_name`, or RoBERTa's for CLAP).
    """

    diffusion: LatentDiffusionConfig
    autoencoder: AutoencoderConfig
    latent_scale: float  # latents the model sees = VAE latents * latent_scale (1 / SAT's `scale`)
    sample_rate: int
    sample_size: int  # the window in audio samples
    text_max_length: int
    text_encoder: str
    text_model_name: str
    sampling: Mapping[str, Any]
    feature_layer: int | None = None


def _get(d: Mapping[str, Any], path: str) -> Any:
    node: Any = d
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ConversionError(f"model_config: missing {path!r}")
        node = node[key]
    return node


def _require(value: Any, want: Any, what: str) -> None:
    if value != want:
        raise ConversionError(f"model_config: {what} is {value!r}; only {want!r} is supported")


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
        io_channels=int(enc.get("in_channels", 2)),
        latent_dim=latent_dim,
        strides=tuple(enc["strides"]),
        encoder_channels=int(enc["channels"]),
        encoder_multipliers=(1,) + tuple(enc["c_mults"]),
        decoder_channels=int(dec["channels"]),
        decoder_multipliers=(1,) + tuple(dec["c_mults"]),
        snake_beta=True,
        decoder_final_bias=False,
        final_tanh=bool(dec.get("final_tanh", True)),
    )
    _require(
        config.downsampling_ratio,
        int(cfg.get("downsampling_ratio", config.downsampling_ratio)),
        "pretransform.config.downsampling_ratio (vs the product of the strides)",
    )
    return config, 1.0 / float(pre.get("scale", 1.0))


def _options(diffusion: Mapping[str, Any], renames: Mapping[str, str], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """`diffusion.config` as our config's keyword arguments; `ConversionError` naming any
    unknown key or any fixed option with another value."""
    cfg = dict(_get(diffusion, "config"))
    unknown = sorted(set(cfg) - set(renames) - set(fixed))
    if unknown:
        raise ConversionError(f"model_config: unsupported diffusion.config keys {unknown}")
    for key, want in fixed.items():
        if key in cfg:
            _require(cfg[key], want, f"diffusion.config.{key}")
    return {ours: cfg[theirs] for theirs, ours in renames.items() if theirs in cfg}


def _dit_objective(diffusion: Mapping[str, Any]) -> str:
    """The DiT's `diffusion_objective`: "v" (SAO 1.0) or a rectified flow ("rectified_flow",
    "rf_denoiser")."""
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in sampling_config.OBJECTIVES:
        raise ConversionError(
            f"model_config: diffusion.diffusion_objective is {objective!r}; supported: "
            f"{list(sampling_config.OBJECTIVES)}"
        )
    # The length-dependent shift of training times (and of rk4's grid) is not imported.
    _require(diffusion.get("distribution_shift_options"), None, "diffusion.distribution_shift_options")
    return objective


def _dit(diffusion: Mapping[str, Any]) -> DiTConfig:
    options = _options(diffusion, _DIT_RENAMES, _DIT_FIXED)
    attn_kwargs = dict(options.pop("attn_kwargs", None) or {})
    unknown = sorted(set(attn_kwargs) - {"qk_norm"})
    if unknown:
        raise ConversionError(f"model_config: unsupported diffusion.config.attn_kwargs keys {unknown}")
    qk_norm = attn_kwargs.get("qk_norm", "none")
    if qk_norm not in QK_NORMS:
        raise ConversionError(
            f"model_config: diffusion.config.attn_kwargs.qk_norm is {qk_norm!r}; supported: {list(QK_NORMS)}"
        )
    # The reference's DiffusionTransformer projects the prompt tokens to embed_dim unless told not to.
    project = options.pop("project_cond_tokens", True)
    if not isinstance(project, bool):
        raise ConversionError(
            f"model_config: diffusion.config.project_cond_tokens must be true or false, got {project!r}"
        )
    try:
        return DiTConfig(**{k: int(v) for k, v in options.items()}, project_cond_tokens=project, qk_norm=str(qk_norm))
    except (TypeError, ValueError) as e:
        raise ConversionError(f"model_config: diffusion.config does not describe a supported DiT: {e}") from e


def _unet(diffusion: Mapping[str, Any]) -> UNetConfig:
    _require(diffusion.get("diffusion_objective", "v"), "v", "diffusion.diffusion_objective")
    options = _options(diffusion, _UNET_RENAMES, _UNET_FIXED)
    cfg = _get(diffusion, "config")
    _require(cfg.get("out_channels", cfg.get("in_channels")), cfg.get("in_channels"), "diffusion.config.out_channels")
    options = {k: tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else v for k, v in options.items()}
    try:
        # Imported checkpoints attend as the reference does (models/unet.py, mask_semantics).
        return UNetConfig(mask_semantics="reference", **options)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"model_config: diffusion.config does not describe a supported U-Net: {e}") from e


# SAT's default `max_val` per timing conditioner type (NumberConditioner, IntConditioner).
_TIMING_MAX_DEFAULTS = {"number": 1, "int": 512}


def _timing(conditioners: Mapping[str, Any], kind: str, ids: tuple[str, ...]) -> int:
    """The shared `max_val` of the timing conditioners `ids`, each of SAT type `kind`."""
    max_seconds = None
    for name in ids:
        c = conditioners[name]
        _require(c.get("type"), kind, f"conditioning {name} type")
        _require(float(c.get("config", {}).get("min_val", 0)), 0.0, f"conditioning {name} min_val")
        value = int(c.get("config", {}).get("max_val", _TIMING_MAX_DEFAULTS[kind]))
        _require(max_seconds if max_seconds is not None else value, value, f"conditioning {name} max_val")
        max_seconds = value
    return max_seconds


def architecture_from_model_config(model_config: Mapping[str, Any]) -> Architecture:
    """Parse a stable-audio-tools `model_config.json` of the SAO (`dit`) or SA 1.0
    (`adp_cfg_1d`) kind.

    Raises:
      ConversionError naming the field for anything this port does not implement (another
      backbone, conditioner or VAE type, an option with a non-default value).
    """
    model_type = model_config.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ConversionError(f"model_config: model_type is {model_type!r}; supported: {list(_MODEL_TYPES)}")
    model = _get(model_config, "model")
    autoencoder, latent_scale = _autoencoder(model)
    diffusion = _get(model, "diffusion")
    backbone = diffusion.get("type")
    if backbone not in ("dit", "adp_cfg_1d"):
        raise ConversionError(
            f"model_config: diffusion.type is {backbone!r}; only 'dit' (Stable Audio Open) "
            "and 'adp_cfg_1d' (Stable Audio 1.0) are supported"
        )
    conditioners = {c.get("id"): c for c in _get(model, "conditioning.configs")}
    cond_dim = int(_get(model, "conditioning.cond_dim"))
    # SAO and SA 1.0 time by start and total; SAO Small by seconds_total alone.
    timing_ids = tuple(name for name in _TIMING_IDS if name in conditioners)
    if backbone == "adp_cfg_1d" or "seconds_start" in conditioners:
        _require(sorted(conditioners), sorted(("prompt",) + _TIMING_IDS), "the conditioner ids")
    else:
        _require(sorted(conditioners), sorted(("prompt", "seconds_total")), "the conditioner ids")
    _require(
        list(diffusion.get("cross_attention_cond_ids", [])),
        ["prompt", *timing_ids],
        "diffusion.cross_attention_cond_ids",
    )
    prompt = conditioners["prompt"]
    prompt_config = prompt.get("config", {})
    _require(prompt_config.get("project_out", False), False, "the prompt conditioner's project_out")
    common = dict(
        autoencoder=autoencoder,
        latent_scale=latent_scale,
        sample_rate=int(_get(model_config, "sample_rate")),
        sample_size=int(_get(model_config, "sample_size")),
    )
    if backbone == "dit":
        dit, objective = _dit(diffusion), _dit_objective(diffusion)
        _require(prompt.get("type"), "t5", "conditioning prompt type")
        max_seconds = _timing(conditioners, "number", timing_ids)
        _require(list(diffusion.get("global_cond_ids", [])), list(timing_ids), "diffusion.global_cond_ids")
        _require(dit.cond_token_dim, cond_dim, "diffusion.config.cond_token_dim (vs conditioning.cond_dim)")
        _require(
            dit.global_cond_dim,
            len(timing_ids) * cond_dim,
            "diffusion.config.global_cond_dim (vs the global conditioners' widths)",
        )
        _require(dit.io_channels, autoencoder.latent_dim, "diffusion.config.io_channels (vs the VAE latent_dim)")
        text_max_length = int(prompt_config.get("max_length", 128))
        input_concat_ids = tuple(diffusion.get("input_concat_ids", []))
        if model_type == "diffusion_cond_inpaint":
            _require(sorted(input_concat_ids), sorted(INPAINT_INPUTS), "diffusion.input_concat_ids (sorted)")
        else:
            _require(list(input_concat_ids), [], "diffusion.input_concat_ids")
        try:
            config = LatentDiffusionConfig(
                dit=dit,
                timing_kind="number",
                max_seconds=max_seconds,
                global_timing=True,
                timing_ids=timing_ids,
                text_tokens=text_max_length,
                objective=objective,
                input_concat_ids=input_concat_ids,
            )
        except ValueError as e:
            raise ConversionError(f"model_config: {e}") from e
        return Architecture(
            diffusion=config,
            text_max_length=text_max_length,
            text_encoder="t5",
            text_model_name=str(prompt_config.get("t5_model_name", "t5-base")),
            sampling=sampling_config.release_defaults(objective).to_dict(),
            **common,
        )
    _require(model_type, "diffusion_cond", "model_type (an inpainting model needs the 'dit' backbone)")
    unet = _unet(diffusion)
    _require(prompt.get("type"), "clap_text", "conditioning prompt type")
    _require(prompt_config.get("use_text_features", False), True, "the CLAP conditioner's use_text_features")
    max_seconds = _timing(conditioners, "int", timing_ids)
    _require(list(diffusion.get("global_cond_ids", [])), [], "diffusion.global_cond_ids")
    _require(list(diffusion.get("input_concat_ids", [])), [], "diffusion.input_concat_ids")
    _require(unet.context_features, cond_dim, "diffusion.config.context_embedding_features (vs conditioning.cond_dim)")
    _require(unet.in_channels, autoencoder.latent_dim, "diffusion.config.in_channels (vs the VAE latent_dim)")
    # LAION-CLAP always gives 77 tokens; the reference's null embedding then uses 77 + 2 rows.
    _require(
        unet.context_length,
        CLAP_MAX_LENGTH + 2,
        "diffusion.config.context_embedding_max_length (77 CLAP tokens + 2 timing tokens)",
    )
    return Architecture(
        diffusion=LatentDiffusionConfig(unet=unet, timing_kind="table", max_seconds=max_seconds),
        text_max_length=CLAP_MAX_LENGTH,
        text_encoder="clap_text",
        text_model_name="roberta-base",
        feature_layer=int(prompt_config.get("feature_layer_ix", -1)),
        sampling=sampling_config.SA1.to_dict(),
        **common,
    )


def _model_prefix(reader: StateDictReader, arch: Architecture) -> StateDictReader:
    """The reader scoped past a training wrapper (EMA copy preferred), if any."""
    probe = (
        sao_dit.DIT_PREFIX + "timestep_features.weight"
        if arch.diffusion.dit is not None
        else sa1_unet.UNET_PREFIX + "fixed_embedding.embedding.weight"
    )
    if reader.has(probe):
        return reader
    for prefix in _WRAPPER_PREFIXES:
        if reader.scoped(prefix).has(probe):
            return reader.scoped(prefix)
    raise ConversionError(
        f"{reader.source}: no {probe!r}; is this a {arch.diffusion.backbone} diffusion "
        "checkpoint of the model config's kind?"
    )


def diffusion_params_from_state_dict(reader: StateDictReader, arch: Architecture) -> dict[str, Any]:
    """`LatentDiffusionModel` params (`timing` + the backbone) from the backbone and conditioner tensors."""
    c = arch.diffusion
    timing = sao_conditioners.timing_params_from_state_dict(
        reader, c.context_features, kind=c.timing_kind, max_seconds=c.max_seconds, ids=c.timing_ids
    )
    backbone = (
        sao_dit.dit_params_from_state_dict(reader, c.dit)
        if c.dit is not None
        else sa1_unet.unet_params_from_state_dict(reader, c.unet)
    )
    params = {"timing": timing, c.backbone: backbone}
    check_tree(params, abstract_diffusion_params(c), "diffusion model")
    return params


def abstract_diffusion_params(config: LatentDiffusionConfig) -> Any:
    """The diffusion model's parameter shapes, traced without allocating."""
    return parallel.abstract_params(
        LatentDiffusionModel(config), *example_inputs(config, frames=config.downsampling_factor)
    )


def _text_encoder(
    arch: Architecture,
    t5_dir: str | None,
    clap_checkpoint: str | None,
    roberta_dir: str | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], Any, Any, dict]:
    """`(pretrained config's text_encoder section, params, tokenizer, source paths)`."""
    if arch.text_encoder == "t5":
        if not t5_dir:
            raise ConversionError("a Stable Audio Open (T5-prompted) model needs t5_dir (--t5_dir)")
        log(f"reading the T5 encoder in {t5_dir}")
        config, params, tokenizer = load_t5_checkpoint(t5_dir, max_length=arch.text_max_length)
        width = config.d_model
        section = {"kind": "t5", "config": dataclasses.asdict(config), "max_length": arch.text_max_length}
        sources = {"t5_dir": os.path.abspath(t5_dir), "t5_model_name": arch.text_model_name}
    else:
        if not clap_checkpoint or not roberta_dir:
            raise ConversionError(
                "a Stable Audio 1.0 (CLAP-prompted) model needs clap_checkpoint and roberta_dir "
                "(--clap_checkpoint, --roberta_dir)"
            )
        log(f"reading the CLAP text branch of {clap_checkpoint}")
        config, params, tokenizer = load_clap_text_branch(clap_checkpoint, roberta_dir, arch.text_max_length)
        width = config.hidden_size
        if not -(config.num_layers + 1) <= arch.feature_layer <= config.num_layers:
            raise ConversionError(
                f"model_config: the CLAP conditioner's feature_layer_ix={arch.feature_layer} is "
                f"out of range for a {config.num_layers}-layer text branch"
            )
        section = {
            "kind": "clap_text",
            "config": config.to_dict(),
            "max_length": arch.text_max_length,
            "feature_layer": arch.feature_layer,
        }
        sources = {"clap_checkpoint": os.path.abspath(clap_checkpoint), "roberta_dir": os.path.abspath(roberta_dir)}
    if width != arch.diffusion.context_features:
        raise ConversionError(
            f"the {arch.text_encoder} text encoder is {width}-d but the model's conditioning is "
            f"{arch.diffusion.context_features}-d"
        )
    return section, params, tokenizer, sources


def convert_checkpoint(
    checkpoint: str,
    model_config: str,
    output_dir: str,
    *,
    t5_dir: str | None = None,
    clap_checkpoint: str | None = None,
    roberta_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Convert checkpoint + model config + the prompt encoder's files into a pretrained directory.

    SAO needs `t5_dir`; SA 1.0 needs `clap_checkpoint` and `roberta_dir`. Returns a
    summary: parameter counts per part and the time taken.
    """
    start = time.perf_counter()
    if not os.path.isfile(model_config):
        raise FileNotFoundError(f"model config not found: {model_config}")
    with open(model_config, encoding="utf-8") as f:
        arch = architecture_from_model_config(json.load(f))
    log(f"reading {checkpoint}")
    reader = _model_prefix(StateDictReader(load_state_dict(checkpoint), source=os.fspath(checkpoint)), arch)
    diffusion = diffusion_params_from_state_dict(reader, arch)
    autoencoder = sao_vae.autoencoder_params_from_state_dict(reader.scoped(sao_vae.DIFFUSION_PREFIX), arch.autoencoder)
    reader.finish()
    text_section, text_params, tokenizer, sources = _text_encoder(arch, t5_dir, clap_checkpoint, roberta_dir, log)
    params = {"diffusion": diffusion, "autoencoder": autoencoder, "text_encoder": text_params}
    config = {
        "source": {"checkpoint": os.path.abspath(checkpoint), "model_config": os.path.abspath(model_config), **sources},
        "sample_rate": arch.sample_rate,
        "sample_size": arch.sample_size,
        "latent_scale": arch.latent_scale,
        "model": arch.diffusion.to_dict(),
        "autoencoder": dataclasses.asdict(arch.autoencoder),
        "text_encoder": text_section,
        "sampling": dict(arch.sampling),
    }
    log(f"writing {output_dir}")
    pretrained.save_pretrained(output_dir, config, params, tokenizer)
    counts = {part: parallel.count_params(tree) for part, tree in params.items()}
    return {
        "output_dir": os.path.abspath(output_dir),
        "params": counts,
        "seconds": round(time.perf_counter() - start, 1),
    }
