"""Golden outputs of laion-clap 1.1.7's CLAP (HTSAT audio branch, RoBERTa text branch, no
fusion: the layout of `music_speech_audioset_epoch_15_esc_89.98.pt` and the other HTSAT-base
music checkpoints) with seeded random weights, and of stable-audio-metrics' CLAP-score steps.

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_laion_clap_reference.py

laion-clap builds its tokenizers and its RoBERTa by hub name at import and construction time
(`RobertaTokenizer.from_pretrained("roberta-base")`, `RobertaModel.from_pretrained(...)`); nothing
is downloaded here: those calls are replaced before the import, the tokenizer by the project's
tiny RoBERTa fixture (`fixtures/sa1_small/roberta`) and the text branch by a `RobertaModel` of that
folder's config. The audio branch is laion-clap's own `HTSAT_Swin_Transformer` with the real front
end (48 kHz, 1024-point STFT, hop 480, 64 mels over 50-14000 Hz, the 256 x 256 image) at a small
width (embed 16, depths (2, 2), heads (2, 4), window 8), and both projections are sized to those
towers; every call path is laion-clap's. `fixtures/laion_clap_reference.npz` holds
  names str [k], shapes int [k, 4]: the seeded tensors of the state dict, in order (the STFT and
    mel matrices and the non-persistent buffers keep the values laion-clap computes);
  embed_exact, embed_short, embed_long [1, 512]: `CLAP.get_audio_embedding` of
    `get_audio_features(..., 480000, "rand_trunc", "repeatpad")` for a 10 s clip
    (`music_like(1)`, 480000 samples), a 3.125 s one (`music_like(2)`, repeated 3 times and
    zero-padded) and a 12.5 s one (`music_like(3)`, cropped at `long_offset`, drawn by laion-clap
    after `np.random.seed(0)`);
  branch_exact [1, 32]: the audio branch's pooled `embedding` of the 10 s clip (before projection);
  protocol [1, 512]: a 7 s stereo clip at 44.1 kHz (`music_like(4)`, `music_like(5)`) through
    stable-audio-metrics' `clap_score` steps (src/clap_score.py): librosa's mono downmix and
    soxr_hq resampling to 48 kHz, pyloudnorm peak normalisation to -1 dB, the int16 round trip,
    `get_audio_embedding_from_data(use_tensor=True)`; that function loads files and calls
    `.cuda()`, so its steps are restated here on the array, in its order;
  captions str [2], input_ids int [2, 77], attention_mask int [2, 77]: the captions through
    `RobertaTokenizer` of the fixture folder, padded and truncated to 77 as laion-clap's hook;
  text_embed [2, 512]: `CLAP.get_text_embedding` of those ids.

With `$TORCHAUDIO_SRC` (an unpacked torchaudio 2.11.1 wheel: its Python code runs on CPU torch
once the compiled extension, which nothing here calls, is stubbed), the script also writes
`fixtures/laion_clap_fusion_reference.npz` for the fusion layout of `630k-audioset-fusion-best.pt`
(`enable_fusion=True, fusion_type="aff_2d"`, the same small HTSAT): laion-clap's
`get_audio_features(..., "fusion", "repeatpad")` makes torchaudio's HTK mel of the clip and,
for a clip over 10 s, a global view shrunk by torchvision's `Resize` (the shim's: the tensor
path of torchvision >= 0.17, bilinear with antialiasing) and three 10 s crops from the front,
middle and back thirds, which the patch embedding fuses (AFF). It holds
  names, shapes: as above, for the fusion model;
  fusion_embed [2, 512]: one batch of a 15 s clip (`music_like(6)`, fused) and the 3.125 s clip
    (repeat-padded, not fused);
  fusion_starts int [3]: the crops' first frames, drawn by laion-clap after `np.random.seed(0)`;
  fusion_views [4, 21, 64]: every 50th frame of the long clip's four mel views.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys  # noqa: E402
import types  # noqa: E402

import transformers  # noqa: E402

if os.environ.get("TORCHAUDIO_SRC"):  # the real torchaudio Python package, before the shim
    _extension = types.ModuleType("torchaudio._extension")
    _extension._IS_TORCHAUDIO_EXT_AVAILABLE = False
    _extension.fail_if_no_align = lambda fn: fn
    _extension._load_lib = lambda *args: False
    sys.modules["torchaudio._extension"] = _extension
    sys.path.insert(0, os.environ["TORCHAUDIO_SRC"])

HERE = os.path.dirname(os.path.abspath(__file__))
ROBERTA_DIR = os.path.join(HERE, "..", "fixtures", "sa1_small", "roberta")
OUT = os.path.join(HERE, "..", "fixtures", "laion_clap_reference.npz")
FUSION_OUT = os.path.join(HERE, "..", "fixtures", "laion_clap_fusion_reference.npz")


def _no_hub_tokenizer(cls, *args, **kwargs):
    return None  # laion-clap's module-level tokenizers; this script tokenises with the fixture's


def _fixture_roberta(cls, *args, **kwargs):
    return cls(transformers.RobertaConfig.from_json_file(os.path.join(ROBERTA_DIR, "config.json")))


for _name in ("BertTokenizer", "RobertaTokenizer", "BartTokenizer"):
    getattr(transformers, _name).from_pretrained = classmethod(_no_hub_tokenizer)
transformers.RobertaModel.from_pretrained = classmethod(_fixture_roberta)

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import pyloudnorm  # noqa: E402
import torch  # noqa: E402
from laion_clap.clap_module.htsat import HTSAT_Swin_Transformer  # noqa: E402
from laion_clap.clap_module.model import CLAP  # noqa: E402
from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32  # noqa: E402
from seeded_arrays import music_like, seeded_state_dict, state_dict_layout  # noqa: E402  (tests/reference/)

WEIGHT_SEED = 0
SR = 48000
MAX_LEN = 480000
EMBED_DIM, DEPTHS, HEADS = 16, [2, 2], [2, 4]
CAPTIONS = ["warm analog pads, 90 BPM", "a dry snare"]
# laion-clap's HTSAT-base audio_cfg (clap_module/model_configs/HTSAT-base.json).
AUDIO_CFG = dict(
    audio_length=1024,
    clip_samples=480000,
    mel_bins=64,
    sample_rate=48000,
    window_size=1024,
    hop_size=480,
    fmin=50,
    fmax=14000,
    class_num=527,
    model_type="HTSAT",
    model_name="base",
)


def build_model(fusion: bool = False) -> CLAP:
    roberta = transformers.RobertaConfig.from_json_file(os.path.join(ROBERTA_DIR, "config.json"))
    text_cfg = dict(
        context_length=77,
        vocab_size=roberta.vocab_size,
        width=roberta.hidden_size,
        heads=roberta.num_attention_heads,
        layers=roberta.num_hidden_layers,
        model_type="roberta",
    )
    fusion_type = "aff_2d" if fusion else "None"
    model = CLAP(embed_dim=1024, audio_cfg=AUDIO_CFG, text_cfg=text_cfg, enable_fusion=fusion, fusion_type=fusion_type)
    # The small audio tower and projections that fit both towers (laion-clap hard-codes 768 in).
    model.audio_branch = HTSAT_Swin_Transformer(
        spec_size=256,
        patch_size=4,
        patch_stride=(4, 4),
        num_classes=527,
        embed_dim=EMBED_DIM,
        depths=DEPTHS,
        num_heads=HEADS,
        window_size=8,
        config=model.audio_cfg,
        enable_fusion=fusion,
        fusion_type=fusion_type,
    )
    width = EMBED_DIM * 2 ** (len(DEPTHS) - 1)
    joint = model.joint_embed_shape
    model.audio_projection = torch.nn.Sequential(
        torch.nn.Linear(width, joint), torch.nn.ReLU(), torch.nn.Linear(joint, joint)
    )
    model.text_projection = torch.nn.Sequential(
        torch.nn.Linear(roberta.hidden_size, joint), torch.nn.ReLU(), torch.nn.Linear(joint, joint)
    )
    return model.eval()


def seeded_names(model: CLAP) -> list[tuple[str, tuple[int, ...]]]:
    """Every learned tensor and the batch-norm statistics; not the fixed STFT / mel matrices."""
    fixed = ("audio_branch.spectrogram_extractor.", "audio_branch.logmel_extractor.")
    names = [n for n, _ in model.named_parameters() if not n.startswith(fixed)]
    names += [n for n, _ in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    shapes = dict(model.state_dict())
    order = [k for k in shapes if k in set(names)]
    return [(k, tuple(shapes[k].shape)) for k in order]


def audio_embedding(model: CLAP, wave: np.ndarray) -> torch.Tensor:
    sample = get_audio_features({}, torch.from_numpy(wave), MAX_LEN, "rand_trunc", "repeatpad", audio_cfg=AUDIO_CFG)
    return model.get_audio_embedding([sample])


def seeded_model(fusion: bool) -> tuple[CLAP, dict]:
    model = build_model(fusion)
    shapes = seeded_names(model)
    weights = seeded_state_dict(WEIGHT_SEED, shapes)
    _, unexpected = model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()}, strict=False)
    assert not unexpected, unexpected
    return model, dict(state_dict_layout(shapes))


def write_fusion_reference() -> None:
    model, out = seeded_model(fusion=True)
    long, short = music_like(6, 15 * SR, SR), music_like(2, 150000, SR)
    with torch.no_grad():
        chunk = MAX_LEN // AUDIO_CFG["hop_size"] + 1
        total = len(long) // AUDIO_CFG["hop_size"] + 1
        ranges = np.array_split(list(range(0, total - chunk + 1)), 3)
        np.random.seed(0)
        out["fusion_starts"] = np.array([np.random.choice(r) for r in ranges])
        np.random.seed(0)
        fused = get_audio_features({}, torch.from_numpy(long), MAX_LEN, "fusion", "repeatpad", AUDIO_CFG)
        plain = get_audio_features({}, torch.from_numpy(short), MAX_LEN, "fusion", "repeatpad", AUDIO_CFG)
        assert bool(fused["longer"]) and not bool(plain["longer"])
        out["fusion_views"] = fused["mel_fusion"][:, ::50].numpy()
        out["fusion_embed"] = model.get_audio_embedding([fused, plain]).numpy()
    np.savez_compressed(FUSION_OUT, **out)
    print(f"wrote {FUSION_OUT}: {sorted(out)}")


def main() -> None:
    torch.manual_seed(0)
    model, out = seeded_model(fusion=False)
    shapes = [(str(n), tuple(int(d) for d in s if d)) for n, s in zip(out["names"], out["shapes"])]

    with torch.no_grad():
        exact = music_like(1, MAX_LEN, SR)
        out["embed_exact"] = audio_embedding(model, exact).numpy()
        features = get_audio_features({}, torch.from_numpy(exact), MAX_LEN, "rand_trunc", "repeatpad", AUDIO_CFG)
        branch = model.audio_branch({"waveform": features["waveform"][None]}, device="cpu")
        out["branch_exact"] = branch["embedding"].numpy()
        out["embed_short"] = audio_embedding(model, music_like(2, 150000, SR)).numpy()
        long = music_like(3, 600000, SR)
        np.random.seed(0)
        out["long_offset"] = np.array(np.random.randint(0, len(long) - MAX_LEN + 1))
        np.random.seed(0)
        out["embed_long"] = audio_embedding(model, long).numpy()

        stereo = np.stack([music_like(4, 7 * 44100, 44100), music_like(5, 7 * 44100, 44100)])  # [2, time]
        mono = librosa.resample(librosa.to_mono(stereo), orig_sr=44100, target_sr=SR)
        mono = pyloudnorm.normalize.peak(mono, -1.0)
        wave = torch.from_numpy(int16_to_float32(float32_to_int16(mono.reshape(1, -1)))).float()
        samples = [get_audio_features({}, w, MAX_LEN, "rand_trunc", "repeatpad", AUDIO_CFG) for w in wave]
        out["protocol"] = model.get_audio_embedding(samples).numpy()

        tokenizer = transformers.RobertaTokenizer(
            os.path.join(ROBERTA_DIR, "vocab.json"), os.path.join(ROBERTA_DIR, "merges.txt")
        )
        tokens = tokenizer(CAPTIONS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        out["captions"] = np.array(CAPTIONS)
        out["input_ids"] = tokens["input_ids"].numpy()
        out["attention_mask"] = tokens["attention_mask"].numpy()
        out["text_embed"] = model.get_text_embedding(
            {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        ).numpy()
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {sorted(out)}; {sum(np.prod(s) for _, s in shapes):,} seeded weights")
    if os.environ.get("TORCHAUDIO_SRC"):
        write_fusion_reference()
    else:
        print("TORCHAUDIO_SRC is not set: the fusion fixture was not written")


if __name__ == "__main__":
    main()
