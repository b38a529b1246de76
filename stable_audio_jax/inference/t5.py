"""A frozen T5 encoder: the prompt conditioning of Stable Audio Open (SAT `T5Conditioner`).

    encoder = T5TextEncoder.from_pretrained("/models/t5-base")   # HF folder, read offline
    features, mask = encoder.text_conditioning(["lo-fi piano, 80 BPM", ""])
    # features [2, 128, 768] float32, zero on padded tokens; mask [2, 128] bool

As SAT's `T5Conditioner`: prompts are tokenized to exactly 128 tokens (`</s>` appended,
truncated, padded with id 0), encoded, and the last hidden state is multiplied by the
mask. The reference runs T5 in float16; the default here is float32 (`dtype` selects the
precision of the weights and the computation; the features come back as float32, as
SAT's `.float()` does). float16 needs a GPU/TPU: XLA:CPU's attention has no float16 dot
(use bfloat16 there).

The encoder is jitted once per batch shape and runs on a mesh like `CLAPEncoder`: the
batch is padded to a multiple of the batch axes and split over them, the weights are
placed by the logical rules (replicated on a data-parallel mesh).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

from stable_audio_jax import parallel
from stable_audio_jax.convert.t5_checkpoint import T5_MAX_LENGTH, abstract_params, load_t5_checkpoint
from stable_audio_jax.inference.frozen_text import FrozenTextEncoder
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.t5 import T5Config, T5Encoder


class T5TextEncoder(FrozenTextEncoder):
    """T5 weights placed on a mesh, the tokenizer, and the jitted conditioning function:
    `text_conditioning(prompts)` gives `(features [batch, 128, d_model] float32, zero on
    padded tokens; mask bool)`."""

    def __init__(
        self,
        config: T5Config,
        params: Any,
        tokenizer: TextTokenizer,
        mesh: jax.sharding.Mesh | None = None,
        dtype: Any = jnp.float32,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
    ):
        """params: the plain `T5Encoder` param tree (host or device arrays); it is cast to
        `dtype` and placed on `mesh` (default: every device on the data axis)."""
        self.config = config
        self.tokenizer = tokenizer
        self.mesh = mesh or parallel.create_mesh((-1, 1, 1))
        self.rules = rules
        self.dtype = jnp.dtype(dtype)
        self.model = T5Encoder(config, dtype=self.dtype, param_dtype=self.dtype)
        shardings = parallel.logical_to_shardings(abstract_params(config), self.mesh, rules)
        # Placed first, then cast on the devices: restored (already sharded) weights never
        # travel through host memory, and a bfloat16 cast of host arrays happens shard-wise.
        self.params = jax.tree.map(lambda p: p.astype(self.dtype), jax.device_put(params, shardings))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        mesh: jax.sharding.Mesh | None = None,
        dtype: Any = jnp.float32,
        max_length: int = T5_MAX_LENGTH,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
    ) -> "T5TextEncoder":
        """Loads a HF T5 folder (see `convert.t5_checkpoint`); errors name what is missing."""
        config, params, tokenizer = load_t5_checkpoint(folder, max_length=max_length)
        return cls(config, params, tokenizer, mesh=mesh, dtype=dtype, rules=rules)

    @property
    def features(self) -> int:
        return self.config.d_model

    @functools.cached_property
    def _conditioning_fn(self):
        def conditioning(params, ids, mask):
            hidden = self.model.apply({"params": params}, ids, mask)
            return hidden.astype(jnp.float32) * mask[..., None], mask

        return jax.jit(parallel.with_rules(conditioning, self.rules))
