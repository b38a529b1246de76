"""Golden outputs of torchopenl3 1.0.1's OpenL3 (mel256, 512-d) with seeded random weights.

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_openl3_reference.py

The weights and inputs are drawn with NumPy from seeds (`seeded_arrays.py`, which the test
calls too), so only the reference's outputs are stored in `fixtures/openl3_reference.npz`:
  names str [k], shapes int [k, 4] (zero-padded): the state dict's order and shapes;
  windows_out [3, 512]: `PytorchOpenl3.forward` on three 1 s windows at 48 kHz
    (`music_like(seed 1..3)`);
  clip_out [frames, 512]: `torchopenl3.get_audio_embedding` of a 2.3 s clip at 48 kHz
    (`music_like(seed 4)`), hop 0.5 s, centred: the reference's framing;
  clip44_out [frames, 512]: the same clip made at 44.1 kHz, resampled by the reference (resampy).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchopenl3
from seeded_arrays import music_like, seeded_state_dict, state_dict_layout  # tests/reference/, the script's own folder
from torchopenl3.models import PytorchOpenl3

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "openl3_reference.npz")
WEIGHT_SEED = 0


def main() -> None:
    model = PytorchOpenl3(content_type="music", input_repr="mel256", embedding_size=512).eval()
    state = model.state_dict()
    # Parameters and batch-norm statistics; the front end's buffers (DFT kernels, mel basis) stay as built.
    shapes = [(k, tuple(v.shape)) for k, v in state.items() if not k.startswith("speclayer.")]
    weights = seeded_state_dict(WEIGHT_SEED, shapes)
    model.load_state_dict({**state, **{k: torch.from_numpy(v) for k, v in weights.items()}})
    windows = np.stack([music_like(s, 48000, 48000) for s in (1, 2, 3)])
    with torch.no_grad():
        windows_out = model(torch.from_numpy(windows)[:, None, :]).numpy()
        clip = music_like(4, int(2.3 * 48000), 48000)
        clip_out, _ = torchopenl3.get_audio_embedding(
            clip, 48000, model=model, hop_size=0.5, center=True, verbose=False
        )
        clip44 = music_like(4, int(2.3 * 44100), 44100)
        clip44_out, _ = torchopenl3.get_audio_embedding(
            clip44, 44100, model=model, hop_size=0.5, center=True, verbose=False, sampler="resampy"
        )
    np.savez_compressed(
        OUT,
        **state_dict_layout(shapes),
        windows_out=windows_out,
        clip_out=clip_out.numpy()[0],
        clip44_out=clip44_out.numpy()[0],
    )
    print({"params": sum(int(np.prod(s)) for _, s in shapes), "clip_frames": clip_out.shape[1]})


if __name__ == "__main__":
    main()
