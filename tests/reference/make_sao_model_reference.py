"""Builds a whole SAO-layout checkpoint with the PyTorch reference and random weights.

    # the small fixture of tests/test_sao_checkpoint.py (tests/fixtures/sao_small/)
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_model_reference.py
    # Stable Audio Open's full size (1.21 B params, 4.9 GB) plus a t5-base-shaped T5 folder
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_model_reference.py \
        --size=full --output_dir=/tmp/sao_full
    # Stable Audio Open Small's layout at a tiny size, with an 8-step pingpong sample
    # (tests/test_sao_open_small.py, tests/fixtures/sao_open_small/)
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_model_reference.py \
        --variant=open_small
    # the inpainting model type at a tiny size, with forward outputs on mask inputs and
    # draws of the training mask distribution (tests/test_inpaint_model.py, fixtures/sao_inpaint/)
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sao_model_reference.py \
        --variant=inpaint

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

`--variant=open_small` writes Stable Audio Open Small's `model_config.json` structure
instead (arXiv 2505.08175; Hugging Face `stabilityai/stable-audio-open-small`): a
`seconds_total` number conditioner only (max 256; no `seconds_start`), an `rf_denoiser`
DiT whose prompt tokens are projected to its width (`project_cond_tokens` left at the
reference's default, true) and whose attention normalises q and k
(`attn_kwargs.qk_norm = "ln"`). Next to the checkpoint it writes `reference.npz`, the
reference's own `generate_diffusion_cond` with SAO Small's defaults (8 pingpong steps,
cfg_scale 1) for two padded prompts:
  prompts str [2], seconds_total [2]; text [2, L, 32], text_mask bool [2, L]: T5 of
    tests/fixtures/t5_relu in float32 with `T5Conditioner.forward`'s tokenisation and
    masking (the conditioner itself casts T5 to float16 and loads by hub name, so the
    same computation is written out here and passed as the prompt's conditioning tensor);
  noise [2, C, F] (the draw after `torch.manual_seed(seed)`, as generate_diffusion_cond's),
    step_noise [8, 2, C, F] (pingpong's per-step `torch.randn_like`, pre-drawn);
  x [2, C, F], t [2], v [2, C, F]: one forward of the DiT wrapper on those conditions;
  latents [2, C, F] (`return_latents=True`) and audio [2, 2, samples]: the sample;
  parameters int: the model's parameter count. PyTorch layout `[batch, channels, frames]`.

`--variant=inpaint` writes the SAO structure as a `diffusion_cond_inpaint` model: the DiT
also reads `input_concat_ids = ["inpaint_mask", "inpaint_masked_input"]` (1 + C channels
joined to its input, `input_concat_dim`). Its `reference.npz`:
  text, text_mask, seconds_start [2], seconds_total [2] (as above);
  x [2, C, F], t [2], inpaint_mask [2, 1, F], inpaint_masked_input [2, C, F] (from the
    reference's `random_inpaint_mask` on random latents with padding);
  v [2, C, F]: the DiT wrapper's forward with those inputs (cfg_scale 1), v_cfg: with
    cfg_scale 4 (both branches see the same inpainting inputs);
  mask_stats_bits uint8 (np.packbits of [draws, 4, 32] masks), mask_stats_kinds [draws, 4]
    (the `MaskType` value each example drew, recorded by wrapping `random.choices`),
    mask_stats_real [4] (real frames per row of the padding mask): `random_inpaint_mask`
    with its defaults, `random.seed(0)`, called `draws` times on a batch of 4 x 32 frames.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil

import numpy as np
import torch
from predrawn_noise import PreDrawnRandnLike  # tests/reference/, the script's own folder
from safetensors.torch import save_file
from stable_audio_tools.models.factory import create_model_from_config

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))


def model_config(size: str, variant: str = "sao") -> dict:
    """SAO's model_config.json, or the same structure at a tiny size; `variant="open_small"`
    gives SAO Small's structure (see the module docstring)."""
    if size == "full":
        vae = dict(channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], latent_dim=64)
        dit = dict(embed_dim=1536, depth=24, num_heads=24)
        cond_dim, sample_size, ratio = 768, 2097152, 2048
    else:  # cond_dim 32 = the T5 fixture's d_model; head dim 32 (the reference's RoPE needs >= 32)
        vae = dict(channels=8, c_mults=[1, 2, 4], strides=[2, 4, 8], latent_dim=8)
        dit = dict(embed_dim=64, depth=1, num_heads=2)
        cond_dim, sample_size, ratio = 32, 8192, 64
    latent = vae.pop("latent_dim")
    config = {
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
    if variant == "open_small":
        conditioning = config["model"]["conditioning"]
        conditioning["configs"] = [
            {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 16}},
            {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}},
        ]
        diffusion = config["model"]["diffusion"]
        diffusion.update(
            cross_attention_cond_ids=["prompt", "seconds_total"],
            global_cond_ids=["seconds_total"],
            diffusion_objective="rf_denoiser",
        )
        del diffusion["config"]["project_cond_tokens"]  # the reference's default (true)
        diffusion["config"].update(global_cond_dim=cond_dim, depth=2, attn_kwargs={"qk_norm": "ln"})
    if variant == "inpaint":
        config["model_type"] = "diffusion_cond_inpaint"
        diffusion = config["model"]["diffusion"]
        diffusion["input_concat_ids"] = ["inpaint_mask", "inpaint_masked_input"]
        diffusion["config"]["input_concat_dim"] = latent + 1
    return config


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


def t5_prompt_tensors(prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`T5Conditioner.forward` (conditioners.py) on the T5 fixture, in float32."""
    from transformers import AutoTokenizer, T5EncoderModel

    folder = os.path.join(FIXTURES, "t5_relu")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    t5 = T5EncoderModel.from_pretrained(folder).eval()
    encoded = tokenizer(prompts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    mask = encoded["attention_mask"].to(torch.bool)
    with torch.no_grad():
        embeddings = t5(input_ids=encoded["input_ids"], attention_mask=mask)["last_hidden_state"]
    return embeddings.float() * mask.unsqueeze(-1).float(), mask


def open_small_sample(model, config: dict, seed: int = 7, steps: int = 8) -> dict:
    """SAO Small's default generation (8 pingpong steps, no CFG) with the reference's code."""
    from stable_audio_tools.inference import sampling
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    prompts = ["a short drum loop", "soft piano chords over rain, 90 bpm"]
    seconds_total = [1.0, 3.0]
    max_length = config["model"]["conditioning"]["configs"][0]["config"]["max_length"]
    text, text_mask = t5_prompt_tensors(prompts, max_length)
    assert not bool(text_mask.all()), "the prompts should be padded"
    timing = model.conditioner([{"seconds_total": s} for s in seconds_total], "cpu")
    tensors = {"prompt": (text, text_mask), **timing}
    sample_size = config["sample_size"]
    frames = sample_size // model.pretransform.downsampling_ratio
    torch.manual_seed(seed)  # what generate_diffusion_cond draws first
    noise = torch.randn([len(prompts), model.io_channels, frames])
    step_noise = torch.randn((steps,) + tuple(noise.shape), generator=torch.Generator().manual_seed(seed + 1))
    kwargs = dict(
        steps=steps,
        cfg_scale=1.0,
        conditioning_tensors=tensors,
        batch_size=len(prompts),
        sample_size=sample_size,
        seed=seed,
        device="cpu",
        sampler_type="pingpong",
    )
    out = {}
    original = sampling.torch.randn_like
    try:
        for name, return_latents in (("latents", True), ("audio", False)):
            sampling.torch.randn_like = randn_like = PreDrawnRandnLike(step_noise)
            with torch.no_grad():
                out[name] = generate_diffusion_cond(model, return_latents=return_latents, **kwargs)
            assert randn_like.calls == steps
    finally:
        sampling.torch.randn_like = original
    inputs = model.get_conditioning_inputs(tensors)
    x = torch.randn(noise.shape, generator=torch.Generator().manual_seed(seed + 2))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        out["v"] = model.model(x, t, **inputs, cfg_scale=1.0)
    arrays = dict(text=text, text_mask=text_mask, noise=noise, step_noise=step_noise, x=x, t=t, **out)
    arrays = {k: v.numpy() for k, v in arrays.items()}
    return dict(arrays, prompts=np.array(prompts), seconds_total=np.array(seconds_total, np.float32))


def inpaint_sample(model, config: dict, seed: int = 11, draws: int = 4000) -> dict:
    """The inpainting model's forward on mask inputs, and draws of the training masks."""
    import random

    from stable_audio_tools.models import inpainting

    prompts = ["a short drum loop", "soft piano chords over rain, 90 bpm"]
    max_length = config["model"]["conditioning"]["configs"][0]["config"]["max_length"]
    text, text_mask = t5_prompt_tensors(prompts, max_length)
    seconds_start, seconds_total = [0.0, 0.5], [1.0, 3.0]
    timing = model.conditioner(
        [{"seconds_start": a, "seconds_total": b} for a, b in zip(seconds_start, seconds_total)], "cpu"
    )
    frames = config["sample_size"] // model.pretransform.downsampling_ratio
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((2, model.io_channels, frames), generator=generator)
    x = torch.randn((2, model.io_channels, frames), generator=generator)
    padding = torch.ones((2, frames))
    padding[1, frames * 3 // 4 :] = 0
    random.seed(seed)
    masked_input, mask = inpainting.random_inpaint_mask(latents, padding, mask_type_probabilities=[0.5, 0.0, 0.5])
    assert 0 < float(mask.mean()) < 1, "the masks should hide some frames and keep others"
    tensors = {"prompt": (text, text_mask), **timing, "inpaint_mask": [mask], "inpaint_masked_input": [masked_input]}
    inputs = model.get_conditioning_inputs(tensors)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        v = model.model(x, t, **inputs, cfg_scale=1.0)
        v_cfg = model.model(x, t, **inputs, cfg_scale=4.0, batch_cfg=True, rescale_cfg=False)

    stats_real = [32, 20, 5, 0]
    stats_padding = torch.zeros((4, 32))
    for row, real in enumerate(stats_real):
        stats_padding[row, :real] = 1
    kinds = []
    original = random.choices

    def recording_choices(*args, **kwargs):
        chosen = original(*args, **kwargs)
        kinds.append(chosen[0])
        return chosen

    random.seed(0)
    random.choices = recording_choices
    try:
        masks = [inpainting.random_inpaint_mask(torch.zeros((4, 1, 32)), stats_padding)[1][:, 0] for _ in range(draws)]
    finally:
        random.choices = original
    masks = torch.stack(masks).numpy().astype(np.uint8)  # [draws, 4, 32]
    arrays = dict(
        text=text,
        text_mask=text_mask,
        x=x,
        t=t,
        inpaint_mask=mask,
        inpaint_masked_input=masked_input,
        v=v,
        v_cfg=v_cfg,
    )
    return dict(
        {k: a.numpy() for k, a in arrays.items()},
        seconds_start=np.array(seconds_start, np.float32),
        seconds_total=np.array(seconds_total, np.float32),
        mask_stats_bits=np.packbits(masks),
        mask_stats_kinds=np.array(kinds, np.int8).reshape(draws, 4),
        mask_stats_real=np.array(stats_real, np.int32),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--variant", choices=("sao", "open_small", "inpaint"), default="sao")
    parser.add_argument("--output_dir", default=None, help="default: fixtures/sao_small, sao_open_small or sao_inpaint")
    args = parser.parse_args()
    if args.output_dir is None:
        folder = {"sao": "sao_small", "open_small": "sao_open_small", "inpaint": "sao_inpaint"}[args.variant]
        args.output_dir = os.path.join(FIXTURES, folder)
    config = model_config(args.size, args.variant)
    buildable = copy.deepcopy(config)  # without the T5 conditioner (it would download t5-base)
    buildable["model"]["conditioning"]["configs"] = buildable["model"]["conditioning"]["configs"][1:]
    model = create_model_from_config(buildable).eval()
    randomise(model, seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if args.size == "small":  # float16 parameters keep the fixture small (buffers stay as built)
        with torch.no_grad():  # the reference then runs on exactly the stored values
            for p in model.parameters():
                p.copy_(p.half().float())
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
    if args.variant == "open_small":
        np.savez(os.path.join(args.output_dir, "reference.npz"), **open_small_sample(model, config), parameters=params)
    if args.variant == "inpaint":
        np.savez_compressed(
            os.path.join(args.output_dir, "reference.npz"), **inpaint_sample(model, config), parameters=params
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
