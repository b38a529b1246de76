"""Building blocks of the `configs/*.py` files (ml_collections, `get_config()` each).

Every launch script takes `--config=configs/x.py` plus `--config.some.key=value`
overrides; the config is locked, so a misspelt key fails at start-up instead of being
silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator, Mapping

import ml_collections

from stable_audio_jax import lora, parallel
from stable_audio_jax.diffusion import inpaint_masks, sampling_config
from stable_audio_jax.errors import UserError
from stable_audio_jax.models.attention import ATTENTION_IMPLEMENTATIONS


def base_config() -> ml_collections.ConfigDict:
    """Fields shared by every task: seed, mesh, data, trainer loop."""
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0
    c.dtype = "float32"  # compute dtype
    c.param_dtype = "float32"
    # The attention kernel (`models/attention.py`): "auto" (the backend's fused kernel, falling
    # back to XLA's with a log line), "xla", "cudnn" (GPU) or "pallas_tpu" (TPU).
    c.attention_impl = "auto"
    # A pretrained directory or run directory whose weights a new run starts from
    # (fine-tuning; `training/init_from.py`). Ignored when the run directory has checkpoints.
    c.init_from = ""

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
    c.mesh.axis_names = parallel.MESH_AXES
    c.mesh.rules = parallel.DEFAULT_RULES

    c.data = ml_collections.ConfigDict()
    c.data.train_shards = ""  # ArrayRecord files: a folder, a glob or a comma-free single path
    c.data.eval_shards = ""  # defaults to train_shards
    c.data.sample_rate = 44100
    c.data.sample_size = 65536  # window in samples
    c.data.batch_size = 8  # global batch, split over processes and data-parallel devices
    c.data.worker_count = 2  # Grain decode worker processes
    # Bytes of training records kept in memory once read (per process and worker; 0: none).
    # Used by the pre-encoded diffusion data, whose 2 MiB records cost ~5-7 ms of CPU per read.
    c.data.cache_bytes = 0
    c.data.seed = 0

    c.trainer = ml_collections.ConfigDict()
    c.trainer.num_steps = 1000
    c.trainer.log_every = 10
    c.trainer.eval_every = 250  # 0 disables evaluation
    c.trainer.checkpoint_every = 500
    c.trainer.max_checkpoints = 3
    c.trainer.async_checkpointing = True
    c.trainer.verify_checkpoints = True  # read each checkpoint back when the next is written
    c.trainer.on_nonfinite = "stop"  # or "skip": drop a NaN/inf update, up to max_nonfinite_skips times
    c.trainer.max_nonfinite_skips = 10
    c.trainer.profile_steps = (0, 0)  # (first, last): a jax.profiler trace of those steps in <workdir>/profile
    return c


# Lower bounds of the loop and data fields every config has (`base_config`): below them a run
# fails late and obscurely (a division by zero after compiling, an empty batch).
_MINIMUMS = {
    "trainer.num_steps": 1,
    "trainer.log_every": 1,
    "trainer.eval_every": 0,  # 0 disables evaluation
    "trainer.checkpoint_every": 1,
    "trainer.max_checkpoints": 1,
    "data.batch_size": 1,
    "data.sample_size": 1,
    "data.sample_rate": 1,
    "data.worker_count": 0,  # 0 decodes in the training process
    "data.cache_bytes": 0,  # 0 keeps no record in memory
}


# The value of a field that a config leaves to the command line (e.g. `init_from` of a
# fine-tuning config): `validate` fails until an override sets it.
REQUIRED = "<required>"


def validate(config: ml_collections.ConfigDict) -> None:
    """Check the trainer and data fields of a training config before anything is built.

    Raises:
      UserError: naming every field out of range, e.g. `config.trainer.checkpoint_every=0`,
        and every field still `REQUIRED`.
    """
    problems = [
        f"config.{key} is required (set --config.{key}=...)" for key in _keys(config) if _value(config, key) == REQUIRED
    ]
    for key, minimum in _MINIMUMS.items():
        section, name = key.split(".")
        value = config[section][name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            problems.append(f"config.{key}={value!r} (must be an integer >= {minimum})")
    impl = config.get("attention_impl", "auto")
    if impl not in ATTENTION_IMPLEMENTATIONS:
        problems.append(f"config.attention_impl={impl!r} (one of {', '.join(ATTENTION_IMPLEMENTATIONS)})")
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))


_SECTION = (Mapping, ml_collections.ConfigDict)  # a ConfigDict is no Mapping


def _keys(config: Mapping, prefix: str = "") -> Iterator[str]:
    """Every dotted key of `config`, sections included."""
    for name, value in config.items():
        yield prefix + name
        if isinstance(value, _SECTION):
            yield from _keys(value, prefix + name + ".")


def _value(config: Mapping, key: str) -> object:
    node = config
    for name in key.split("."):
        node = node[name]
    return node


def has_key(config: Mapping, key: str) -> bool:
    """Whether the dotted `key` (`trainer.num_steps`) names a field or section of `config`."""
    node = config
    for name in key.split("."):
        if not isinstance(node, _SECTION) or name not in node:
            return False
        node = node[name]
    return True


def closest_key(config: Mapping, key: str) -> str | None:
    """The dotted key of `config` most like `key` (a misspelling or a missing section), if any."""
    matches = difflib.get_close_matches(key, list(_keys(config)), n=1)
    return matches[0] if matches else None


def adamw_config(
    lr: float,
    *,
    b1: float = 0.8,
    b2: float = 0.99,
    weight_decay: float = 1e-3,
    inv_gamma: float = 2e5,
    power: float = 0.5,
    warmup: float = 0.999,
) -> ml_collections.ConfigDict:
    """AdamW with the reference's InverseLR schedule (stable-audio-tools' InverseLR defaults)."""
    return ml_collections.ConfigDict(
        dict(
            lr=lr,
            b1=b1,
            b2=b2,
            weight_decay=weight_decay,
            inv_gamma=inv_gamma,
            power=power,
            warmup=warmup,
            grad_clip=0.0,
        )
    )


def diffusion_optimizer_config(lr: float, **adamw: float) -> ml_collections.ConfigDict:
    """`adamw_config(lr, **adamw)` plus the diffusion task's `grad_accum_steps` (default 1):
    micro-batches per optimizer step, `data.batch_size` examples in all (it must divide it)."""
    c = adamw_config(lr, **adamw)
    c.grad_accum_steps = 1
    return c


def vae_config(model: dict, *, discriminator_filters: int) -> ml_collections.ConfigDict:
    """A VAE training config around the autoencoder architecture `model`.

    Loss weights, discriminator scales and optimizers follow the SA2/SAO recipe
    (stable-audio-tools autoencoder training configs); tiny configs override sizes and learning rates. Memory knobs:
    `model.remat_policy` (default "none"; see `models/remat.py`) rematerialises the encoder
    and decoder blocks, and `optimizer.grad_accum_steps` (default 1) splits each global
    batch into that many micro-batches for both the generator and discriminator updates.
    """
    c = base_config()
    c.task = "vae"
    c.model = ml_collections.ConfigDict({"remat_policy": "none", **model})

    c.discriminator = ml_collections.ConfigDict(
        dict(
            filters=discriminator_filters,
            n_ffts=(2048, 1024, 512, 256, 128),
            hop_lengths=(512, 256, 128, 64, 32),
            win_lengths=(2048, 1024, 512, 256, 128),
            freq_stride=2,
        )
    )

    c.loss = ml_collections.ConfigDict()
    c.loss.stft = ml_collections.ConfigDict(
        dict(
            fft_sizes=(2048, 1024, 512, 256, 128, 64, 32),
            hop_sizes=(512, 256, 128, 64, 32, 16, 8),
            perceptual_weighting=True,
            sample_rate=44100,
            sum_diff_weight=1.0,
            left_right_weight=0.5,
            convergence_over="batch",  # "signal": per-crop ratio as in stable-audio-tools >= 0.0.17
        )
    )
    c.loss.kl_weight = 1e-4
    c.loss.adversarial_weight = 0.1
    c.loss.feature_matching_weight = 5.0
    c.loss.warmup_steps = 0  # adversarial + feature-matching terms start here
    c.loss.warmup_mode = "full"  # "adv": the discriminator trains during warm-up too

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.generator = adamw_config(1.5e-4)
    c.optimizer.discriminator = adamw_config(3e-4)
    # Micro-batches per generator / discriminator update (`data.batch_size` examples in all;
    # it must divide it). Beside the two adamw sections, which schedules.adamw reads.
    c.optimizer.grad_accum_steps = 1

    c.ema = ml_collections.ConfigDict(dict(beta=0.9999, power=0.75))
    c.eval_use_ema = True
    c.eval_num_audio = 2
    return c


# The two reference autoencoder shapes (stable-audio-tools' SAO and SA 1.0 VAE configs).
SAO_AUTOENCODER = dict(
    io_channels=2,
    latent_dim=64,
    strides=(2, 4, 4, 8, 8),
    encoder_channels=128,
    encoder_multipliers=(1, 1, 2, 4, 8, 16),
    decoder_channels=128,
    decoder_multipliers=(1, 1, 2, 4, 8, 16),
    encoder_out_channels=None,
    encoder_projection=False,
    snake_beta=True,
    decoder_final_bias=False,
    final_tanh=False,
)
SA1_AUTOENCODER = dict(
    io_channels=2,
    latent_dim=64,
    strides=(4, 4, 8, 8),
    encoder_channels=128,
    encoder_multipliers=(1, 2, 4, 8, 16),
    decoder_channels=96,
    decoder_multipliers=(1, 2, 4, 8, 16),
    encoder_out_channels=2048,
    encoder_projection=True,
    snake_beta=False,
    decoder_final_bias=True,
    final_tanh=True,
)


def clap_config(text: dict, audio: dict, *, embed_dim: int = 512) -> ml_collections.ConfigDict:
    """A CLAP training config around the text tower `text` (`TextEncoderConfig` fields) and the
    audio tower `audio` (`HTSATConfig` fields).

    Crops are exactly the audio tower's input window (`HTSATConfig.num_samples`), resampled
    to its rate. AdamW at 1e-4 with weight decay 0.2 (wd on all weights, a simplification)
    follows LAION-CLAP's recipe; the EMA weights are what the conditioner uses.

    Memory knobs (see `training/clap_task.py`): `model.remat_policy` ("none" by default; one
    of `remat.REMAT_CHOICES`) and `optimizer.grad_accum_steps` (1 by default; the gradient
    cache over that many micro-batches, dividing `data.batch_size`).
    """
    from stable_audio_jax.models.htsat import HTSATConfig

    audio_config = HTSATConfig.from_dict(audio)
    c = base_config()
    c.task = "clap"
    c.model = ml_collections.ConfigDict(
        dict(text=dict(text), audio=dict(audio), embed_dim=embed_dim, remat_policy="none")
    )
    c.text = ml_collections.ConfigDict(
        dict(
            tokenizer="",  # tokenizer.json (or a folder with vocab.json+merges.txt / vocab.txt)
            max_length=77,  # tokens per prompt, padded / truncated (the CLAP tokenizer's length)
        )
    )
    c.data.sample_rate = audio_config.sample_rate
    c.data.sample_size = audio_config.num_samples
    c.optimizer = adamw_config(1e-4, b1=0.9, b2=0.99, weight_decay=0.2, inv_gamma=1e6, warmup=0.99)
    c.optimizer.grad_accum_steps = 1
    c.ema = ml_collections.ConfigDict(dict(beta=0.999, power=0.75))
    c.eval_use_ema = True
    return c


def tiny_diffusion_recipe(c: ml_collections.ConfigDict) -> None:
    """The CPU demo's diffusion training recipe, shared by the tiny U-Net and DiT configs:
    latents of the tiny 64x VAE, batch 8, AdamW 1e-3, a short EMA, 2000 steps."""
    c.pretransform.downsampling_ratio = 64
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.data.cache_bytes = 2 * 2**30  # the demo's ~450 pre-encoded windows (~1 GiB) stay in memory
    c.optimizer = diffusion_optimizer_config(1e-3, b1=0.9, b2=0.99, weight_decay=1e-3, inv_gamma=1e6, warmup=0.95)
    c.ema.beta = 0.99
    c.sampling.steps = 100
    c.trainer.num_steps = 2000
    c.trainer.log_every = 10
    c.trainer.eval_every = 1000
    c.trainer.checkpoint_every = 500


def diffusion_config(
    unet: dict | None = None,
    *,
    dit: dict | None = None,
    timing_kind: str = "table",
    text_features_dim: int | None = None,
    global_timing: bool = False,
    text_tokens: int | None = None,
    objective: str = "v",
) -> ml_collections.ConfigDict:
    """A latent-diffusion training config around the U-Net `unet` (`UNetConfig` fields) or
    the DiT `dit` (`DiTConfig` fields; it also needs `text_tokens`), see
    `LatentDiffusionConfig` for the conditioning options.

    Training reads pre-encoded shards (`data/pre_encode.py`); `pretransform` names the VAE
    and CLAP runs they were made with, which sampling loads again. Objective and recipe
    follow the paper (arXiv 2402.04825): v-objective, cosine schedule, continuous t, 10% conditioning
    dropout, EMA, AdamW with the InverseLR schedule. `objective="rectified_flow"` trains the
    same network on the straight path instead and samples with the flow samplers.
    """
    c = base_config()
    c.task = "diffusion"
    if (unet is None) == (dit is None):
        raise ValueError("give exactly one backbone: unet or dit")
    backbone = dict(unet=dict(unet)) if unet is not None else dict(dit=dict(dit), text_tokens=text_tokens)
    c.model = ml_collections.ConfigDict(
        dict(
            **backbone,
            timing_kind=timing_kind,
            max_seconds=512,
            global_timing=global_timing,
            text_features_dim=text_features_dim,
            frame_seconds=0.0,
            objective=objective,
        )
    )
    c.pretransform = ml_collections.ConfigDict(
        dict(
            vae_dir="",  # run directory of the VAE that encoded the shards (used by sampling)
            clap_dir="",  # run directory of the CLAP whose text features the shards hold
            downsampling_ratio=1024,  # audio samples per latent frame
            latent_scale=1.0,  # latents are multiplied by this before diffusion
        )
    )
    # Training times (`diffusion/objective.py`): "uniform" (stratified), "logit_normal",
    # "trunc_logit_normal" or "log_snr" (mean/std of the log-SNR), then the optional shift.
    c.diffusion = ml_collections.ConfigDict(
        dict(
            cfg_dropout=0.1,
            timestep_sampler="uniform",
            mean_logsnr=-1.2,
            std_logsnr=2.0,
            distribution_shift=dict(
                enabled=False, base_shift=0.5, max_shift=1.15, min_length=256, max_length=4096, use_sine=False
            ),
            # Read by an inpainting-conditioned model (`inpainting_model`): its random
            # training masks' (random segments, full, causal) odds, `diffusion/inpaint_masks.py`.
            inpaint_masks=dict(
                mask_type_probabilities=inpaint_masks.DEFAULT_PROBABILITIES,
                max_mask_segments=inpaint_masks.DEFAULT_MAX_SEGMENTS,
            ),
        )
    )
    training_sampling = dataclasses.replace(sampling_config.TRAINING, sampler=None, sigma_max=None, objective=objective)
    c.sampling = ml_collections.ConfigDict(training_sampling.to_dict())
    c.optimizer = diffusion_optimizer_config(
        4e-5, b1=0.9, b2=0.999, weight_decay=1e-3, inv_gamma=1e6, power=0.5, warmup=0.99
    )
    c.ema = ml_collections.ConfigDict(dict(beta=0.9999, power=0.75))
    c.lora = lora_config()
    c.trainer.eval_every = 1000
    return c


def inpainting_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Make `c`'s DiT inpainting-conditioned (stable-audio-tools' `diffusion_cond_inpaint`):
    it also reads the masked latents and the mask, joined to its input in that order, and
    training draws random masks (`config.diffusion.inpaint_masks`)."""
    if "dit" not in c.model:
        raise ValueError("an inpainting-conditioned model needs a DiT backbone")
    c.model.input_concat_ids = ("inpaint_masked_input", "inpaint_mask")
    c.model.dit.input_concat_dim = c.model.dit.io_channels + 1
    return c


def lora_config() -> ml_collections.ConfigDict:
    """Low-rank adapters (`lora.py`): rank 0 trains the whole model; rank > 0 trains only
    adapters on the kernels matching `targets` over the frozen weights of `init_from`, kept in
    `base_dtype`."""
    return ml_collections.ConfigDict(
        dict(rank=0, alpha=16.0, targets=lora.DEFAULT_TARGETS, kind="lora", base_dtype="bfloat16")
    )


def arc_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`c`, a rectified-flow diffusion config, as ARC post-training (`training/arc_task.py`):
    the `arc` section holds the discriminator's depth and head, both players' time
    distributions (`diffusion/flow.py` TIMESTEP_SAMPLERS), the loss weights and the
    discriminator's optimizer; `config.optimizer` stays the generator's. Sampling becomes the
    few-step setting (8 pingpong steps, no CFG); `config.init_from` must name the RF model."""
    c.task = "arc"
    c.arc = ml_collections.ConfigDict(
        dict(
            discriminator_layer=1,  # the last backbone block the discriminator runs (0-based)
            soft_clip_scale=0.0,  # > 0: scores bounded by scale * tanh(s / scale)
            generator_times="logit_normal",
            discriminator_times="logit_normal",
            contrastive=True,
            generator_weight=1.0,
            discriminator_weight=1.0,
            contrastive_weight=1.0,
            optimizer=adamw_config(1e-4, b1=0.9, b2=0.99, weight_decay=0.0, warmup=0.0),
        )
    )
    c.sampling.update(sampling_config.FEW_STEP_FLOW.to_dict())
    return c
