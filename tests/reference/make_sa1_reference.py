"""Writes the Stable Audio 1.0 fixtures of tests/test_sa1_parity.py (tests/fixtures/sa1_small/).

Run once, with the PyTorch reference (stable-audio-tools 0.0.19, k-diffusion, transformers,
torch CPU; no flash-attn, so the U-Net's attention is the float32 einsum path):

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sa1_reference.py

The model is stable-audio-tools' own `create_model_from_config` of an SA 1.0-structured
`model_config.json` at a tiny size: an `adp_cfg_1d` U-Net (`UNetCFG1d`: widths 16/32/32,
factors 1 and 2, a transformer at level 1 and in the bottleneck, 2 heads, mapping
multiplier 2, 16-d context of 77 text + 2 timing tokens), two `int` timing conditioners
and a small Oobleck VAE (SA 1.0's own VAE is DAC-based, which the converter does not
import). The CLAP prompt conditioner would need `laion_clap` and downloads, so the model is
built without it; that changes no tensor of the checkpoint (the reference keeps CLAP
outside it). Its text branch is a randomly initialised tiny `transformers.RobertaModel`
instead, saved as a LAION-CLAP checkpoint would hold it (`{"state_dict":
{"module.text_branch.*", ...}}`, plus a few non-text tensors the importer must ignore),
with a RoBERTa folder (`config.json`, byte-level BPE `vocab.json` + `merges.txt` of the 256
byte symbols) for the architecture and the tokenizer.

Every parameter is randomised and rounded to float16 before the reference runs, and
stored in float16 (the float32 copies a converter makes are exactly the weights used).

Files in tests/fixtures/sa1_small/:
  model.safetensors, model_config.json   the diffusion checkpoint (unwrapped state dict)
  clap.ckpt                              torch.save of the CLAP-style state dict
  roberta/                               config.json, vocab.json, merges.txt
  reference.npz                          float32 unless noted, PyTorch layout `[batch, channels, frames]`:
    x [2, 4, 16], t [2], seconds_start, seconds_total int [2];
    text [2, 77, 16], text_mask bool [2, 77] (5 and 12 real tokens: padded prompts);
    negative [2, 77, 16], negative_mask bool [2, 77] (8 and 3 real tokens: one longer and
      one shorter than its prompt);
    v_plain        cfg_scale 1: the padded prompts alone,
    v_null         cfg_scale 1 with cfg_dropout_prob 1: the learned null context,
    v_cfg          cfg_scale 6, batch CFG against the null context, no rescale,
    v_cfg_rescale  the same with rescale_cfg (UNetCFG1d's default scale_phi 0.4),
    v_neg_rescale  cfg_scale 6, rescale, the negative prompt as the unconditional half;
    prompts str [3]; input_ids int [3, 77], attention_mask bool [3, 77] (transformers'
      RobertaTokenizer, as LAION-CLAP: padding="max_length", truncation, 77 tokens);
    text_features [3, 77, 16]: hidden_states[-2] of the RobertaModel (the CLAP
      conditioner's feature_layer_ix=-2).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from stable_audio_tools.models.factory import create_model_from_config

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sa1_small"))
COND_DIM, LATENT, TEXT_TOKENS = 16, 4, 77
PROMPTS = (
    "",
    "lo-fi piano, 80 BPM",
    "BPM: 120 | Genre: Synth pop | Instruments: Square lead, Drums | Mood: upbeat "
    "| a prompt long enough to be truncated at seventy-seven tokens",
)


def model_config() -> dict:
    vae = dict(channels=4, c_mults=[1, 2], strides=[2, 4])
    unet = dict(
        in_channels=LATENT,
        channels=16,
        multipliers=[1, 2, 2],
        factors=[1, 2],
        num_blocks=[1, 1],
        attentions=[0, 1, 1],
        attention_heads=2,
        attention_multiplier=2,
        resnet_groups=4,
        kernel_multiplier_downsample=2,
        use_nearest_upsample=False,
        use_skip_scale=True,
        use_context_time=True,
        context_features_multiplier=2,
        context_embedding_features=COND_DIM,
        context_embedding_max_length=TEXT_TOKENS + 2,
    )
    return {
        "model_type": "diffusion_cond",
        "sample_size": 512,
        "sample_rate": 44100,
        "audio_channels": 2,
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "iterate_batch": True,
                "config": {
                    "encoder": {
                        "type": "oobleck",
                        "config": dict(in_channels=2, latent_dim=2 * LATENT, use_snake=True, **vae),
                    },
                    "decoder": {
                        "type": "oobleck",
                        "config": dict(out_channels=2, latent_dim=LATENT, use_snake=True, final_tanh=True, **vae),
                    },
                    "bottleneck": {"type": "vae"},
                    "latent_dim": LATENT,
                    "downsampling_ratio": 8,
                    "io_channels": 2,
                },
            },
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "clap_text",
                        "config": {
                            "audio_model_type": "HTSAT-base",
                            "enable_fusion": True,
                            "clap_ckpt_path": "clap.ckpt",
                            "use_text_features": True,
                            "feature_layer_ix": -2,
                        },
                    },
                    {"id": "seconds_start", "type": "int", "config": {"min_val": 0, "max_val": 512}},
                    {"id": "seconds_total", "type": "int", "config": {"min_val": 0, "max_val": 512}},
                ],
                "cond_dim": COND_DIM,
            },
            "diffusion": {
                "type": "adp_cfg_1d",
                "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                "config": unet,
            },
            "io_channels": LATENT,
        },
    }


GAINS = (
    "norm.weight",
    "norm_context.weight",
    "LayerNorm.weight",
    "groupnorm.weight",
    "transformer.to_in.0.weight",
    "weight_g",
)


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Fresh float16-exact values for every parameter: norm gains around 1, tables and
    Fourier frequencies ~ N(0, 1), other vectors small, kernels ~ N(0, 1/fan_in)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith(GAINS):
                value = 1.0 + 0.2 * noise
            elif name.endswith("weights") or "embedd" in name:
                value = noise
            elif p.ndim == 1:
                value = 0.2 * noise
            else:
                value = noise / float(np.prod(p.shape[1:])) ** 0.5
            p.copy_(value.half().float())


def padded(generator: torch.Generator, lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random text features `[batch, 77, 16]` and their mask with `lengths` real tokens."""
    features = torch.randn(len(lengths), TEXT_TOKENS, COND_DIM, generator=generator).half().float()
    mask = torch.arange(TEXT_TOKENS)[None, :] < torch.tensor(lengths)[:, None]
    return features, mask


def write_roberta(generator: torch.Generator) -> dict:
    """The tiny RoBERTa folder, the CLAP-style checkpoint, and the text-feature goldens."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = os.path.join(OUT, "roberta")
    os.makedirs(folder, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=COND_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=TEXT_TOKENS + 3,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    config.to_json_file(os.path.join(folder, "config.json"))
    model = RobertaModel(config).eval()
    randomise(model, generator)
    tokenizer = RobertaTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    tokens = tokenizer(
        list(PROMPTS), padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], output_hidden_states=True
        )["hidden_states"][-2]
    state = {f"module.text_branch.{k}": v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    # A LAION-CLAP checkpoint holds more than the text branch; the importer must ignore it.
    state["module.text_projection.0.weight"] = torch.randn(8, COND_DIM, generator=generator).half()
    state["module.audio_branch.patch_embed.proj.weight"] = torch.randn(4, 1, 2, 2, generator=generator).half()
    state["module.logit_scale_a"] = torch.tensor(2.0)
    torch.save({"state_dict": state, "epoch": 1}, os.path.join(OUT, "clap.ckpt"))
    return dict(
        prompts=np.array(PROMPTS),
        input_ids=tokens["input_ids"].numpy(),
        attention_mask=tokens["attention_mask"].numpy().astype(bool),
        text_features=hidden.numpy(),
    )


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(7)
    config = model_config()
    buildable = json.loads(json.dumps(config))  # without the CLAP conditioner (laion_clap, downloads)
    buildable["model"]["conditioning"]["configs"] = buildable["model"]["conditioning"]["configs"][1:]
    model = create_model_from_config(buildable).eval()
    randomise(model, generator)
    state = {k: v.detach().contiguous().half() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(OUT, "model_config.json"), "w") as f:
        json.dump(config, f, indent=2)

    batch, frames = 2, 16
    x = torch.randn(batch, LATENT, frames, generator=generator)
    t = torch.tensor([0.23, 0.81])
    seconds_start, seconds_total = [3, 0], [10, 600]  # 600 is clamped to the table's last row
    text, text_mask = padded(generator, (5, 12))
    negative, negative_mask = padded(generator, (8, 3))
    with torch.no_grad():
        start = model.conditioner.conditioners["seconds_start"](seconds_start, device="cpu")
        total = model.conditioner.conditioners["seconds_total"](seconds_total, device="cpu")

        def context(features, mask):
            tokens = torch.cat([features, start[0], total[0]], dim=1)
            return tokens, torch.cat([mask.float(), start[1], total[1]], dim=1)

        cond, cond_mask = context(text, text_mask)
        neg, neg_mask = context(negative, negative_mask)
        net = model.model  # UNetCFG1DWrapper
        common = dict(cross_attn_cond=cond, cross_attn_mask=cond_mask, batch_cfg=True)
        outputs = dict(
            v_plain=net(x, t, cfg_scale=1.0, **common),
            v_null=net(x, t, cfg_scale=1.0, cfg_dropout_prob=1.0, **common),
            v_cfg=net(x, t, cfg_scale=6.0, rescale_cfg=False, **common),
            v_cfg_rescale=net(x, t, cfg_scale=6.0, rescale_cfg=True, **common),
            v_neg_rescale=net(
                x,
                t,
                cfg_scale=6.0,
                rescale_cfg=True,
                negative_cross_attn_cond=neg,
                negative_cross_attn_mask=neg_mask,
                **common,
            ),
        )
    arrays = dict(
        x=x.numpy(),
        t=t.numpy(),
        seconds_start=np.array(seconds_start),
        seconds_total=np.array(seconds_total),
        text=text.numpy(),
        text_mask=text_mask.numpy(),
        negative=negative.numpy(),
        negative_mask=negative_mask.numpy(),
        **{k: v.numpy() for k, v in outputs.items()},
    )
    arrays.update(write_roberta(generator))
    np.savez_compressed(os.path.join(OUT, "reference.npz"), **arrays)
    print(
        json.dumps(
            {
                "tensors": len(state),
                "parameters": sum(p.numel() for p in model.parameters()),
                "unet": sum(p.numel() for p in model.model.parameters()),
                "conditioner": sum(p.numel() for p in model.conditioner.parameters()),
                "pretransform": sum(p.numel() for p in model.pretransform.parameters()),
                **{k: round(float(v.abs().max()), 3) for k, v in outputs.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
