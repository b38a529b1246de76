"""Fine-tuning the tiny SAO-layout fixture (`fixture_paths`), shared by `test_finetune` and
`test_lora`: the conversion and pre-encoding behind conftest's `converted` and `latents`
fixtures, the converter's params straight from the state dict, and the diffusion (and LoRA)
configs that start from the converted directory.
"""

from __future__ import annotations

import json

import ml_collections

from stable_audio_jax import config_lib, pretrained
from stable_audio_jax.convert import sao_checkpoint
from tests.fixture_paths import CHECKPOINT, MODEL_CONFIG, T5_DIR

WINDOW = 4096  # samples: 64 latent frames of the fixture's 64x VAE
BATCH = 8  # global batch: one row per device of the (2, 4) mesh


def convert_fixture(out: str) -> str:
    """The fixture converted to a pretrained directory `out` (what the `converted` fixture holds)."""
    sao_checkpoint.convert_checkpoint(CHECKPOINT, MODEL_CONFIG, out, t5_dir=T5_DIR, log=lambda _: None)
    return out


def pre_encode_fixture(converted: str, shards: str, out: str) -> tuple[str, dict]:
    """`shards` pre-encoded with the pretrained directory `converted` into `out`, one crop each
    (the `latents` fixture): the folder and the pre-encode report."""
    from stable_audio_jax.inference.pre_encode import pre_encode

    report = pre_encode(
        shards, out, pretrained_dir=converted, sample_size=WINDOW, num_crops=1, batch_size=BATCH, progress=False
    )
    return out, report


def converted_params(part: str) -> dict:
    """The converter's params of `part` ("diffusion" or "autoencoder") straight from the fixture's
    state dict (no Orbax)."""
    from stable_audio_jax.convert import sao_vae
    from stable_audio_jax.convert.state_dict import StateDictReader, load_state_dict

    with open(MODEL_CONFIG) as f:
        arch = sao_checkpoint.architecture_from_model_config(json.load(f))
    reader = StateDictReader(load_state_dict(CHECKPOINT), source=CHECKPOINT)
    if part == "diffusion":
        return sao_checkpoint.diffusion_params_from_state_dict(reader, arch)
    return sao_vae.autoencoder_params_from_state_dict(reader.scoped(sao_vae.DIFFUSION_PREFIX), arch.autoencoder)


def finetune_config(
    pretrained_dir: str, shards: str, init_from: str | None = None, **trainer
) -> ml_collections.ConfigDict:
    """A diffusion config of the pretrained directory's architecture, on a (2, 4) mesh, started
    from `init_from` (default: that directory)."""
    model = pretrained.read_pretrained_config(pretrained_dir)["model"]
    c = config_lib.diffusion_config(
        dit=model["dit"],
        timing_kind=model["timing_kind"],
        global_timing=model["global_timing"],
        text_tokens=model["text_tokens"],
    )
    c.model.max_seconds = model["max_seconds"]
    c.model.input_concat_ids = tuple(model.get("input_concat_ids", ()))
    c.init_from = pretrained_dir if init_from is None else init_from
    c.pretransform.downsampling_ratio = 64
    c.data.update(train_shards=shards, sample_size=WINDOW, batch_size=BATCH, worker_count=0)
    c.diffusion.cfg_dropout = 0.0
    c.optimizer = config_lib.diffusion_optimizer_config(
        3e-3, b1=0.9, b2=0.99, weight_decay=0.0, inv_gamma=1e6, warmup=0.0
    )
    c.mesh.shape = (2, 4, 1)
    c.trainer.update(dict(num_steps=8, log_every=1, eval_every=0, checkpoint_every=4, async_checkpointing=False))
    c.trainer.update(trainer)
    return c


def lora_config(converted: str, shards: str, **lora_fields) -> ml_collections.ConfigDict:
    """`finetune_config` with a rank-4 LoRA (6 steps, checkpoints at 3 and 6); `lora_fields`
    override `config.lora`."""
    config = finetune_config(converted, shards, num_steps=6, checkpoint_every=3)
    config.lora.update(dict(rank=4, alpha=4.0, **lora_fields))
    return config
