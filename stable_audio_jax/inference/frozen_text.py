"""What the frozen prompt encoders (T5, the CLAP text branch) share: tokenize, then one
jitted conditioning function on the mesh.

A subclass sets `tokenizer`, `params`, `mesh` and `rules` and defines `_conditioning_fn`,
`(params, ids [batch, length], mask [batch, length]) -> (features [batch, length, width]
float32, mask)`; `text_conditioning` pads the batch to the mesh's batch axes, splits it
over them and cuts the result back (`parallel.run_batch_on_mesh`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer


class FrozenTextEncoder:
    """Base of the frozen text encoders; see the module docstring."""

    tokenizer: TextTokenizer
    params: Any
    mesh: jax.sharding.Mesh
    rules: parallel.Rules
    _conditioning_fn: Callable[..., tuple[jax.Array, jax.Array]]

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids int32 and mask bool, both `[batch, max_length]` (framed, truncated, padded)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        return self.tokenizer(list(prompts))

    def text_conditioning(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        """`(features [batch, max_length, width] float32, mask [batch, max_length] bool)`,
        as arrays split over the mesh's batch axes."""
        return parallel.run_batch_on_mesh(
            self._conditioning_fn, self.params, self.tokenize(prompts), self.mesh, self.rules
        )
