"""Shared layers: Snake activations, convolutions and PyTorch-style initialisers.

All layers are channels last, as Flax expects: 1-D signals are `[batch, time, channels]`,
2-D maps are `[batch, height, width, channels]`. Every parameter carries logical axis
names (see `stable_audio_jax.parallel`), so one rules table decides how it is sharded.

The convolutions reproduce PyTorch's `nn.Conv1d` / `nn.Conv2d` / `nn.ConvTranspose1d`:
their default initialisation, their padding and output-length arithmetic, and kernels
that are PyTorch's weights transposed to `[*taps, in, out]`, so reference checkpoints
import by a transpose. Each conv is plain (`kernel`) or weight-normalised as PyTorch's
legacy `weight_norm(dim=0)` (`weight_v`, `weight_g`), which the reference VAEs and
discriminator use: the effective kernel is `g * v / ||v||`, with one `g` per *output*
channel for a convolution and one per *input* channel for a transposed convolution
(PyTorch's dim 0 of a ConvTranspose weight is the input channel). Keeping that layout
makes the parameter count and the checkpoint import exact.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]
# Explicit zero padding of one spatial dim: PyTorch's symmetric `p`, or `(left, right)`.
Padding = int | tuple[int, int]

# PyTorch's default conv and Linear init (kaiming_uniform with a=sqrt(5)) is uniform with
# variance 1/(3 * fan_in); matching it keeps training dynamics close to the reference.
torch_conv_init: Initializer = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# The same for a transposed conv kernel `[taps, in, out]`: PyTorch takes its fan-in from
# weight dim 1 of `(in, out, taps)`, i.e. taps * out.
torch_conv_transpose_init: Initializer = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 2), out_axis=1
)


def torch_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default conv and Linear bias init: uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_dense(
    features: int,
    fan_in: int,
    axes: tuple[str | None, str | None],
    name: str,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.Dense:
    """An `nn.Dense` initialised like PyTorch's `nn.Linear` (`fan_in` = input width), with
    logical axes `axes` on the kernel `[in, out]` and `axes[1]` on the bias `[out]`."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(torch_conv_init, axes),
        bias_init=nn.with_logical_partitioning(torch_bias_init(fan_in), (axes[1],)),
    )


def _logical(init: Initializer, names: tuple[str | None, ...]) -> Initializer:
    return nn.with_logical_partitioning(init, names)


class Snake(nn.Module):
    """Snake activation, `x + 1/b * sin(a * x)^2`, with per-channel `a` and `b`.

    `beta=True, log_scale=True` is the SnakeBeta of the Oobleck VAE (SAO): `a = exp(alpha)`,
    `b = exp(beta)`, both stored in log space and initialised to 0. `beta=False,
    log_scale=False` is DAC's single-parameter Snake1d (SA 1.0 VAE): `a = b = alpha`,
    initialised to 1.

    Input and output: `[..., channels]`.
    """

    beta: bool = True
    log_scale: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        init = nn.initializers.zeros if self.log_scale else nn.initializers.ones
        alpha = self.param("alpha", _logical(init, ("channels",)), (channels,), self.param_dtype)
        beta = self.param("beta", _logical(init, ("channels",)), (channels,), self.param_dtype) if self.beta else alpha
        if self.log_scale:
            alpha, beta = jnp.exp(alpha), jnp.exp(beta)
        x = x.astype(self.dtype)
        alpha, beta = alpha.astype(self.dtype), beta.astype(self.dtype)
        return x + jnp.reciprocal(beta + 1e-9) * jnp.square(jnp.sin(alpha * x))


def same_padding(kernel_size: int, stride: int = 1) -> tuple[int, int]:
    """`(left, right)` padding of a 1-D conv that maps a length L (a multiple of `stride`)
    to `L / stride`: `kernel_size - stride` in all, the odd sample on the left, as ADP's
    convs in the SA 1.0 U-Net (`models/unet.py`; ADP pads more on the right for other
    lengths, which the U-Net never sees). Trimming the same amounts from a transposed
    conv's full output gives exactly `L * stride`."""
    total = kernel_size - stride
    return total - total // 2, total // 2


def _conv_kernel(
    module: nn.Module, shape: tuple[int, ...], init: Initializer, weight_norm: bool, gain_axis: int
) -> jax.Array:
    """Creates `module`'s kernel `shape` `[*taps, in, out]` and returns it, in param dtype.

    Plain: one param `kernel`. Weight-normalised: `weight_v` of `shape` and `weight_g`, one
    gain per entry of axis `gain_axis` (the norm runs over every other axis).
    """
    names = (None,) * (len(shape) - 2) + ("conv_in", "conv_out")
    if not weight_norm:
        return module.param("kernel", _logical(init, names), shape, module.param_dtype)
    v = module.param("weight_v", _logical(init, names), shape, module.param_dtype)
    norm_axes = tuple(a for a in range(len(shape)) if a != gain_axis % len(shape))
    # PyTorch's weight_norm starts with g = ||v||, so the initial kernel equals v.
    g = module.param(
        "weight_g",
        _logical(lambda *_: jnp.sqrt(jnp.sum(jnp.square(v), axis=norm_axes)), (names[gain_axis],)),
        (shape[gain_axis],),
        module.param_dtype,
    )
    return _weight_norm(v, g, norm_axes)


def _weight_norm(v: jax.Array, g: jax.Array, norm_axes: tuple[int, ...]) -> jax.Array:
    """`g * v / ||v||`, the norm taken over `norm_axes`; `g` broadcasts over them."""
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=norm_axes, keepdims=True))
    return v * (jnp.expand_dims(g, norm_axes) / norm)


def _add_bias(module: nn.Module, y: jax.Array, fan_in: int) -> jax.Array:
    """`y + bias`, the bias `[out]` created on `module` with PyTorch's init for `fan_in`."""
    bias = module.param("bias", _logical(torch_bias_init(fan_in), ("conv_out",)), (y.shape[-1],), module.param_dtype)
    return y + bias.astype(module.dtype)


def _pad_explicitly(x: jax.Array, spatial_padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Zero-pad the spatial dims of a channels-last array.

    Padding with `jnp.pad` and convolving 'VALID' computes the same values as the conv's
    own padding, but when that padding makes the output longer than the input, XLA:CPU
    computes the kernel gradient 100x slower (measured: 22 s vs 0.14 s for k=7, pad 9).
    """
    return jnp.pad(x, [(0, 0), *spatial_padding, (0, 0)])


def _dimension_numbers(ndim: int) -> tuple[str, str, str]:
    spatial = "HWD"[:ndim] if ndim > 1 else "W"
    return (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")


def _conv(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[Padding] | str, dilation: Sequence[int]
) -> jax.Array:
    """Channels-last cross-correlation, `x` `[batch, *spatial, in]`, `kernel` `[*taps, in, out]`;
    `padding` per spatial dim (explicit zeros, see `_pad_explicitly`) or an XLA string."""
    ndim = kernel.ndim - 2
    if not isinstance(padding, str):
        pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
        x, padding = _pad_explicitly(x, pairs), "VALID"
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=tuple(strides),
        padding=padding,
        rhs_dilation=tuple(dilation),
        dimension_numbers=_dimension_numbers(ndim),
    )


def polyphase_conv_transpose(x: jax.Array, kernel: jax.Array, stride: int, padding: tuple[int, int]) -> jax.Array:
    """PyTorch's ConvTranspose1d as one dense convolution plus an interleave.

    The direct form (convolving an input with `stride - 1` zeros inserted between samples)
    spends most multiply-adds on those zeros, and XLA:CPU computes its kernel gradient
    slowly. Split the kernel into `Q = ceil(k / stride)` taps per output phase instead:
    output sample `u * stride + r` is `sum_q x[u - q] . W[q * stride + r]`, a plain
    length-Q convolution that emits all `stride` phases as channels.

    x `[batch, L, in]`, kernel `[k, in, out]` (PyTorch tap order), `padding` the
    `(left, right)` samples trimmed from the full output (PyTorch's `padding=p` is
    `(p, p)`) -> `[batch, (L - 1) * stride + k - left - right, out]`.
    """
    k, cin, cout = kernel.shape
    left, right = padding
    taps = -(-k // stride)
    kernel = jnp.pad(kernel, ((0, taps * stride - k), (0, 0), (0, 0)))
    # [taps*stride, in, out] -> [taps, stride, in, out]; tap m of the conv multiplies
    # x[u - (taps - 1 - m)], i.e. kernel block taps - 1 - m.
    blocks = kernel.reshape(taps, stride, cin, cout)[::-1]
    dense = jnp.transpose(blocks, (0, 2, 1, 3)).reshape(taps, cin, stride * cout)
    length = (x.shape[1] - 1) * stride + k - left - right
    y = _conv(x, dense, (1,), [(taps - 1, taps - 1)], (1,))
    batch, num_blocks, _ = y.shape
    y = y.reshape(batch, num_blocks * stride, cout)  # interleave the phases
    return y[:, left : left + length]


class WNConv(nn.Module):
    """N-d convolution (N = number of `kernel_size` entries), weight-normalised unless
    `weight_norm=False`.

    Parameters: `weight_v` `[*kernel_size, in, out]` and `weight_g` `[out]` (or `kernel`
    `[*kernel_size, in, out]` without weight norm), `bias` `[out]`. `padding` is explicit
    per spatial dim, as PyTorch's (`p` on both sides, or `(left, right)`), or an XLA
    string such as 'SAME'. Input `[batch, *spatial, in]` -> output `[batch, *spatial', out]`.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | None = None
    kernel_dilation: Sequence[int] | None = None
    padding: Sequence[Padding] | str = "SAME"
    use_bias: bool = True
    weight_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ndim = len(self.kernel_size)
        in_features = x.shape[-1]
        kernel = _conv_kernel(
            self, (*self.kernel_size, in_features, self.features), torch_conv_init, self.weight_norm, gain_axis=-1
        )
        y = _conv(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            self.strides or (1,) * ndim,
            self.padding,
            self.kernel_dilation or (1,) * ndim,
        )
        if self.use_bias:
            y = _add_bias(self, y, math.prod(self.kernel_size) * in_features)
        return y


class Conv1d(nn.Module):
    """Plain 1-D convolution (PyTorch's `nn.Conv1d` with its default init).

    Parameters: `kernel` `[kernel_size, in, out]` (PyTorch's `(out, in, k)` weight
    transposed), `bias` `[out]`. `padding` is PyTorch's (`p` on both sides) or
    `(left, right)`; None is `same_padding(kernel_size, stride)`, which maps
    `[batch, L, in]` -> `[batch, L / stride, out]` for L a multiple of `stride`.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: Padding | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        kernel = _conv_kernel(
            self, (self.kernel_size, in_features, self.features), torch_conv_init, weight_norm=False, gain_axis=-1
        )
        padding = same_padding(self.kernel_size, self.stride) if self.padding is None else self.padding
        y = _conv(x.astype(self.dtype), kernel.astype(self.dtype), (self.stride,), [padding], (1,))
        return _add_bias(self, y, self.kernel_size * in_features)


class ConvTranspose1d(nn.Module):
    """1-D transposed convolution with PyTorch's length arithmetic (`polyphase_conv_transpose`).

    Output length is `(L - 1) * stride - 2 * padding + kernel_size`; `padding=None` trims
    `same_padding(kernel_size, stride)` instead, for exactly `L * stride`. With the Oobleck
    choice `kernel_size = 2 * stride`, `padding = ceil(stride / 2)` and an even stride the
    two agree.

    Parameters: `kernel` `[kernel_size, in, out]` (or, with `weight_norm`, `weight_v` of
    that shape and `weight_g` `[in]`) holding PyTorch's `(in, out, kernel)` weight
    transposed, `bias` `[out]`. Input `[batch, time, in]` -> output `[batch, time', out]`.
    """

    features: int
    kernel_size: int
    stride: int
    padding: int | None = None
    use_bias: bool = True
    weight_norm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        kernel = _conv_kernel(
            self,
            (self.kernel_size, in_features, self.features),
            torch_conv_transpose_init,
            self.weight_norm,
            gain_axis=1,
        )
        padding = same_padding(self.kernel_size, self.stride) if self.padding is None else (self.padding,) * 2
        y = polyphase_conv_transpose(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, padding)
        if self.use_bias:
            # PyTorch takes a ConvTranspose's bias fan-in from weight dim 1, the output channels.
            y = _add_bias(self, y, self.kernel_size * self.features)
        return y


class WNConvTranspose1d(ConvTranspose1d):
    """`ConvTranspose1d` weight-normalised by default: `weight_v` `[kernel, in, out]`,
    `weight_g` `[in]`, `bias` `[out]`."""

    weight_norm: bool = True
