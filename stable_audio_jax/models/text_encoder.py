"""BERT/RoBERTa-shaped text encoder (the text tower of the CLAP conditioner), in linen.

Reference: the CLAP text branch of SA 1.0 is a RoBERTa-base encoder whose *penultimate*
hidden state (768-d, 77 tokens) conditions the diffusion model, with the tokenizer's
attention mask as key mask (arXiv 2402.04825). RoBERTa-base weights are not available offline
(no registry ships them), so the same module also loads BERT checkpoints such as all-MiniLM-L6-v2
(`stable_audio_jax.convert.bert_checkpoint`) or trains from scratch (`tiny` preset).

Architecture (post-LN, as BERT and RoBERTa):

    h = LN(word_emb[ids] + pos_emb[positions] + type_emb[0])          # dropout
    per layer:  h = LN(h + Dropout(MHA(h, key_mask=mask)))
                h = LN(h + Dropout(FFN_gelu_erf(h)))

Positions are `0..L-1` ("bert") or RoBERTa's `cumsum(mask) * mask + pad_token_id`
("roberta": real tokens count from `pad_token_id + 1`, padding sits at `pad_token_id`).

Shapes: ids and mask `[batch, length]`; hidden states `[batch, length, hidden]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from stable_audio_jax.models.attention import FeedForward, MultiHeadAttention
from stable_audio_jax.models.config_fields import checked_fields
from stable_audio_jax.models.remat import maybe_remat
from stable_audio_jax.models.sharding import BATCH_LENGTH_HIDDEN, constrain

Dtype = Any

_POSITION_STYLES = ("roberta", "bert")
_POOLINGS = ("cls_pooler", "mean")


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Architecture of the text encoder; see the presets for the reference values."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    position_style: Literal["roberta", "bert"] = "roberta"
    # "cls_pooler": tanh(Dense(h[:, 0])), BERT/RoBERTa's pooler; "mean": masked mean of the
    # last hidden state (sentence-transformers). The pooler weights exist either way, as in
    # HF BertModel, so checkpoints load unchanged; `TextEncoderOutput.pooler_output` has them.
    pooling: Literal["cls_pooler", "mean"] = "cls_pooler"
    dropout_rate: float = 0.0

    def __post_init__(self):
        if self.position_style not in _POSITION_STYLES:
            raise ValueError(f"position_style must be one of {_POSITION_STYLES}, got {self.position_style!r}")
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.type_vocab_size < 1:
            raise ValueError(f"type_vocab_size must be >= 1, got {self.type_vocab_size}")

    @property
    def max_length(self) -> int:
        """Longest token sequence the position table covers."""
        if self.position_style == "roberta":
            return self.max_positions - self.pad_token_id - 1
        return self.max_positions

    @classmethod
    def from_dict(cls, d: dict) -> "TextEncoderConfig":
        return cls(**checked_fields(cls, d, "text encoder"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def roberta_base(cls) -> "TextEncoderConfig":
        """RoBERTa-base, the CLAP text tower of SA 1.0 (124,645,632 params)."""
        return cls(
            vocab_size=50265,
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            mlp_dim=3072,
            max_positions=514,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=1,
            position_style="roberta",
            pooling="cls_pooler",
        )

    @classmethod
    def minilm_l6(cls) -> "TextEncoderConfig":
        """all-MiniLM-L6-v2 (its config.json; 22,713,216 params), mean pooling."""
        return cls(
            vocab_size=30522,
            hidden_size=384,
            num_layers=6,
            num_heads=12,
            mlp_dim=1536,
            max_positions=512,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
            pad_token_id=0,
            position_style="bert",
            pooling="mean",
        )

    @classmethod
    def tiny(cls, vocab_size: int = 4096) -> "TextEncoderConfig":
        """A small RoBERTa-style encoder for tests and from-scratch training on captions."""
        return cls(
            vocab_size=vocab_size,
            hidden_size=128,
            num_layers=2,
            num_heads=4,
            mlp_dim=512,
            max_positions=80,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=1,
            position_style="roberta",
            pooling="cls_pooler",
        )


def expected_num_params(config: TextEncoderConfig) -> int:
    """Closed-form parameter count, with V vocab, P positions, T token types, H hidden, M mlp:

        embeddings  V*H + P*H + T*H + 2*H                 (three tables, LayerNorm)
        per layer   4*(H*H + H) + 2*H                     (q, k, v, out with biases; LayerNorm)
                    + (H*M + M) + (M*H + H) + 2*H         (MLP; LayerNorm)
                  = 4*H^2 + 2*H*M + 9*H + M
        pooler      H*H + H

    RoBERTa-base: 50265*768 + 514*768 + 1*768 + 2*768 = 39,000,576; 12 layers x 7,087,872
    = 85,054,464; pooler 590,592; total 124,645,632.
    """
    c = config
    h, m = c.hidden_size, c.mlp_dim
    embeddings = (c.vocab_size + c.max_positions + c.type_vocab_size) * h + 2 * h
    per_layer = 4 * h * h + 2 * h * m + 9 * h + m
    pooler = h * h + h
    return embeddings + c.num_layers * per_layer + pooler


def check_vocab(tokenizer: Any, config: TextEncoderConfig) -> None:
    """Raises ValueError unless every id `tokenizer` can produce has an embedding row.

    `tokenizer` is anything with `vocab_size` (e.g. `TextTokenizer`); also checks that the
    tokenizer's `max_length` fits the position table when it has one.
    """
    vocab_size = int(tokenizer.vocab_size)
    if vocab_size > config.vocab_size:
        raise ValueError(
            f"tokenizer has {vocab_size} ids but the text encoder embeds only "
            f"{config.vocab_size}; use a config with vocab_size >= {vocab_size}"
        )
    max_length = getattr(tokenizer, "max_length", None)
    if max_length is not None and int(max_length) > config.max_length:
        raise ValueError(
            f"tokenizer max_length {max_length} exceeds the {config.max_length} positions "
            f"the text encoder supports (max_positions={config.max_positions}, "
            f"position_style={config.position_style!r})"
        )


def position_ids(mask: jax.Array, config: TextEncoderConfig) -> jax.Array:
    """Position index of every token, `[batch, length]` int32 (see the module docstring)."""
    mask = mask.astype(jnp.int32)
    if config.position_style == "roberta":
        return jnp.cumsum(mask, axis=1) * mask + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(mask.shape[1], dtype=jnp.int32), mask.shape)


class TextEncoderOutput(NamedTuple):
    """Outputs of `TextEncoder`.

    Attributes:
      hidden_states: num_layers + 1 arrays `[batch, length, hidden]`: index 0 is the
        embedding output, index i the output of layer i (as HF `output_hidden_states`), so
        `hidden_states[-2]` is the penultimate layer the SA 1.0 diffusion model attends to.
      pooled: `[batch, hidden]`, the sentence vector chosen by `config.pooling`.
      pooler_output: `[batch, hidden]`, `tanh(Dense(hidden_states[-1][:, 0]))` (HF's
        `pooler_output`), computed whatever the pooling.
    """

    hidden_states: tuple[jax.Array, ...]
    pooled: jax.Array
    pooler_output: jax.Array

    @property
    def last_hidden_state(self) -> jax.Array:
        return self.hidden_states[-1]


def _init(stddev: float = 0.02) -> Any:
    # BERT initialises every weight matrix and embedding table with N(0, 0.02).
    return nn.initializers.normal(stddev)


def _layer_norm(config: TextEncoderConfig, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    )


class TextEmbeddings(nn.Module):
    """Word + position + token-type (type 0) embeddings, LayerNorm, dropout.

    `[batch, length]` ids and mask -> `[batch, length, hidden]`.
    """

    config: TextEncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        c = self.config

        def table(num: int, name: str, axes: tuple[str | None, str]) -> nn.Embed:
            return nn.Embed(
                num,
                c.hidden_size,
                name=name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                embedding_init=nn.with_logical_partitioning(_init(), axes),
            )

        words = table(c.vocab_size, "word_embeddings", ("vocab", "embed"))(token_ids)
        positions = table(c.max_positions, "position_embeddings", (None, "embed"))(position_ids(mask, c))
        token_types = table(c.type_vocab_size, "token_type_embeddings", (None, "embed"))(jnp.zeros((1, 1), jnp.int32))
        x = words + positions + token_types
        x = _layer_norm(c, "layer_norm", self.dtype, self.param_dtype)(x)
        x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
        return constrain(x, BATCH_LENGTH_HIDDEN)


class TextEncoderLayer(nn.Module):
    """One post-LN transformer layer: `[batch, length, hidden]` -> same.

    `deterministic` (no dropout) is an attribute rather than a call argument, so that
    `nn.remat` of the layer (`TextEncoder.remat_policy`) traces only arrays: a Python bool
    passed to a remat'ed `__call__` would become a tracer.
    """

    config: TextEncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = MultiHeadAttention(c.num_heads, kernel_init=_init(), name="attention", **kw)(x, key_mask=mask)
        h = nn.Dropout(c.dropout_rate)(h, deterministic=self.deterministic)
        x = _layer_norm(c, "attention_norm", **kw)(x + h)
        h = FeedForward(c.mlp_dim, activation="gelu", kernel_init=_init(), name="mlp", **kw)(x)
        h = nn.Dropout(c.dropout_rate)(h, deterministic=self.deterministic)
        x = _layer_norm(c, "output_norm", **kw)(x + h)
        return constrain(x, BATCH_LENGTH_HIDDEN)


class TextEncoder(nn.Module):
    """BERT/RoBERTa encoder: token ids and mask -> `TextEncoderOutput`.

    Parameters: `embeddings/{word,position,token_type}_embeddings/embedding`,
    `embeddings/layer_norm`, `layer_{i}/{attention/{query,key,value,out},attention_norm,
    mlp/{fc1,fc2},output_norm}`, `pooler`. Dropout (when `deterministic=False`) draws from
    the 'dropout' rng; attention probabilities are not dropped.

    `remat_policy` (one of `remat.REMAT_CHOICES`, default "none") rematerialises every
    layer in the backward pass (`models/remat.py`); the parameters are the same whatever
    the policy, so BERT / RoBERTa imports and checkpoints load either way.
    """

    config: TextEncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, token_ids: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> TextEncoderOutput:
        """token_ids: int `[batch, length]`; mask: bool `[batch, length]`, True on real tokens.

        Ids must be below `config.vocab_size` (out-of-range ids are not checked on device;
        see `check_vocab`) and `length` at most `config.max_length`.
        """
        c = self.config
        if token_ids.ndim != 2 or token_ids.shape != mask.shape:
            raise ValueError(f"token_ids and mask must both be [batch, length], got {token_ids.shape} and {mask.shape}")
        if token_ids.shape[1] > c.max_length:
            raise ValueError(
                f"sequence length {token_ids.shape[1]} exceeds the {c.max_length} positions "
                f"of this text encoder (max_positions={c.max_positions})"
            )
        mask = mask.astype(bool)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = TextEmbeddings(c, name="embeddings", **kw)(token_ids, mask, deterministic=deterministic)
        hidden_states = [x]
        layer = maybe_remat(TextEncoderLayer, self.remat_policy)
        for i in range(c.num_layers):
            x = layer(c, deterministic=deterministic, name=f"layer_{i}", **kw)(x, mask)
            hidden_states.append(x)
        pooler_output = jnp.tanh(
            nn.Dense(
                c.hidden_size,
                name="pooler",
                kernel_init=nn.with_logical_partitioning(_init(), ("embed", None)),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                **kw,
            )(x[:, 0])
        )
        if c.pooling == "mean":
            pooled = masked_mean(x, mask)
        else:
            pooled = pooler_output
        return TextEncoderOutput(tuple(hidden_states), pooled, pooler_output)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x` `[batch, length, hidden]` over the positions where `mask` is True.

    The sum is taken in float32; the count is clamped at 1e-9, as sentence-transformers does.
    Returns `[batch, hidden]` in `x`'s dtype.
    """
    weights = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(x.astype(jnp.float32) * weights, axis=1)
    count = jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    return (total / count).astype(x.dtype)


def num_params(params: Any) -> int:
    """Total number of scalars in a (possibly boxed or abstract) param tree."""
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
    return sum(math.prod(leaf.shape) for leaf in leaves)
