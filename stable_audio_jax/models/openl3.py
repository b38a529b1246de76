"""OpenL3's audio embedding network (Cramer et al. 2019), the embedder of the paper's FD_openl3.

The same computation as torchopenl3's `PytorchOpenl3` (torchopenl3/models.py), which ports
the original Keras model with its kapre 0.1.4 front end:

    audio [batch, 48000] (1 s at 48 kHz)
      -> zero padding as Keras "same" for a 48000-sample input (982 samples each side),
         2048-sample periodic-Hann STFT frames every 242 samples (199 frames), power
      -> HTK mel filterbank (`n_mels` bands, 0..24 kHz, each filter L1-normalised), square root
      -> 10 log10(max(x, 1e-10)), minus the example's maximum, floored at -80
    [batch, n_mels, 199, 1]  (mel on the first spatial axis, time on the second, channels last)
      -> frozen batch norm -> 4 x (conv 3x3 + BN + ReLU, conv 3x3 + BN + ReLU, max-pool 2x2)
         with widths 64, 128, 256, 512 (the last block: its second conv is the embedding layer,
         without BN or ReLU, and no 2x2 pool) -> max-pool over the remaining grid
    -> embeddings [batch, embedding_size]

Batch norms are frozen (inference only): `scale`, `bias`, `mean`, `var` are all parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np

from stable_audio_jax.models.config_fields import checked_fields

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 48_000  # one analysis window: 1 s
N_FFT, HOP = 2048, 242
BN_EPS = 1e-3
# The final max-pool window per (input_repr, embedding_size), from the reference.
_FINAL_POOL = {("mel128", 512): (16, 24), ("mel128", 6144): (4, 8), ("mel256", 512): (32, 24), ("mel256", 6144): (8, 8)}
_WIDTHS = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class OpenL3Config:
    """input_repr: "mel256" (the paper's) or "mel128"; embedding_size: 512 (the paper's) or 6144;
    content_type: "music" or "env", which only tells the weights apart."""

    input_repr: str = "mel256"
    embedding_size: int = 512
    content_type: str = "music"

    def __post_init__(self):
        if (self.input_repr, self.embedding_size) not in _FINAL_POOL:
            raise ValueError(
                f"OpenL3 input_repr/embedding_size must be one of {sorted(_FINAL_POOL)}, "
                f"got {(self.input_repr, self.embedding_size)}"
            )
        if self.content_type not in ("music", "env"):
            raise ValueError(f"OpenL3 content_type must be 'music' or 'env', got {self.content_type!r}")

    @property
    def n_mels(self) -> int:
        return int(self.input_repr[3:])

    @classmethod
    def from_dict(cls, d: dict) -> "OpenL3Config":
        return cls(**checked_fields(cls, d, "OpenL3"))


@functools.lru_cache(maxsize=None)
def mel_basis(n_mels: int) -> np.ndarray:
    """The front end's HTK, L1-normalised mel filterbank, float32 `[N_FFT // 2 + 1, n_mels]`."""
    with warnings.catch_warnings():  # the lowest HTK bands are empty at this FFT size, as in the reference
        warnings.simplefilter("ignore", UserWarning)
        weights = librosa.filters.mel(
            sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=0, fmax=SAMPLE_RATE // 2, htk=True, norm=1
        )
    weights = np.ascontiguousarray(weights.T, dtype=np.float32)
    weights.setflags(write=False)
    return weights


def _same_padding() -> tuple[int, int]:
    # Keras "same" for the reference's fixed input width (its sample rate, one 1 s window).
    remainder = FRAME_SAMPLES % HOP
    total = max(N_FFT - (HOP if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def log_mel_front_end(audio: jax.Array, n_mels: int) -> jax.Array:
    """audio `[batch, 48000]` -> the normalised dB mel image `[batch, n_mels, frames, 1]` float32."""
    if audio.ndim != 2 or audio.shape[1] != FRAME_SAMPLES:
        raise ValueError(f"OpenL3 takes [batch, {FRAME_SAMPLES}] windows at 48 kHz, got {audio.shape}")
    left, right = _same_padding()
    x = jnp.pad(audio.astype(jnp.float32), ((0, 0), (left, right)))
    frames = 1 + (x.shape[1] - N_FFT) // HOP
    index = jnp.arange(frames)[:, None] * HOP + jnp.arange(N_FFT)[None, :]
    window = jnp.asarray(np.hanning(N_FFT + 1)[:-1], jnp.float32)  # periodic Hann
    spectrum = jnp.fft.rfft(x[:, index] * window, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [batch, frames, bins]
    mel = jnp.sqrt(power @ jnp.asarray(mel_basis(n_mels)))  # power_melgram = 1
    db = 10.0 * jnp.log10(jnp.maximum(mel, 1e-10))
    db = db - jnp.max(db, axis=(1, 2), keepdims=True)
    db = jnp.maximum(db, -80.0)
    return jnp.swapaxes(db, 1, 2)[..., None]


class FrozenBatchNorm(nn.Module):
    """Inference batch norm `(x - mean) / sqrt(var + 1e-3) * scale + bias` over the last axis."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        mean = self.param("mean", nn.initializers.zeros, (features,))
        var = self.param("var", nn.initializers.ones, (features,))
        return (x - mean) * (scale / jnp.sqrt(var + BN_EPS)) + bias


class OpenL3(nn.Module):
    """`__call__(audio [batch, 48000])` -> embeddings `[batch, embedding_size]` float32.

    Submodules: `bn_0` (on the mel image), then per block `b` in 0..3 `conv_{b}_{0,1}` and
    `bn_{b}_{0,1}`; block 3's second conv is `embedding` (no BN after it)."""

    config: OpenL3Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        c = self.config
        x = FrozenBatchNorm(name="bn_0")(log_mel_front_end(audio, c.n_mels))
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype)
        for block, width in enumerate(_WIDTHS):
            x = nn.relu(FrozenBatchNorm(name=f"bn_{block}_0")(conv(width, name=f"conv_{block}_0")(x)))
            if block == len(_WIDTHS) - 1:
                x = conv(width, name="embedding")(x)
                break
            x = nn.relu(FrozenBatchNorm(name=f"bn_{block}_1")(conv(width, name=f"conv_{block}_1")(x)))
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        pool = _FINAL_POOL[(c.input_repr, c.embedding_size)]
        x = nn.max_pool(x, pool, strides=pool, padding="VALID")  # [batch, h, w, 512]
        return x.reshape(x.shape[0], -1).astype(jnp.float32)


def analysis_windows(audio: np.ndarray, hop_seconds: float = 0.5) -> np.ndarray:
    """A mono 48 kHz signal `[samples]` -> its 1 s analysis windows `[n, 48000]`, as torchopenl3's
    `preprocess_audio_batch(center=True)`: half a window of zeros before the signal, zeros after
    it up to a whole number of hops, a window every `hop_seconds`."""
    x = np.asarray(audio, np.float32)
    if x.ndim != 1:
        raise ValueError(f"analysis_windows takes a mono signal [samples], got {x.shape}")
    hop = int(hop_seconds * SAMPLE_RATE)
    x = np.concatenate([np.zeros(FRAME_SAMPLES // 2, np.float32), x])
    if len(x) < FRAME_SAMPLES:
        pad = FRAME_SAMPLES - len(x)
    else:
        pad = -(-(len(x) - FRAME_SAMPLES) // hop) * hop - (len(x) - FRAME_SAMPLES)
    x = np.pad(x, (0, pad))
    count = 1 + (len(x) - FRAME_SAMPLES) // hop
    return np.stack([x[i * hop : i * hop + FRAME_SAMPLES] for i in range(count)])
