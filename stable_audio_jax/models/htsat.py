"""HTSAT, the CLAP audio tower: a Swin Transformer over a log-mel "image".

The shape of LAION-CLAP's HTSAT audio encoder (the one Stable Audio 1.0's CLAP used),
up to its pooled embedding (`latent_output`, what CLAP projects); the AudioSet
classification head (`tscam_conv`, `head`) and the fusion branch are left out.

Pipeline, channels last throughout:

1. audio `[batch, time, channels]` or `[batch, time]` -> mono (channel mean);
2. log-mel `[batch, frames, n_mels]` (`mel.log_mel_spectrogram`), the time axis
   linearly resized to `num_frames = spec_size * freq_ratio` when it differs (LAION feeds
   10 s = 1001 frames and interpolates to 1024);
3. input normalisation (see `HTSATEncoder`), then "wav2img": the `num_frames` axis is cut
   into `freq_ratio` chunks of `spec_size` frames stacked along frequency, giving an
   image `[batch, spec_size (time), freq_ratio * n_mels (freq), 1]`. HTSAT lays the same
   image out as (freq, time); transposing it changes no parameter shape;
4. patch embedding: conv kernel = stride = `patch_size`, then LayerNorm -> tokens
   `[batch, H, W, embed_dim]`;
5. Swin stages (window attention with a learned relative-position bias, every other
   block shifted by half a window), patch merging (2x2 -> 2C) between stages;
6. final LayerNorm; pooled embedding = mean over all tokens.

Reference sizes: HTSAT-tiny (`htsat_tiny()`, LAION-CLAP's "HTSAT-tiny") and HTSAT-base
(`htsat_base()`, SA 1.0's `amodel="HTSAT-base"`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax.models.attention import FeedForward, MultiHeadAttention
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.layers import torch_bias_init, torch_conv_init
from stable_audio_jax.models.mel import log_mel_spectrogram, mel_filterbank
from stable_audio_jax.models.remat import maybe_remat
from stable_audio_jax.models.sharding import constrain

Dtype = Any

# Swin initialises every Linear with a truncated normal of std 0.02 (zero bias).
_dense_init = nn.initializers.truncated_normal(0.02)
# PyTorch's LayerNorm epsilon (Swin and HTSAT use the default).
_LN_EPS = 1e-5
# Logit bias between tokens of different regions of a shifted window. Swin uses -100,
# which leaves a weight of exp(-100) ~ 4e-44 in float32; -1e9 gives exactly zero in
# float32 and bfloat16 (and -inf, still safe, in float16: every query sees itself).
_MASK_VALUE = -1e9
# Floor of the per-example variance of the log-mel, in dB^2: a (near) constant input,
# e.g. digital silence at -100 dB, maps to ~0 instead of amplified noise.
_STANDARDISE_EPS = 1e-2
# Logical axes of the `[batch, H, W, embed]` token grid between stages.
_GRID = ("batch", None, None, "embed")
INPUT_NORMS = ("standardise", "affine")
FRAME_RESIZES = ("linear", "bicubic")
MEL_SCALES = ("slaney", "htk")
FUSION_LOCAL_VIEWS = 3  # LAION-CLAP's front, middle and back crops
_FUSION_REDUCTION = 4  # AFF's bottleneck: channels // 4
# PyTorch's cubic convolution coefficient (`upsample_bicubic2d`); Keys' kernel with A = -0.75.
_TORCH_CUBIC_A = -0.75


@dataclasses.dataclass(frozen=True)
class HTSATConfig:
    """Architecture and front end of the HTSAT audio encoder.

    Attributes:
      sample_rate: input sample rate; 48000 (LAION-CLAP, hop 480) or 44100 (hop 441),
        both 100 mel frames per second.
      n_fft, hop_length, win_length, n_mels, f_min, f_max: the log-mel front end.
      spec_size: time side of the image (frames per chunk).
      freq_ratio: chunks of `spec_size` frames stacked along frequency; the image is
        `spec_size x freq_ratio * n_mels` and covers `num_frames` mel frames.
      patch_size: side of the square patches (conv kernel = stride).
      embed_dim: token width of the first stage; doubled by each patch merging.
      depths: Swin blocks per stage.
      num_heads: attention heads per stage.
      window_size: side of the square attention windows.
      mlp_ratio: MLP hidden width / token width.
      drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
      input_norm: "standardise" (each example's log-mel standardised, then the learned
        per-mel scale and bias: for towers trained here) or "affine" (the per-mel scale and
        bias alone: LAION-CLAP's evaluation-mode BatchNorm `bn0`, folded in on import).
      frame_resize: how a log-mel of another length is resized to `num_frames`: "linear"
        or "bicubic" (PyTorch's `interpolate(mode="bicubic", align_corners=True)`, what
        LAION-CLAP does to the 1001 frames of its 10 s input).
      mel_scale: "slaney" (librosa's normalised filterbank, LAION-CLAP's torchlibrosa front
        end) or "htk" (unnormalised, torchaudio's, which LAION-CLAP's fusion models use).
      fusion: LAION-CLAP's "aff_2d" feature fusion: the input may be `FusionViews` (the clip
        shrunk to one window plus three local windows), whose local patches are merged into
        the global ones by attentional feature fusion (AFF, arXiv 2009.14082).
    """

    sample_rate: int = 48000
    n_fft: int = 1024
    hop_length: int = 480
    win_length: int = 1024
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    spec_size: int = 256
    freq_ratio: int = 4
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    input_norm: str = "standardise"
    frame_resize: str = "linear"
    mel_scale: str = "slaney"
    fusion: bool = False

    def __post_init__(self):
        # Lists (JSON, ml_collections) become tuples so the config stays hashable.
        for name in ("depths", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    # ---- derived sizes -------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_frames(self) -> int:
        """Mel frames the image is made of (`spec_size * freq_ratio`)."""
        return self.spec_size * self.freq_ratio

    @property
    def num_samples(self) -> int:
        """The shortest audio whose centred mel has exactly `num_frames` frames (no resize)."""
        return (self.num_frames - 1) * self.hop_length

    @property
    def image_size(self) -> tuple[int, int]:
        """(time, freq) sides of the wav2img image."""
        return self.spec_size, self.freq_ratio * self.n_mels

    @property
    def output_dim(self) -> int:
        """Width of the pooled embedding and of the last stage's tokens."""
        return self.embed_dim * 2 ** (self.num_stages - 1)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def stage_resolutions(self) -> tuple[tuple[int, int], ...]:
        """Token grid `(H, W)` of each stage (patch grid halved by each merging)."""
        h, w = (side // self.patch_size for side in self.image_size)
        return tuple((h // 2**i, w // 2**i) for i in range(self.num_stages))

    @property
    def stage_windows(self) -> tuple[tuple[int, int], ...]:
        """`(window, shift)` of each stage's attention, as Swin: a grid no larger than the
        window in its smaller side is one window of that side, with no shift."""
        out = []
        for h, w in self.stage_resolutions:
            if min(h, w) <= self.window_size:
                out.append((min(h, w), 0))
            else:
                out.append((self.window_size, self.window_size // 2))
        return tuple(out)

    @property
    def drop_path_rates(self) -> tuple[tuple[float, ...], ...]:
        """Per stage, per block stochastic-depth rate: linear from 0 to `drop_path_rate`."""
        rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
        out, start = [], 0
        for depth in self.depths:
            out.append(tuple(rates[start : start + depth]))
            start += depth
        return tuple(out)

    # ---- validation and (de)serialisation --------------------------------------------

    def validate(self) -> None:
        """Raise ValueError if the sizes do not fit together."""
        positive = (
            "sample_rate",
            "n_fft",
            "hop_length",
            "win_length",
            "n_mels",
            "spec_size",
            "freq_ratio",
            "patch_size",
            "embed_dim",
            "window_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.depths:
            raise ValueError("depths must name at least one stage")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"depths {self.depths} and num_heads {self.num_heads} must have the same length (one entry per stage)"
            )
        if any(d < 1 for d in self.depths) or any(h < 1 for h in self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must be positive")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not 0.0 <= self.f_min < self.f_max:
            raise ValueError(f"need 0 <= f_min < f_max, got f_min={self.f_min}, f_max={self.f_max}")
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max ({self.f_max}) must be <= sample_rate / 2 ({self.sample_rate / 2})")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels ({self.n_mels}) exceeds the {self.n_fft // 2 + 1} FFT bins")
        with warnings.catch_warnings():  # librosa warns about empty filters; we raise below
            warnings.simplefilter("ignore", UserWarning)
            filterbank = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, float(self.f_min), float(self.f_max))
        empty = int(np.sum(~np.any(filterbank > 0, axis=0)))
        if empty:
            raise ValueError(
                f"{empty} of the {self.n_mels} mel filters are empty for n_fft={self.n_fft} "
                f"over [{self.f_min}, {self.f_max}] Hz: use fewer mels or a larger n_fft"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.frame_resize not in FRAME_RESIZES:
            raise ValueError(f"frame_resize must be one of {FRAME_RESIZES}, got {self.frame_resize!r}")
        if self.mel_scale not in MEL_SCALES:
            raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {self.mel_scale!r}")
        # Every stage must see whole patches and an even grid to merge.
        factor = self.patch_size * 2 ** (self.num_stages - 1)
        for axis, side in zip(("time side spec_size", "freq side freq_ratio * n_mels"), self.image_size):
            if side % factor:
                raise ValueError(f"image {axis} = {side} must be divisible by patch_size * 2**(stages - 1) = {factor}")
        for i, ((h, w), (window, _), dim, heads) in enumerate(
            zip(self.stage_resolutions, self.stage_windows, self.stage_dims, self.num_heads)
        ):
            if h % window or w % window:
                raise ValueError(
                    f"stage {i}: token grid {h}x{w} is not divisible by its window {window} "
                    f"(window_size={self.window_size})"
                )
            if dim % heads:
                raise ValueError(f"stage {i}: width {dim} is not divisible by num_heads {heads}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists), JSON-friendly; `from_dict` inverts it."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HTSATConfig":
        return cls(**checked_fields(cls, d, "HTSAT"))


def htsat_tiny(**overrides: Any) -> HTSATConfig:
    """LAION-CLAP's HTSAT-tiny: 48 kHz, hop 480, 64 mels, 10.23 s image, embed 96,
    depths (2, 2, 6, 2), heads (4, 8, 16, 32), window 8; output 768-d."""
    return dataclasses.replace(HTSATConfig(), **overrides)


def htsat_base(**overrides: Any) -> HTSATConfig:
    """HTSAT-base (`amodel="HTSAT-base"` in SA 1.0's CLAP config): as tiny with embed 128
    and depths (2, 2, 12, 2); output 1024-d."""
    return dataclasses.replace(HTSATConfig(embed_dim=128, depths=(2, 2, 12, 2)), **overrides)


def demo(**overrides: Any) -> HTSATConfig:
    """A small tower that trains in minutes on a CPU: 44.1 kHz (hop 441, 100 frames/s),
    32 mels, 256 frames = 2.55 s crops (`num_samples` = 112,455), image 64 x 128 (time x
    freq) -> 16 x 32 patches, two stages of width 48 and 96 with 2 and 4 heads, window 4;
    output 96-d."""
    config = HTSATConfig(
        sample_rate=44100,
        hop_length=441,
        n_mels=32,
        spec_size=64,
        freq_ratio=4,
        patch_size=4,
        embed_dim=48,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=4,
    )
    return dataclasses.replace(config, **overrides)


def expected_num_params(config: HTSATConfig) -> int:
    """Closed-form parameter count of `HTSATEncoder(config)`.

    Per Swin block of width C, MLP width M and window w: two LayerNorms (4C), q/k/v/out
    projections with biases (4C^2 + 4C), the MLP (2CM + M + C) and the bias table
    ((2w - 1)^2 per head). Per merging: LayerNorm(4C) and a 4C -> 2C matrix. With fusion,
    the local patch conv (3p x p) and AFF's Dense(E/4) -> Dense(E) twice.
    """
    total = 2 * config.n_mels  # input scale and bias
    p, e = config.patch_size, config.embed_dim
    total += p * p * e + e + 2 * e  # patch conv and its LayerNorm
    for i, (dim, heads, depth, (window, _)) in enumerate(
        zip(config.stage_dims, config.num_heads, config.depths, config.stage_windows)
    ):
        hidden = int(dim * config.mlp_ratio)
        norms, attention = 4 * dim, 4 * dim * dim + 4 * dim
        mlp, table = 2 * dim * hidden + hidden + dim, (2 * window - 1) ** 2 * heads
        block = norms + attention + mlp + table
        total += depth * block
        if i < config.num_stages - 1:
            total += 2 * 4 * dim + 4 * dim * 2 * dim
    if config.fusion:  # the local views' patch conv and AFF's two bottlenecks
        r = e // _FUSION_REDUCTION
        total += 3 * p * p * e + e + 2 * (e * r + r + r * e + e)
    return total + 2 * config.output_dim  # final LayerNorm


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Weights `[..., 4]` of the samples at offsets -1, 0, 1, 2 for a fractional position `t`."""
    a = _TORCH_CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=None)
def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float32 `[out_size, in_size]` that resizes an axis as PyTorch's bicubic interpolation
    with `align_corners=True`: output i samples position `i * (in - 1) / (out - 1)`, with
    the four neighbours' indices clamped to the edges. Read-only, cached."""
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    position = np.arange(out_size) * scale
    floor = np.floor(position)
    weights = _cubic_weights(position - floor)  # [out, 4]
    taps = np.clip(floor[:, None].astype(np.int64) + np.arange(-1, 3)[None], 0, in_size - 1)
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.repeat(np.arange(out_size), 4), taps.ravel()), weights.ravel())
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


class FusionViews(NamedTuple):
    """The input of a fusion tower (`HTSATConfig.fusion`), LAION-CLAP's `mel_fusion`:

    global_mel `[batch, frames, n_mels]`: the whole clip's log-mel shrunk to one window's
      frames (or that window itself when the clip is not longer);
    local_mels `[batch, 3, frames, n_mels]`: windows from the front, middle and back thirds;
    fused `[batch]` bool: whether to fuse the local views (False: they are ignored, as for
      clips that fit one window).
    """

    global_mel: Any
    local_mels: Any
    fused: Any


def clip_log_mel(audio: jax.Array, config: HTSATConfig) -> jax.Array:
    """The tower's log-mel front end at the clip's own length: mono `[batch, time]` -> float32
    `[batch, 1 + time // hop_length, n_mels]` (no resizing)."""
    c = config
    return log_mel_spectrogram(
        jnp.asarray(audio, jnp.float32),
        sample_rate=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        n_mels=c.n_mels,
        f_min=c.f_min,
        f_max=c.f_max,
        htk=c.mel_scale == "htk",
    )


@functools.lru_cache(maxsize=None)
def antialiased_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float32 `[out_size, in_size]` that resizes an axis as PyTorch's bilinear interpolation
    with `antialias=True` and `align_corners=False` (torchvision's `Resize` of a tensor): a
    triangle filter widened by the scale when shrinking, weights normalised per output."""
    scale = in_size / out_size
    support, inverse = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        low, high = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        taps = np.arange(low, high)
        weights = np.maximum(0.0, 1.0 - np.abs((taps - center + 0.5) * inverse))
        matrix[i, low:high] = weights / weights.sum()
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


# ---- window helpers (work on numpy and jax arrays alike) --------------------------------


def window_partition(x: Any, window: int) -> Any:
    """`[batch, H, W, C]` -> `[batch * (H/w) * (W/w), w * w, C]`, windows batch-major then
    row-major, tokens row-major inside a window."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Any, window: int, height: int, width: int) -> Any:
    """Inverse of `window_partition`: `[batch * nW, w * w, C]` -> `[batch, H, W, C]`."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> np.ndarray:
    """Swin's index into the `[(2w - 1)^2, heads]` bias table, int32 `[w * w, w * w]`:
    entry (i, j) encodes the offset (dy, dx) from key j to query i as
    `(dy + w - 1) * (2w - 1) + (dx + w - 1)`."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, N, N]
    return (offsets[0] * (2 * window - 1) + offsets[1]).astype(np.int32)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """Additive mask `[nW, w * w, w * w]` for a grid rolled by `-shift`: 0 between tokens
    of the same region, `_MASK_VALUE` between tokens that the roll brought together from
    opposite edges of the grid (so no attention wraps around)."""
    regions = np.zeros((1, height, width, 1), np.int32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            regions[:, rows, cols, :] = label
            label += 1
    windows = window_partition(regions, window)[..., 0]  # [nW, N]
    different = windows[:, None, :] != windows[:, :, None]
    return np.where(different, _MASK_VALUE, 0.0).astype(np.float32)


def _layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=_LN_EPS,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    )


def _drop_path(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Stochastic depth: drop the whole residual branch per example, rescale the rest."""
    if deterministic or rate == 0.0:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head self-attention with a relative-position bias.

    `[batch, H, W, C]` -> same. `window` must divide H and W; `shift > 0` rolls the grid
    by `-shift` first (and back after), masking pairs from different regions.
    """

    num_heads: int
    window: int
    shift: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        w, n = self.window, self.window * self.window
        table = self.param(
            "relative_position_bias_table",
            nn.with_logical_partitioning(_dense_init, (None, "heads")),
            ((2 * w - 1) ** 2, self.num_heads),
            self.param_dtype,
        )
        bias = table[relative_position_index(w)]  # [N, N, heads]
        bias = jnp.transpose(bias, (2, 0, 1))[None].astype(jnp.float32)  # [1, heads, N, N]
        if self.shift:
            x = jnp.roll(x, (-self.shift, -self.shift), axis=(1, 2))
            mask = shifted_window_mask(height, width, w, self.shift)  # [nW, N, N]
            # Windows are batch-major, so window k of every example takes mask[k].
            mask = jnp.broadcast_to(jnp.asarray(mask)[None], (batch, *mask.shape)).reshape(-1, 1, n, n)
            bias = bias + mask  # [batch * nW, heads, N, N]
        windows = window_partition(x, w)  # [batch * nW, N, C]
        out = MultiHeadAttention(
            num_heads=self.num_heads,
            use_bias=True,
            kernel_init=_dense_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attention",
        )(windows, bias=bias)
        out = window_reverse(out, w, height, width)
        if self.shift:
            out = jnp.roll(out, (self.shift, self.shift), axis=(1, 2))
        return out


class SwinBlock(nn.Module):
    """Pre-LN Swin block: `x + DropPath(WindowAttention(LN(x)))`, then
    `x + DropPath(MLP(LN(x)))`. `[batch, H, W, C]` -> same.

    `deterministic` (no stochastic depth) is an attribute rather than a call argument, so
    that `nn.remat` of the block (`HTSATEncoder.remat_policy`) traces only arrays.
    """

    num_heads: int
    window: int
    shift: int = 0
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _layer_norm("norm1", **kw)(x)
        h = WindowAttention(self.num_heads, self.window, self.shift, name="attention", **kw)(h)
        x = x + _drop_path(self, h, self.drop_path, self.deterministic)
        h = _layer_norm("norm2", **kw)(x)
        h = FeedForward(
            int(x.shape[-1] * self.mlp_ratio), activation="gelu", kernel_init=_dense_init, name="mlp", **kw
        )(h)
        return x + _drop_path(self, h, self.drop_path, self.deterministic)


class PatchMerging(nn.Module):
    """2x2 neighbourhoods -> one token: `[batch, H, W, C]` -> `[batch, H/2, W/2, 2C]`,
    concatenating (even, even), (odd, even), (even, odd), (odd, odd) as Swin, then
    LayerNorm(4C) and a bias-free Dense(2C)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = _layer_norm("norm", self.dtype, self.param_dtype)(x)
        return nn.Dense(
            2 * channels,
            use_bias=False,
            name="reduction",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(_dense_init, (None, "embed")),
        )(x)


class HTSATEncoder(nn.Module):
    """HTSAT audio encoder: audio -> (pooled embedding, final tokens).

    Input normalisation: LAION's HTSAT applies BatchNorm over mel bins (`bn0`). Running
    statistics would add a mutable `batch_stats` collection (and cross-device syncing)
    to a train state that is otherwise a pure params pytree, so instead each example's
    log-mel is standardised (mean and std over frames and bins) and then scaled and
    shifted per mel bin by learned parameters: the same parameter count, no state, and
    invariant to the input gain (a dB offset). `input_norm="affine"` keeps only the
    per-mel scale and bias, which is what a frozen BatchNorm is: imported LAION-CLAP
    towers use it (`convert/laion_clap_checkpoint.py`).

    `remat_policy` (one of `remat.REMAT_CHOICES`, default "none") rematerialises every
    Swin block in the backward pass (`models/remat.py`), with the same parameters.
    """

    config: HTSATConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat_policy: str = "none"

    def log_mel(self, audio: jax.Array) -> jax.Array:
        """audio `[batch, time, channels]` or `[batch, time]` -> log-mel `[batch, num_frames,
        n_mels]` (float32), resized along time when the clip is not `num_samples` long."""
        audio = jnp.asarray(audio, jnp.float32)
        if audio.ndim == 3:
            audio = jnp.mean(audio, axis=-1)
        elif audio.ndim != 2:
            raise ValueError(f"expected audio [batch, time, channels] or [batch, time], got {audio.shape}")
        return self.to_num_frames(clip_log_mel(audio, self.config))

    def to_num_frames(self, mel: jax.Array) -> jax.Array:
        """`[..., frames, n_mels]` -> `[..., num_frames, n_mels]` by `config.frame_resize`."""
        c = self.config
        if mel.shape[-2] == c.num_frames:
            return mel
        if c.frame_resize == "bicubic":
            matrix = jnp.asarray(bicubic_resize_matrix(mel.shape[-2], c.num_frames))
            return jnp.einsum("of,...fm->...om", matrix, mel, precision=jax.lax.Precision.HIGHEST)
        return jax.image.resize(mel, (*mel.shape[:-2], c.num_frames, c.n_mels), "linear")

    @nn.compact
    def __call__(self, audio: jax.Array | FusionViews, *, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """audio `[batch, time, channels]` or `[batch, time]` at `config.sample_rate`, or for a
        fusion tower `FusionViews` -> `(pooled [batch, output_dim], tokens [batch, tokens,
        output_dim])`, tokens row-major over the last stage's (time, freq) grid.
        `deterministic=False` turns on stochastic depth (rng 'dropout')."""
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        views = audio if isinstance(audio, FusionViews) else None
        if views is not None and not c.fusion:
            raise ValueError("FusionViews given to an HTSAT tower without fusion")
        if views is not None:
            # [batch, 1 + 3, num_frames, n_mels]: the global view first, normalised and imaged alike.
            mel = jnp.concatenate([views.global_mel[:, None], views.local_mels], axis=1).astype(jnp.float32)
            mel = self.to_num_frames(mel)
        else:
            mel = self.log_mel(audio)[:, None]  # [batch, 1, num_frames, n_mels]

        if c.input_norm == "standardise":
            mean = jnp.mean(mel, axis=(-2, -1), keepdims=True)
            var = jnp.var(mel, axis=(-2, -1), keepdims=True)
            mel = (mel - mean) * jax.lax.rsqrt(var + _STANDARDISE_EPS)
        scale = self.param(
            "input_scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("channels",)),
            (c.n_mels,),
            self.param_dtype,
        )
        shift = self.param(
            "input_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("channels",)),
            (c.n_mels,),
            self.param_dtype,
        )
        mel = mel * scale.astype(jnp.float32) + shift.astype(jnp.float32)

        # wav2img: [..., freq_ratio * spec_size, n_mels] -> [..., spec_size, freq_ratio * n_mels, 1].
        batch, num_views = mel.shape[:2]
        image = mel.reshape(batch, num_views, c.freq_ratio, c.spec_size, c.n_mels).transpose(0, 1, 3, 2, 4)
        image = image.reshape(batch, num_views, c.spec_size, c.freq_ratio * c.n_mels, 1).astype(self.dtype)

        p = c.patch_size
        # PyTorch's default conv init: HTSAT re-initialises only its Linear and LayerNorm layers.
        kernel_init = nn.with_logical_partitioning(torch_conv_init, (None, None, "conv_in", "embed"))
        bias_init = nn.with_logical_partitioning(torch_bias_init(p * p), ("embed",))
        x = nn.Conv(
            c.embed_dim,
            (p, p),
            strides=(p, p),
            padding="VALID",
            kernel_init=kernel_init,
            bias_init=bias_init,
            name="patch_embed",
            **kw,
        )(image[:, 0])
        if c.fusion:  # plain audio into a fusion tower: the fusion parameters exist, nothing is fused
            local = image[:, 1:] if views is not None else jnp.zeros((batch, FUSION_LOCAL_VIEWS, *image.shape[2:]))
            x = self._fuse_local_views(x, local.astype(self.dtype), views, kernel_init, bias_init, **kw)
        x = constrain(_layer_norm("patch_norm", **kw)(x), _GRID)  # [batch, H, W, embed_dim]

        block = maybe_remat(SwinBlock, self.remat_policy)
        for i, (depth, heads, (window, shift), rates) in enumerate(
            zip(c.depths, c.num_heads, c.stage_windows, c.drop_path_rates)
        ):
            for j in range(depth):
                x = block(
                    heads,
                    window,
                    shift if j % 2 else 0,
                    c.mlp_ratio,
                    rates[j],
                    deterministic=deterministic,
                    name=f"stage{i}_block{j}",
                    **kw,
                )(x)
            if i < c.num_stages - 1:
                x = PatchMerging(name=f"stage{i}_merge", **kw)(x)
            x = constrain(x, _GRID)

        x = _layer_norm("norm", **kw)(x)
        tokens = x.reshape(batch, -1, x.shape[-1])
        pooled = jnp.mean(tokens, axis=1, dtype=jnp.float32).astype(tokens.dtype)
        return pooled, tokens

    def _fuse_local_views(self, x, local_images, views, kernel_init, bias_init, **kw) -> jax.Array:
        """LAION-CLAP's "aff_2d" patch embedding: each local window's image is patched by a
        conv 3 patches long in time, the three views laid end to end along time (zero-padded
        to the grid) and merged into the global patches `x [batch, H, W, embed]` by AFF, for
        the examples `views.fused` marks (none when `views` is None)."""
        c, p = self.config, self.config.patch_size
        batch, num_local = local_images.shape[:2]
        local = nn.Conv(
            c.embed_dim,
            (3 * p, p),
            strides=(3 * p, p),
            padding="VALID",
            kernel_init=kernel_init,
            bias_init=bias_init,
            name="patch_mel_conv",
            **kw,
        )(local_images.reshape(batch * num_local, *local_images.shape[2:]))
        _, t, f, e = local.shape
        local = local.reshape(batch, num_local * t, f, e)[:, : x.shape[1]]
        local = jnp.pad(local, ((0, 0), (0, x.shape[1] - local.shape[1]), (0, 0), (0, 0)))
        fused = AttentionalFeatureFusion(name="patch_fusion", **kw)(x, local)
        if views is None:
            return x
        return jnp.where(jnp.asarray(views.fused)[:, None, None, None], fused, x)


class AttentionalFeatureFusion(nn.Module):
    """AFF (arXiv 2009.14082) as LAION-CLAP's `feature_fusion.AFF(type="2D")`, its evaluation-mode
    BatchNorms folded into the 1x1 convolutions: `w = sigmoid(local(x + y) + global(x + y))`,
    output `2 x w + 2 y (1 - w)`; `local` is Dense(C/4) -> ReLU -> Dense(C) per position, `global`
    the same on the spatial mean. `[batch, H, W, C]` twice -> `[batch, H, W, C]`."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def dense(features, name, axes):
            kernel_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros, axes[1:])
            return nn.Dense(features, name=name, kernel_init=kernel_init, bias_init=bias_init, **kw)

        def bottleneck(h, prefix):
            h = nn.relu(dense(channels // _FUSION_REDUCTION, f"{prefix}_1", ("embed", "mlp"))(h))
            return dense(channels, f"{prefix}_2", ("mlp", "embed"))(h)

        both = x + residual
        local = bottleneck(both, "local")
        pooled = bottleneck(jnp.mean(both, axis=(1, 2), keepdims=True), "global")
        weight = jax.nn.sigmoid(local + pooled)
        return 2 * x * weight + 2 * residual * (1 - weight)
