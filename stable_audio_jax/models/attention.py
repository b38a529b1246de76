"""Multi-head attention: the one helper every transformer in the project goes through.

`dot_product_attention` is the single attention kernel call of every model (U-Net, DiT,
CLAP text tower, T5, HTSAT, PaSST). Which kernel runs is an execution setting, not part of a
model's architecture or parameters, so it is one process-wide choice (`set_attention_
implementation`, or `attention_implementation(...)` as a context), read when a function is
traced; training and benchmark configs carry it as `config.attention_impl`, the sampling
scripts as `--attention_impl`:

  "xla":        XLA's fused softmax attention (any backend, any dtype, every mask and bias);
  "cudnn":      cuDNN's flash attention through `jax.nn.dot_product_attention` (GPU, bf16/fp16);
  "pallas_tpu": the Pallas flash-attention kernel of `jax.experimental.pallas.ops.tpu`
                (TPU; the bias, the key mask folded into it, grouped heads repeated; sequence
                lengths a multiple of 128 or at most 128 and a multiple of 8);
  "auto":       the backend's kernel (cudnn on GPU, pallas_tpu on TPU, xla elsewhere), falling
                back to xla with one log line per reason when a shape or dtype does not fit.

`MultiHeadAttention` is the projection layer around it, used for the CLAP text
tower (self-attention with a padding mask), the HTSAT audio tower (windowed attention
with a relative-position bias) and the diffusion U-Net (self- and cross-attention).

Layouts are channels last: tokens `[batch, length, features]`, per-head tensors
`[batch, length, heads, head_dim]` (the "BTNH" layout `jax.nn.dot_product_attention`
expects). Projection kernels carry the logical axes `('embed', 'heads', 'kv')`, so the
`tensor` mesh axis splits heads (Megatron-style tensor parallelism) and `fsdp` splits
the model dimension, with no change here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

Dtype = Any
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas_tpu")
_AUTO_KERNEL = {"gpu": "cudnn", "tpu": "pallas_tpu"}  # other backends: xla
_TPU_BLOCK = 128  # the Pallas kernel's default block along both sequence axes
_KEY_MASK_BIAS = -1e9  # a masked key's logit bias on the Pallas path (exactly 0 weight in float32)
_implementation = "auto"
_fallbacks_logged: set[str] = set()
_call_recorders: list[list["AttentionCall"]] = []


def check_attention_implementation(name: str) -> str:
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention_impl must be one of {list(ATTENTION_IMPLEMENTATIONS)}, got {name!r}")
    return name


def set_attention_implementation(name: str) -> None:
    """The kernel every attention traced from now on uses (see the module docstring)."""
    global _implementation
    _implementation = check_attention_implementation(name)


def attention_implementation_in_use() -> str:
    return _implementation


@contextlib.contextmanager
def attention_implementation(name: str) -> Iterator[None]:
    """`set_attention_implementation(name)` for the block, restored after it."""
    previous = _implementation
    set_attention_implementation(name)
    try:
        yield
    finally:
        set_attention_implementation(previous)


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """The shapes of one traced `dot_product_attention` call (see `record_attention_calls`)."""

    query_shape: tuple[int, ...]  # [batch, q_length, heads, head_dim]
    key_shape: tuple[int, ...]  # [batch, kv_length, kv_heads, head_dim]; value has the same
    dtype: str
    bias_shape: tuple[int, ...] | None
    key_mask: bool
    scale: float | None

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the two products (logits and the weighted sum of values)."""
        batch, q_length, heads, head_dim = self.query_shape
        return 4 * batch * heads * q_length * self.key_shape[1] * head_dim


@contextlib.contextmanager
def record_attention_calls() -> Iterator[list[AttentionCall]]:
    """Collect an `AttentionCall` for every `dot_product_attention` traced in the block (e.g.
    under `jax.eval_shape` of a forward), in trace order: what a benchmark needs to time a
    model's attention on its own at the model's shapes."""
    calls: list[AttentionCall] = []
    _call_recorders.append(calls)
    try:
        yield calls
    finally:
        _call_recorders.remove(calls)


def _pallas_blocks(length: int) -> int | None:
    """The Pallas kernel's block along a sequence of `length`, None when it cannot tile it."""
    if length % _TPU_BLOCK == 0:
        return _TPU_BLOCK
    return length if length <= _TPU_BLOCK and length % 8 == 0 else None


def _pallas_problem(query: jax.Array, key: jax.Array) -> str | None:
    """Why the Pallas kernel cannot run these shapes (None: it can)."""
    for name, length in (("query", query.shape[1]), ("key", key.shape[1])):
        if _pallas_blocks(length) is None:
            return (
                f"{name} length {length} is neither a multiple of {_TPU_BLOCK} nor <= {_TPU_BLOCK} and a multiple of 8"
            )
    return None


def _pallas_tpu_attention(query, key, value, bias, mask, scale) -> jax.Array:
    """Softmax attention with the Pallas TPU flash kernel, in the layout of `dot_product_attention`."""
    from jax.experimental.pallas.ops.tpu import flash_attention as pallas

    problem = _pallas_problem(query, key)
    if problem is not None:
        raise ValueError(f"attention_impl='pallas_tpu' cannot run these shapes: {problem}")
    batch, q_len, heads, head_dim = query.shape
    kv_len, kv_heads = key.shape[1], key.shape[2]
    if kv_heads != heads:  # grouped-query attention: each key/value head serves heads // kv_heads queries
        key, value = (jnp.repeat(t, heads // kv_heads, axis=2) for t in (key, value))
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (query, key, value))  # [batch, heads, length, head_dim]
    # The kernel scales the biased logits; scaling the queries instead keeps the bias unscaled.
    q = q * jnp.asarray(head_dim**-0.5 if scale is None else scale, q.dtype)
    logits_bias = None
    if bias is not None or mask is not None:
        logits_bias = jnp.zeros((batch, heads, q_len, kv_len), jnp.float32)
        if bias is not None:
            logits_bias = logits_bias + bias.astype(jnp.float32)
        if mask is not None:
            logits_bias = jnp.where(mask, logits_bias, _KEY_MASK_BIAS)
    q_block, k_block = _pallas_blocks(q_len), _pallas_blocks(kv_len)
    blocks = pallas.BlockSizes(
        block_q=q_block,
        block_k_major=k_block,
        block_k=k_block,
        block_b=1,
        block_q_major_dkv=q_block,
        block_k_major_dkv=k_block,
        block_k_dkv=k_block,
        block_q_dkv=q_block,
        block_k_major_dq=k_block,
        block_k_dq=k_block,
        block_q_dq=q_block,
    )
    out = pallas.flash_attention(q, k, v, ab=logits_bias, sm_scale=1.0, block_sizes=blocks)
    return out.transpose(0, 2, 1, 3).astype(query.dtype)


def _log_fallback(reason: str) -> None:
    if reason not in _fallbacks_logged:
        _fallbacks_logged.add(reason)
        logging.warning("attention: falling back to the xla kernel (%s)", reason)


def _attention(implementation, query, key, value, bias, mask, scale) -> jax.Array:
    if implementation == "pallas_tpu":
        return _pallas_tpu_attention(query, key, value, bias, mask, scale)
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, implementation=implementation
    )


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    bias: jax.Array | None = None,
    key_mask: jax.Array | None = None,
    scale: float | None = None,
    implementation: Literal["auto", "xla", "cudnn", "pallas_tpu"] | None = None,
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
      implementation: the kernel (module docstring); None: the process-wide setting.

    Returns:
      `[batch, q_length, heads, head_dim]` in the query's dtype.
    """
    if _call_recorders:
        call = AttentionCall(
            tuple(query.shape),
            tuple(key.shape),
            str(query.dtype),
            None if bias is None else tuple(bias.shape),
            key_mask is not None,
            scale,
        )
        for calls in _call_recorders:
            calls.append(call)
    mask = None if key_mask is None else key_mask.astype(bool)[:, None, None, :]
    if bias is not None:
        bias = bias.astype(query.dtype)
    chosen = check_attention_implementation(implementation or _implementation)
    backend = jax.default_backend()
    if chosen == "cudnn" and backend != "gpu":
        raise ValueError(f"attention_impl='cudnn' needs a GPU; the backend is {backend}")
    if chosen != "auto":
        return _attention(chosen, query, key, value, bias, mask, scale)
    kernel = _AUTO_KERNEL.get(backend, "xla")
    if kernel == "pallas_tpu" and (problem := _pallas_problem(query, key)) is not None:
        _log_fallback(f"pallas_tpu: {problem}")
        kernel = "xla"
    if kernel == "cudnn":
        try:  # cuDNN's shape and dtype checks run while tracing
            return _attention("cudnn", query, key, value, bias, mask, scale)
        except (ValueError, NotImplementedError, RuntimeError) as error:
            _log_fallback(f"cudnn: {str(error).splitlines()[0][:200]}")
            kernel = "xla"
    return _attention(kernel, query, key, value, bias, mask, scale)


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
