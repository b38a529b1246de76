"""Writes the T5 golden files: small random T5 checkpoints, tokenizers, and HF outputs.

`tests/test_t5.py` checks that `stable_audio_jax.convert.t5_checkpoint` + `T5Encoder`
reproduce what Hugging Face transformers computes. Real T5 weights and `spiece.model`
files are not available offline, so everything here is made on the spot,
deterministically:

- a T5-style `tokenizer.json` (Unigram trained with `tokenizers` on generated captions;
  `<pad>`=0, `</s>`=1, `<unk>`=2; Metaspace pre-tokenizer; `</s>` appended), and a T5-style
  `spiece.model` trained with `sentencepiece`;
- `t5_relu/`: `T5EncoderModel` with `feed_forward_proj="relu"` (original T5), heads * d_kv
  != d_model, saved as `config.json` + `model.safetensors` + the tokenizer;
- `t5_gated/`: a whole `T5ForConditionalGeneration` (encoder + 1 decoder layer, as the
  released t5-base checkpoint holds both) with `"gated-gelu"` (T5 v1.1), saved with
  `torch.save` as `pytorch_model.bin` (tied `shared` / `encoder.embed_tokens` both present);
- `t5_spiece/spiece.model`;
- `t5_reference.npz`: token ids from transformers' `T5TokenizerFast` / `T5Tokenizer` for
  `PROMPTS`, HF's relative-position buckets, and each model's `last_hidden_state` with the
  padded positions zeroed (what SAT's `T5Conditioner` hands on).

PyTorch and transformers are not project dependencies; run it in the reference venv:

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_t5_reference.py
    # once, to re-measure the parameter count the test pins:
    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_t5_reference.py --count_t5_base

(needs torch, transformers, tokenizers, safetensors, sentencepiece, protobuf; the files
were made with torch 2.13.0+cpu, transformers 5.23.0, tokenizers 0.23.3, sentencepiece 0.2.3).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")
MAX_LENGTH = 128
VOCAB_SIZE = 160  # model rows; the trained tokenizer has fewer ids

GENRES = (
    "ambient",
    "techno",
    "baroque chorale",
    "lo-fi hip hop",
    "synth pop",
    "jazz trio",
    "drum and bass",
    "folk ballad",
    "cinematic score",
    "house",
)
INSTRUMENTS = (
    "piano",
    "violin",
    "cello",
    "analog synth",
    "drums",
    "bass guitar",
    "flute",
    "pads",
    "acoustic guitar",
    "choir",
    "808 kick",
    "strings",
)
MOODS = ("upbeat", "melancholic", "dreamy", "dark", "energetic", "calm", "epic", "playful")
KEYS = ("C major", "A minor", "F# minor", "Eb major", "D dorian", "G major")

PROMPTS = (
    "",
    "ambient pads, 70 BPM",
    "BPM: 128 | Techno | analog synth, 808 kick | dark",
    # Long enough to be truncated: exercises the far relative-position buckets (distance 127).
    " ".join(
        itertools.islice(
            itertools.cycle(
                "a dreamy cinematic score with strings , choir and a slow piano melody in D dorian".split()
            ),
            150,
        )
    ),
    "Quiet café — rain; zyxwq ÆØÅ 🎹",
)


def captions(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        inst = rng.sample(INSTRUMENTS, rng.randint(1, 3))
        out.append(
            f"{rng.choice(MOODS)} {rng.choice(GENRES)} with {', '.join(inst)}, "
            f"{rng.randint(60, 180)} BPM, {rng.choice(KEYS)}"
        )
    return out


def make_tokenizer():
    """T5-shaped `tokenizers.Tokenizer` trained on `captions()`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(captions(), trainer=trainer)
    # The trainer orders equal-score pieces and sums scores in a run-dependent order:
    # rebuild the model with rounded scores in a fixed order, so the files are reproducible.
    specials = ["<pad>", "</s>", "<unk>"]
    trained = json.loads(tok.to_str())["model"]["vocab"]
    pieces = sorted(
        ((piece, round(score, 6)) for piece, score in trained if piece not in specials), key=lambda p: (-p[1], p[0])
    )
    tok.model = models.Unigram([(t, 0.0) for t in specials] + pieces, unk_id=2, byte_fallback=False)
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2] and tok.get_vocab_size() <= VOCAB_SIZE
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def make_spiece_model() -> bytes:
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions(seed=1)),
        model_writer=buffer,
        vocab_size=100,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    return buffer.getvalue()


def write_tokenizer(tok, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "model_max_length": MAX_LENGTH, "extra_ids": 0}, f)


def hf_ids(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    batch = tokenizer(list(PROMPTS), padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(bool)


def encoder_output(encoder, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """SAT's T5Conditioner: last_hidden_state * mask (float32 here; SAT casts to float16)."""
    import torch

    with torch.no_grad():
        m = torch.from_numpy(mask.astype(np.int64))
        h = encoder(input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=m).last_hidden_state
        return (h * m[..., None].to(h.dtype)).numpy().astype(np.float32)


def count_t5_base() -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, feed_forward_proj="relu"
    )
    model = transformers.T5EncoderModel(config)
    print("t5-base T5EncoderModel params:", sum(p.numel() for p in model.parameters()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count_t5_base", action="store_true", help="only print the t5-base encoder's param count")
    args = parser.parse_args()
    if args.count_t5_base:
        count_t5_base()
        return

    import torch
    import transformers
    from transformers.models.t5.modeling_t5 import T5Attention

    tok = make_tokenizer()
    relu_dir, gated_dir, spiece_dir = (os.path.join(FIXTURES, n) for n in ("t5_relu", "t5_gated", "t5_spiece"))
    for folder in (relu_dir, gated_dir):
        write_tokenizer(tok, folder)
    os.makedirs(spiece_dir, exist_ok=True)
    with open(os.path.join(spiece_dir, "spiece.model"), "wb") as f:
        f.write(make_spiece_model())

    ids, mask = hf_ids(transformers.T5TokenizerFast.from_pretrained(relu_dir, local_files_only=True))
    ours = tok  # the same tokenizer without HF in between, as the project reads it
    ours.enable_truncation(MAX_LENGTH)
    ours.enable_padding(length=MAX_LENGTH, pad_id=0, pad_token="<pad>")
    assert [e.ids for e in ours.encode_batch(list(PROMPTS))] == ids.tolist(), "HF and tokenizers disagree"
    spiece_ids, spiece_mask = hf_ids(transformers.T5Tokenizer.from_pretrained(spiece_dir, local_files_only=True))

    common = dict(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    relu = transformers.T5EncoderModel(transformers.T5Config(d_kv=12, feed_forward_proj="relu", **common)).eval()
    relu.save_pretrained(relu_dir)
    torch.manual_seed(1)
    gated = transformers.T5ForConditionalGeneration(
        transformers.T5Config(d_kv=8, feed_forward_proj="gated-gelu", num_decoder_layers=1, **common)
    ).eval()
    gated.config.save_pretrained(gated_dir)
    torch.save(gated.state_dict(), os.path.join(gated_dir, "pytorch_model.bin"))
    for name in ("generation_config.json",):
        for folder in (relu_dir, gated_dir):
            if os.path.exists(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))

    relative = np.arange(-300, 301)
    buckets = {
        f"buckets_{n}_{d}": T5Attention._relative_position_bucket(
            torch.from_numpy(relative), bidirectional=True, num_buckets=n, max_distance=d
        )
        .numpy()
        .astype(np.int32)
        for n, d in ((32, 128), (16, 20))
    }
    arrays = dict(
        prompts=np.array(PROMPTS),
        input_ids=ids,
        attention_mask=mask,
        spiece_input_ids=spiece_ids,
        spiece_attention_mask=spiece_mask,
        relative_positions=relative.astype(np.int32),
        **buckets,
        relu_hidden=encoder_output(relu, ids, mask),
        gated_hidden=encoder_output(gated.get_encoder(), ids, mask),
    )
    path = os.path.join(FIXTURES, "t5_reference.npz")
    np.savez_compressed(path, **arrays)
    total = 0
    for folder in (relu_dir, gated_dir, spiece_dir):
        for name in sorted(os.listdir(folder)):
            size = os.path.getsize(os.path.join(folder, name))
            total += size
            print(f"  {os.path.relpath(os.path.join(folder, name), FIXTURES)}: {size / 1e3:.1f} kB")
    total += os.path.getsize(path)
    print(
        f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} kB); fixtures total {total / 1e3:.1f} kB; "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print("tokens per prompt:", mask.sum(1).tolist(), "spiece:", spiece_mask.sum(1).tolist())
    print("max |relu|", np.abs(arrays["relu_hidden"]).max(), "max |gated|", np.abs(arrays["gated_hidden"]).max())


if __name__ == "__main__":
    main()
