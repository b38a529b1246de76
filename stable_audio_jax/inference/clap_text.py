"""The frozen text branch of an imported CLAP: the prompt conditioning of Stable Audio 1.0.

    encoder = CLAPTextEncoder(config, params, tokenizer, feature_layer=-2)
    features, mask = encoder.text_conditioning(["lo-fi piano, 80 BPM", ""])
    # features [2, 77, hidden] float32, mask [2, 77] bool

As stable-audio-tools' `CLAPTextConditioner` with `use_text_features`: prompts are
tokenized to 77 tokens and the features are hidden state `feature_layer` of the RoBERTa
text branch (the penultimate one in SA 1.0), returned as they are (padded positions are
not zeroed: the U-Net masks them) with the tokenizer's attention mask. Imported weights
come from `convert/clap_text_checkpoint.py`; a CLAP trained here has `CLAPEncoder`
(`inference/clap.py`) instead, which also holds the audio tower.

Jitted once per batch shape; the batch is split over the mesh's batch axes and the
weights are placed by the logical rules, as the other frozen encoders.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from stable_audio_jax import parallel
from stable_audio_jax.convert.clap_text_checkpoint import abstract_params
from stable_audio_jax.inference.frozen_text import FrozenTextEncoder
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.text_encoder import TextEncoder, TextEncoderConfig


class CLAPTextEncoder(FrozenTextEncoder):
    """RoBERTa weights placed on a mesh, the tokenizer, and the jitted conditioning function:
    `text_conditioning(prompts)` gives `(features [batch, 77, hidden] float32, mask bool)`."""

    def __init__(
        self,
        config: TextEncoderConfig,
        params: Any,
        tokenizer: TextTokenizer,
        *,
        feature_layer: int = -2,
        mesh: jax.sharding.Mesh | None = None,
        rules: parallel.Rules = parallel.DEFAULT_RULES,
    ):
        """params: the plain `TextEncoder` param tree (host or device arrays), placed on
        `mesh` (default: every device on the data axis)."""
        if not -(config.num_layers + 1) <= feature_layer <= config.num_layers:
            raise ValueError(f"feature_layer={feature_layer} is out of range for {config.num_layers} layers")
        self.config = config
        self.tokenizer = tokenizer
        self.feature_layer = int(feature_layer)
        self.mesh = mesh or parallel.create_mesh((-1, 1, 1))
        self.rules = rules
        self.model = TextEncoder(config)
        self.params = jax.device_put(params, parallel.logical_to_shardings(abstract_params(config), self.mesh, rules))

    @functools.cached_property
    def _conditioning_fn(self):
        def conditioning(params, ids, mask):
            hidden = self.model.apply({"params": params}, ids, mask).hidden_states[self.feature_layer]
            return hidden.astype(jnp.float32), mask

        return jax.jit(parallel.with_rules(conditioning, self.rules))
