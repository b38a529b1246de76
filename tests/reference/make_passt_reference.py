"""Golden outputs of hear21passt 0.0.26's PaSST tagger (`get_basic_model(mode="logits")`'s
front end and network, a small width) with seeded random weights, and of the KL_passt protocol.

    TORCHAUDIO_KALDI=<unpacked torchaudio 2.11.1 wheel>/torchaudio/compliance/kaldi.py \
        PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_passt_reference.py

The network is hear21passt's `PaSST` class with the AudioSet model's layout (patches 16 x 16
every 10 x 10, positions for 128 x 998 mel frames, class + distillation tokens, 527 labels)
but 64 wide, 2 blocks of 4 heads, so the fixture stays small; the front end is the one
`get_basic_model` builds. Weights and inputs come from NumPy seeds (`seeded_arrays.py`, which
the test calls too); `fixtures/passt_reference.npz` holds
  names str [k], shapes int [k, 4] (zero-padded): the network's state-dict order and shapes;
  mel_edges [2, 128, 100]: the front end of two 10 s windows at 32 kHz (`music_like(seed 1, 2)`),
    its first and last 50 of 1000 frames (where the reflect padding shows);
  windows_logits [2, 527]: the wrapper's logits for them; short_logits [1, 527]: for a 1.2 s window;
  clip_distribution [527], clip_windows int: a 23 s clip made at 44.1 kHz (`music_like(seed 3)`)
    through stable-audio-metrics' `return_probabilities` steps (src/passt_kld.py): librosa's
    soxr_hq resampling to 32 kHz, pyloudnorm peak normalisation to -1 dB, 10 s windows every 5 s
    (short ones zero-padded), mean of the logits, softmax. That function loads a file and calls
    `.cuda()`, so its steps are restated here on the array (the same calls, in its order);
  other_distribution [527], kl: a 6 s clip (`music_like(seed 4)`) the same way, and
    `F.kl_div((clip + 1e-6).log(), other, reduction="sum")`, the reference's KL.
"""

from __future__ import annotations

import os

import librosa
import numpy as np
import pyloudnorm
import torch
import torch.nn.functional as F
from hear21passt.models.passt import PaSST
from hear21passt.models.preprocess import AugmentMelSTFT
from hear21passt.wrapper import PasstBasicWrapper
from seeded_arrays import music_like, seeded_state_dict, state_dict_layout  # tests/reference/, the script's own folder

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "passt_reference.npz")
WEIGHT_SEED = 0
SR = 32000


def build_model() -> PasstBasicWrapper:
    # get_basic_model()'s front end, verbatim arguments; its network at a small width.
    mel = AugmentMelSTFT(
        n_mels=128,
        sr=32000,
        win_length=800,
        hopsize=320,
        n_fft=1024,
        freqm=48,
        timem=192,
        htk=False,
        fmin=0.0,
        fmax=None,
        norm=1,
        fmin_aug_range=10,
        fmax_aug_range=2000,
    )
    net = PaSST(
        img_size=(128, 998),
        patch_size=16,
        stride=(10, 10),
        in_chans=1,
        num_classes=527,
        embed_dim=64,
        depth=2,
        num_heads=4,
        distilled=True,
    )
    model = PasstBasicWrapper(mel=mel, net=net, mode="logits").eval()
    shapes = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    weights = seeded_state_dict(WEIGHT_SEED, shapes)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model, shapes


def clip_probabilities(model, audio_44k: np.ndarray) -> tuple[np.ndarray, int]:
    audio = librosa.resample(audio_44k, orig_sr=44100, target_sr=SR, res_type="soxr_hq")
    audio = pyloudnorm.normalize.peak(audio, -1.0)
    window_size, overlap = 10, 5
    step = int((window_size - overlap) * SR)
    logits = []
    for i in range(0, max(step, len(audio) - step), step):
        window = audio[i : i + int(window_size * SR)]
        if len(window) < int(window_size * SR) and len(window) > int(window_size * SR * 0.15):
            tmp = np.zeros(int(window_size * SR))
            tmp[: len(window)] = window
            window = tmp
        with torch.no_grad():
            logits.append(torch.squeeze(model(torch.from_numpy(window.astype(np.float32)).unsqueeze(0))))
    return F.softmax(torch.mean(torch.stack(logits), dim=0), dim=0).numpy(), len(logits)


def main() -> None:
    model, shapes = build_model()
    windows = np.stack([music_like(s, 10 * SR, SR) for s in (1, 2)])
    short = music_like(5, int(1.2 * SR), SR)[None]
    with torch.no_grad():
        mel = model.mel(torch.from_numpy(windows)).numpy()
        windows_logits = model(torch.from_numpy(windows)).numpy()
        short_logits = model(torch.from_numpy(short)).numpy()
    clip, clip_windows = clip_probabilities(model, music_like(3, int(23 * 44100), 44100))
    other, _ = clip_probabilities(model, music_like(4, int(6 * 44100), 44100))
    kl = F.kl_div((torch.from_numpy(clip) + 1e-6).log(), torch.from_numpy(other), reduction="sum").item()
    np.savez_compressed(
        OUT,
        **state_dict_layout(shapes),
        mel_edges=np.concatenate([mel[..., :50], mel[..., -50:]], axis=-1),
        windows_logits=windows_logits,
        short_logits=short_logits,
        clip_distribution=clip,
        clip_windows=clip_windows,
        other_distribution=other,
        kl=kl,
    )
    print({"params": sum(int(np.prod(s)) for _, s in shapes), "clip_windows": clip_windows, "kl": kl})


if __name__ == "__main__":
    main()
