"""PaSST (Koutini et al. 2022), the AudioSet tagger of the paper's KL_passt.

The same computation as hear21passt's `get_basic_model(mode="logits")` in evaluation mode
(hear21passt/models/preprocess.py `AugmentMelSTFT`, hear21passt/models/passt.py `PaSST`):

    audio [batch, samples] (mono, 32 kHz; 10 s windows for the metric)
      -> pre-emphasis y[n] = x[n + 1] - 0.97 x[n] (one sample shorter)
      -> STFT: reflect-padded by n_fft / 2 each side, 1024-point frames every 320 samples,
         an 800-sample symmetric Hann window centred in the frame; power
      -> Kaldi triangular mel filterbank (128 bands, 0..15 kHz, `kaldi_mel_banks`)
      -> (log(mel + 1e-5) + 4.5) / 5
    mel image [batch, 128 freq, frames, 1] (channels last)
      -> 16 x 16 patches every 10 x 10 (VALID conv to `embed_dim`) -> [batch, 12, time patches, dim]
      -> + time positions (cut to the input's length) + frequency positions
      -> flattened frequency-major, a class and a distillation token in front (each + its position)
      -> `depth` pre-LayerNorm transformer blocks (eps 1e-6, exact GELU) -> LayerNorm
      -> mean of the two tokens -> LayerNorm (eps 1e-5) -> linear -> logits [batch, num_classes]

Patchout and the front end's training augmentations do not run at inference and are not
here. The checkpoint's `head_dist` is not used by the reference's output either.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.models.attention import dot_product_attention
from stable_audio_jax.models.config_fields import checked_fields

SAMPLE_RATE = 32_000
N_FFT, WIN_LENGTH, HOP = 1024, 800, 320
N_MELS = 128
F_MIN, F_MAX = 0.0, 15_000.0  # the reference's fmax: sr / 2 - fmax_aug_range / 2 = 16000 - 1000
PREEMPHASIS = 0.97
PATCH = 16
WINDOW_SECONDS = 10.0  # what the tagger was trained on; the metric's analysis window


@dataclasses.dataclass(frozen=True)
class PaSSTConfig:
    """`passt_s_swa_p16_128_ap476` by default (the reference's `get_basic_model`): 768-d, 12
    blocks of 12 heads, patches every 10 x 10, 99 time positions (998 mel frames), 527 AudioSet labels."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    stride: int = 10
    time_patches: int = 99  # time positions: the reference sizes them for 998 mel frames, 998 // stride
    num_classes: int = 527

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"PaSST embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def freq_patches(self) -> int:
        return N_MELS // self.stride  # the reference sizes its grid as img_size // stride

    @classmethod
    def from_dict(cls, d: dict) -> "PaSSTConfig":
        return cls(**checked_fields(cls, d, "PaSST"))


def _kaldi_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def kaldi_mel_banks() -> np.ndarray:
    """Kaldi's triangular mel filters (torchaudio.compliance.kaldi.get_mel_banks without VTLN
    warping), equally spaced on 1127 ln(1 + f / 700) between F_MIN and F_MAX, evaluated at the
    FFT bin frequencies, plus the reference's zero column for the Nyquist bin: float32
    `[N_FFT // 2 + 1, N_MELS]`."""
    low, high = _kaldi_mel(F_MIN), _kaldi_mel(F_MAX)
    delta = (high - low) / (N_MELS + 1)
    band = np.arange(N_MELS)[None, :]
    left, centre, right = low + band * delta, low + (band + 1) * delta, low + (band + 2) * delta
    mel = _kaldi_mel(SAMPLE_RATE / N_FFT * np.arange(N_FFT // 2))[:, None]
    up, down = (mel - left) / (centre - left), (right - mel) / (right - centre)
    weights = np.maximum(0.0, np.minimum(up, down))
    weights = np.concatenate([weights, np.zeros((1, N_MELS))]).astype(np.float32)
    weights.setflags(write=False)
    return weights


def _frame_window() -> np.ndarray:
    """The symmetric 800-sample Hann window zero-padded to N_FFT, centred (as torch.stft pads it)."""
    hann = np.hanning(WIN_LENGTH)  # numpy's is the symmetric one (torch periodic=False)
    left = (N_FFT - WIN_LENGTH) // 2
    return np.pad(hann, (left, N_FFT - WIN_LENGTH - left)).astype(np.float32)


def mel_front_end(audio: jax.Array) -> jax.Array:
    """audio `[batch, samples]` at 32 kHz -> the normalised log-mel image `[batch, 128, frames, 1]`,
    frames = 1 + (samples - 1) // 320."""
    if audio.ndim != 2 or audio.shape[1] < 2:
        raise ValueError(f"PaSST takes mono audio [batch, samples >= 2] at 32 kHz, got {audio.shape}")
    x = audio.astype(jnp.float32)
    x = x[:, 1:] - PREEMPHASIS * x[:, :-1]
    if x.shape[1] <= N_FFT // 2:
        raise ValueError(
            f"PaSST needs more than {N_FFT // 2 + 1} samples for its reflect padding, got {audio.shape[1]}"
        )
    x = jnp.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    frames = 1 + (x.shape[1] - N_FFT) // HOP
    index = jnp.arange(frames)[:, None] * HOP + jnp.arange(N_FFT)[None, :]
    spectrum = jnp.fft.rfft(x[:, index] * jnp.asarray(_frame_window()), axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [batch, frames, bins]
    mel = jnp.matmul(power, jnp.asarray(kaldi_mel_banks()), precision=jax.lax.Precision.HIGHEST)
    image = (jnp.log(mel + 1e-5) + 4.5) / 5.0
    return jnp.swapaxes(image, 1, 2)[..., None]


class PaSSTBlock(nn.Module):
    """Pre-LayerNorm transformer block on `[batch, tokens, dim]`: `norm1`, `qkv`, `proj`, `norm2`, `fc1`, `fc2`."""

    config: PaSSTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        dim, heads = c.embed_dim, c.num_heads
        h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm1")(x)
        qkv = nn.Dense(3 * dim, dtype=self.dtype, name="qkv")(h)
        q, k, v = jnp.split(qkv.reshape(*qkv.shape[:2], 3, heads, dim // heads), 3, axis=2)
        attended = dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
        x = x + nn.Dense(dim, dtype=self.dtype, name="proj")(attended.reshape(x.shape))
        h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm2")(x)
        h = nn.gelu(nn.Dense(int(dim * c.mlp_ratio), dtype=self.dtype, name="fc1")(h), approximate=False)
        return x + nn.Dense(dim, dtype=self.dtype, name="fc2")(h)


class PaSST(nn.Module):
    """`__call__(audio [batch, samples])` at 32 kHz -> AudioSet logits `[batch, num_classes]` float32.

    Parameters: `patch_embed` (conv), `time_positions` `[1, 1, time_patches, dim]`,
    `freq_positions` `[1, freq_patches, 1, dim]`, `cls_token` / `dist_token` `[1, 1, dim]`,
    `token_positions` `[1, 2, dim]`, `block_{i}`, `norm`, `head_norm`, `head`."""

    config: PaSSTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        c = self.config
        image = mel_front_end(audio)
        if image.shape[2] < PATCH:
            raise ValueError(
                f"PaSST needs at least {PATCH} mel frames ({(PATCH - 1) * HOP + 2} samples), got {audio.shape[1]}"
            )
        x = nn.Conv(
            c.embed_dim,
            (PATCH, PATCH),
            strides=(c.stride, c.stride),
            padding="VALID",
            dtype=self.dtype,
            name="patch_embed",
        )(image)
        init = nn.initializers.truncated_normal(0.02)
        time_positions = self.param("time_positions", init, (1, 1, c.time_patches, c.embed_dim))
        freq_positions = self.param("freq_positions", init, (1, c.freq_patches, 1, c.embed_dim))
        if x.shape[2] > c.time_patches:
            raise ValueError(f"PaSST input gives {x.shape[2]} time patches, more than its {c.time_patches} positions")
        x = x + time_positions[:, :, : x.shape[2]] + freq_positions
        x = x.reshape(x.shape[0], -1, c.embed_dim)  # frequency-major, as torch's flatten of [b, e, f, t]
        token_positions = self.param("token_positions", init, (1, 2, c.embed_dim))
        tokens = jnp.concatenate(
            [self.param("cls_token", init, (1, 1, c.embed_dim)), self.param("dist_token", init, (1, 1, c.embed_dim))],
            axis=1,
        )
        tokens = jnp.broadcast_to(tokens + token_positions, (x.shape[0], 2, c.embed_dim)).astype(x.dtype)
        x = jnp.concatenate([tokens, x], axis=1)
        for i in range(c.depth):
            x = PaSSTBlock(c, self.dtype, name=f"block_{i}")(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
        features = (x[:, 0] + x[:, 1]) / 2
        features = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="head_norm")(features)
        return nn.Dense(c.num_classes, dtype=self.dtype, name="head")(features).astype(jnp.float32)


def analysis_windows(
    audio: np.ndarray, window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = 5.0
) -> list[np.ndarray]:
    """A mono 32 kHz signal `[samples]` -> its analysis windows, as stable-audio-metrics'
    `return_probabilities` (src/passt_kld.py): starts every `window - overlap` seconds up to
    the last start before `len - step`; a window shorter than `window_seconds` is zero-padded
    to it when it is longer than 15 % of it, else kept short (only a clip under 1.5 s has one).
    Windows have one of two lengths at most, so the tagger compiles for few shapes."""
    x = np.asarray(audio, np.float32)
    if x.ndim != 1 or not len(x):
        raise ValueError(f"analysis_windows takes a non-empty mono signal [samples], got {x.shape}")
    size, step = int(window_seconds * SAMPLE_RATE), int((window_seconds - overlap_seconds) * SAMPLE_RATE)
    windows = []
    for start in range(0, max(step, len(x) - step), step):
        window = x[start : start + size]
        if len(window) < size and len(window) > int(size * 0.15):
            window = np.pad(window, (0, size - len(window)))
        windows.append(window)
    return windows
