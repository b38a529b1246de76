"""Builds a whole SAO-layout checkpoint with the PyTorch reference and random weights.

    # the small fixture of tests/test_sao_checkpoint.py (tests/fixtures/sao_small/)
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_model_reference.py
    # Stable Audio Open's full size (1.21 B params, 4.9 GB) plus a t5-base-shaped T5 folder
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_model_reference.py \
        --size=full --output_dir=/tmp/sao_full

The model comes from stable-audio-tools' own `create_model_from_config` with SAO's
`model_config.json` structure (Oobleck VAE, number conditioners for seconds_start/total,
continuous-transformer DiT). The reference's T5 conditioner would download `t5-base`, so
the model is built without the prompt conditioner; that changes no tensor in the
checkpoint (SAO keeps T5 outside it). The written `model_config.json` names
the T5 prompt conditioner, as SAO's does. Every parameter is randomised (the
zero-initialised ones too), `model.safetensors` holds the unwrapped state dict, and the
script prints the parameter count the converted tree must reproduce.

For `--size=full` a `t5/` folder is written next to it: a randomly initialised
`transformers` T5EncoderModel of t5-base's shape (`save_pretrained`) with the small
offline tokenizer of tests/fixtures/t5_relu (real t5-base files are not available offline).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from stable_audio_tools.models.factory import create_model_from_config

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))


def model_config(size: str) -> dict:
    """SAO's model_config.json, or the same structure at a tiny size."""
    if size == "full":
        vae = dict(channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], latent_dim=64)
        dit = dict(embed_dim=1536, depth=24, num_heads=24)
        cond_dim, sample_size, ratio = 768, 2097152, 2048
    else:  # cond_dim 32 = the T5 fixture's d_model; head dim 32 (the reference's RoPE needs >= 32)
        vae = dict(channels=8, c_mults=[1, 2, 4], strides=[2, 4, 8], latent_dim=8)
        dit = dict(embed_dim=64, depth=1, num_heads=2)
        cond_dim, sample_size, ratio = 32, 8192, 64
    latent = vae.pop("latent_dim")
    return {
        "model_type": "diffusion_cond",
        "sample_size": sample_size,
        "sample_rate": 44100,
        "audio_channels": 2,
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "iterate_batch": True,
                "config": {
                    "encoder": {
                        "type": "oobleck",
                        "requires_grad": False,
                        "config": dict(in_channels=2, latent_dim=2 * latent, use_snake=True, **vae),
                    },
                    "decoder": {
                        "type": "oobleck",
                        "config": dict(out_channels=2, latent_dim=latent, use_snake=True, final_tanh=False, **vae),
                    },
                    "bottleneck": {"type": "vae"},
                    "latent_dim": latent,
                    "downsampling_ratio": ratio,
                    "io_channels": 2,
                },
            },
            "conditioning": {
                "configs": [
                    {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
                    {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                    {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                ],
                "cond_dim": cond_dim,
            },
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                "global_cond_ids": ["seconds_start", "seconds_total"],
                "type": "dit",
                "config": dict(
                    io_channels=latent,
                    cond_token_dim=cond_dim,
                    global_cond_dim=2 * cond_dim,
                    project_cond_tokens=False,
                    transformer_type="continuous_transformer",
                    **dit,
                ),
            },
            "io_channels": latent,
        },
    }


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Fresh values for every parameter (gains around 1, kernels ~ N(0, 1/fan_in))."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith(("gamma", "weight_g")) or name.endswith((".alpha", ".beta")):
                p.copy_(0.2 * noise + (1.0 if name.endswith(("gamma", "weight_g")) else 0.0))
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            else:
                p.copy_(noise / float(p[0].numel()) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--output_dir", default=os.path.join(FIXTURES, "sao_small"))
    args = parser.parse_args()
    config = model_config(args.size)
    buildable = copy.deepcopy(config)  # without the T5 conditioner (it would download t5-base)
    buildable["model"]["conditioning"]["configs"] = buildable["model"]["conditioning"]["configs"][1:]
    model = create_model_from_config(buildable).eval()
    randomise(model, seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if args.size == "small":  # float16 parameters keep the fixture small (buffers stay as built)
        names = {name for name, _ in model.named_parameters()}
        state = {k: v.half() if k in names else v for k, v in state.items()}
    os.makedirs(args.output_dir, exist_ok=True)
    save_file(state, os.path.join(args.output_dir, "model.safetensors"))
    with open(os.path.join(args.output_dir, "model_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "tensors": len(state),
                "parameters": params,
                "dit": sum(p.numel() for p in model.model.parameters()),
                "conditioner": sum(p.numel() for p in model.conditioner.parameters()),
                "pretransform": sum(p.numel() for p in model.pretransform.parameters()),
            }
        )
    )
    if args.size == "full":
        from transformers import T5Config, T5EncoderModel

        t5_dir = os.path.join(args.output_dir, "t5")
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, feed_forward_proj="relu"
            )
        ).eval()
        t5.save_pretrained(t5_dir)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(FIXTURES, "t5_relu", name), t5_dir)
        print(json.dumps({"t5_parameters": sum(p.numel() for p in t5.parameters())}))


if __name__ == "__main__":
    main()
