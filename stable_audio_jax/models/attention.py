"""Multi-head attention: the one helper every transformer in the project goes through.

`dot_product_attention` wraps `jax.nn.dot_product_attention`, which picks cuDNN's fused
(flash) kernel on GPU when the shapes and dtypes allow it and XLA's implementation
elsewhere. `MultiHeadAttention` is the projection layer around it, used for the CLAP text
tower (self-attention with a padding mask), the HTSAT audio tower (windowed attention
with a relative-position bias) and the diffusion U-Net (self- and cross-attention).

Layouts are channels last: tokens `[batch, length, features]`, per-head tensors
`[batch, length, heads, head_dim]` (the "BTNH" layout `jax.nn.dot_product_attention`
expects). Projection kernels carry the logical axes `('embed', 'heads', 'kv')`, so the
`tensor` mesh axis splits heads (Megatron-style tensor parallelism) and `fsdp` splits
the model dimension, with no change here.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    bias: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    scale: float | None = None,
    implementation: Literal["xla", "cudnn"] | None = None,
) -> jax.Array:
    """Softmax attention per head.

    Args:
      query: `[batch, q_length, heads, head_dim]`.
      key, value: `[batch, kv_length, kv_heads, head_dim]`; `kv_heads` divides `heads`
        (grouped-query attention: query head h reads key/value head `h // (heads / kv_heads)`,
        as PyTorch's `repeat_interleave`; `kv_heads == heads` is plain multi-head attention).
      bias: added to the logits, broadcastable to `[batch, heads, q_length, kv_length]`
        (relative-position bias, shifted-window mask as large negatives).
      key_mask: `[batch, kv_length]`, True where a key may be attended to (padding
        mask). A row with every key masked attends uniformly instead of producing NaN.
      scale: multiplies the logits before the bias is added; None is `1/sqrt(head_dim)`
        (T5 passes 1.0: its query/key product is unscaled).
      implementation: None lets JAX choose (cuDNN flash on GPU when it applies).

    Returns:
      `[batch, q_length, heads, head_dim]` in the query's dtype.
    """
    mask = None if key_mask is None else key_mask.astype(bool)[:, None, None, :]
    if bias is not None:
        bias = bias.astype(query.dtype)
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, implementation=implementation
    )


class HeadProjection(nn.Module):
    """A linear map whose kernel keeps the head axes: `[..., in] -> [..., heads, head_dim]`
    (`to_heads=True`) or `[..., heads, head_dim] -> [..., out]`.

    The kernel is created at its full rank (`[in, heads, head_dim]` or `[heads, head_dim,
    out]`), so its logical axes match its shape; `nn.DenseGeneral` initialises a flattened
    2-D kernel, which clashes with 3-D logical names once a mesh is active.
    """

    features: tuple[int, ...]
    to_heads: bool
    use_bias: bool = True
    kernel_init: Any = None  # None: fan-in scaled truncated normal (LeCun) over the contracted axes
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.to_heads:
            in_dims, axes = (x.shape[-1],), ("embed", "heads", "kv")
            bias_axes, equation = ("heads", "kv"), "...i,ihd->...hd"
        else:
            in_dims, axes = x.shape[-2:], ("heads", "kv", "embed")
            bias_axes, equation = ("embed",), "...hd,hdo->...o"
        n_in = len(in_dims)
        init = self.kernel_init or nn.initializers.variance_scaling(
            1.0,
            "fan_in",
            "truncated_normal",
            in_axis=tuple(range(n_in)),
            out_axis=tuple(range(n_in, n_in + len(self.features))),
        )
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(init, axes), tuple(in_dims) + tuple(self.features), self.param_dtype
        )
        y = jnp.einsum(equation, x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, bias_axes),
                tuple(self.features),
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class MultiHeadAttention(nn.Module):
    """Query/key/value projections, attention, output projection.

    Self-attention when `context` is None, cross-attention to `context` otherwise (the
    context may have its own feature size, e.g. 768-d text tokens for a 1024-d U-Net).

    Attributes:
      num_heads: number of heads; `head_dim` defaults to `features // num_heads`.
      use_bias: bias on the q/k/v projections (BERT, Swin: yes).
      out_bias: bias on the output projection.
      out_features: output size, default the input's feature size.
      kernel_init: initializer of the full-rank kernels (None: LeCun over the fan-in).
      scale: logit scale, None for `1/sqrt(head_dim)` (see `dot_product_attention`).
    """

    num_heads: int
    head_dim: int | None = None
    use_bias: bool = True
    out_bias: bool = True
    out_features: int | None = None
    kernel_init: Any = None
    scale: float | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        key_mask: jax.Array | None = None,
        bias: jax.Array | None = None,
    ) -> jax.Array:
        """x: `[batch, length, features]`; context: `[batch, kv_length, context_features]`;
        key_mask: `[batch, kv_length]`; bias: see `dot_product_attention`.
        Returns `[batch, length, out_features]`."""
        features = x.shape[-1]
        if self.head_dim is None and features % self.num_heads:
            raise ValueError(f"features {features} are not divisible by num_heads {self.num_heads}")
        head_dim = self.head_dim or features // self.num_heads
        context = x if context is None else context
        kw = dict(kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype)
        heads = (self.num_heads, head_dim)
        query = HeadProjection(heads, True, self.use_bias, name="query", **kw)(x)
        key = HeadProjection(heads, True, self.use_bias, name="key", **kw)(context)
        value = HeadProjection(heads, True, self.use_bias, name="value", **kw)(context)
        out = dot_product_attention(query, key, value, bias=bias, key_mask=key_mask, scale=self.scale)
        return HeadProjection((self.out_features or features,), False, self.out_bias, name="out", **kw)(out)


class FeedForward(nn.Module):
    """The transformer MLP: Dense(hidden) -> activation -> Dense(out).

    `[..., features] -> [..., out_features or features]`. The hidden units carry the
    logical axis `mlp` (split over `tensor`).
    """

    hidden_features: int
    out_features: int | None = None
    activation: str = "gelu"  # "gelu" (exact erf form, as BERT and Swin), "gelu_tanh", "relu"
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        activations = {
            "gelu": lambda h: jax.nn.gelu(h, approximate=False),
            "gelu_tanh": lambda h: jax.nn.gelu(h, approximate=True),
            "relu": jax.nn.relu,
        }
        if self.activation not in activations:
            raise ValueError(f"unknown activation {self.activation!r}; known: {sorted(activations)}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.Dense(
            self.hidden_features,
            name="fc1",
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            **kw,
        )(x)
        h = activations[self.activation](h)
        return nn.Dense(
            self.out_features or x.shape[-1],
            name="fc2",
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            **kw,
        )(h)
