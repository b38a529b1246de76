"""Training CLAP: symmetric InfoNCE between audio crops and their captions.

Captions are tokenised on the host (`model_inputs`, the Rust tokenizer takes
microseconds per caption) into fixed-length ids and masks, so the device step sees only
arrays. One AdamW optimizer trains both towers, the projections and the temperature; an
EMA of the whole model is what evaluation and the frozen text conditioner use.

Memory knobs: `model.remat_policy` rematerialises the towers' blocks (`models/clap.py`),
and `optimizer.grad_accum_steps = k` (default 1; it must divide `data.batch_size`)
back-propagates the global batch `k` micro-batches at a time with the gradient cache
(`training/grad_cache.py`): every caption is still contrasted with every clip of the
global batch, so the loss and gradient are those of the unsplit batch, for the price of
a second forward pass of the towers.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.losses.contrastive import contrastive_loss
from stable_audio_jax.metrics.retrieval import recall_at_k
from stable_audio_jax.models.clap import CLAP, CLAPConfig
from stable_audio_jax.models.text_encoder import check_vocab
from stable_audio_jax.training import accumulate, grad_cache, schedules
from stable_audio_jax.training.task import Batch, Metrics, Task
from stable_audio_jax.training.train_state import TrainState


def build_clap(config: ml_collections.ConfigDict) -> CLAP:
    """The CLAP module described by `config.model` (and `config.dtype`)."""
    return CLAP(
        CLAPConfig.from_dict(config.model.to_dict()),
        dtype=jnp.dtype(config.get("dtype", "float32")),
        param_dtype=jnp.dtype(config.get("param_dtype", "float32")),
    )


def load_tokenizer(config: ml_collections.ConfigDict) -> TextTokenizer:
    """The tokenizer named by `config.text.tokenizer`, checked against the text tower."""
    path = config.text.tokenizer
    if not path:
        raise ValueError(
            "config.text.tokenizer is empty: train one on your captions with "
            "`python data/train_tokenizer.py --manifest=<train.jsonl> --output=<dir>/tokenizer.json` "
            "and pass --config.text.tokenizer=<dir>/tokenizer.json"
        )
    tokenizer = TextTokenizer.from_file(path, max_length=config.text.max_length)
    check_vocab(tokenizer, CLAPConfig.from_dict(config.model.to_dict()).text)
    return tokenizer


class CLAPTask(Task):
    name = "clap"
    progress_keys = ("loss", "text_to_audio_accuracy", "logit_scale")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model = build_clap(config)
        self.tx = schedules.adamw(config.optimizer)
        # Micro-batches of the gradient cache; 1 (also for optimizer sections that predate
        # the key) is the plain step.
        self.grad_accum_steps = accumulate.config_steps(config)
        audio = self.model.config.audio
        if config.data.sample_rate != audio.sample_rate:
            raise ValueError(
                f"data.sample_rate={config.data.sample_rate} differs from the audio tower's "
                f"model.audio.sample_rate={audio.sample_rate}; set them equal (the pipeline "
                "resamples every file to data.sample_rate)"
            )
        max_tokens = self.model.config.text.max_positions - (
            self.model.config.text.pad_token_id + 1 if self.model.config.text.position_style == "roberta" else 0
        )
        if config.text.max_length > max_tokens:
            raise ValueError(
                f"text.max_length={config.text.max_length} exceeds the {max_tokens} positions "
                f"of the text tower (model.text.max_positions={self.model.config.text.max_positions})"
            )

    @functools.cached_property
    def tokenizer(self) -> TextTokenizer:
        """Loaded on first use: parameter counts and benchmarks need no tokenizer file."""
        return load_tokenizer(self.config)

    def write_assets(self, directory: str) -> None:
        # Called by the trainer at start-up, so a bad tokenizer fails before any compilation.
        # The run keeps its own copy: a trained CLAP loads from its run directory alone.
        tokenizer = self.tokenizer
        path = os.path.join(directory, "tokenizer.json")
        if not os.path.exists(path):  # a resumed run keeps the tokenizer it started with
            tokenizer.save(path)

    # ----------------------------------------------------------------- state
    def example_inputs(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Zero inputs of the model's shapes: audio `[1, crop, 2]`, ids and mask `[1, max_length]`."""
        length = self.config.text.max_length
        audio = jnp.zeros((1, self.config.data.sample_size, 2), jnp.float32)
        return audio, jnp.zeros((1, length), jnp.int32), jnp.ones((1, length), bool)

    def init_state(self, rng: jax.Array) -> TrainState:
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        params = self.model.init({"params": params_rng, "dropout": dropout_rng}, *self.example_inputs())["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params={"clap": params},
            opt_state={"clap": self.tx.init(params)},
            ema_params={"clap": params},
            rng=state_rng,
        )

    # ------------------------------------------------------------------ step
    def embed(self, params: Any, inputs: Batch, dropout_rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Training-mode (dropout on) audio and text embeddings `[batch, embed_dim]` of
        `inputs` (`audio`, `text_ids`, `text_mask`); row i depends on example i only."""
        audio_emb, text_emb, _ = self.model.apply(
            {"params": params},
            inputs["audio"],
            inputs["text_ids"],
            inputs["text_mask"],
            deterministic=False,
            rngs={"dropout": dropout_rng},
        )
        return audio_emb, text_emb

    def contrastive(self, params: Any, embeddings: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, Metrics]:
        """The symmetric InfoNCE loss of the whole batch's paired embeddings, with the
        model's (clipped) temperature, and its metrics."""
        logit_scale = self.model.apply({"params": params}, method=self.model.log_temperature)
        loss, metrics = contrastive_loss(*embeddings, logit_scale)
        return loss, dict(metrics, loss=loss, logit_scale=jnp.exp(logit_scale))

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One AdamW + EMA update on the global batch; with `optimizer.grad_accum_steps > 1`
        the gradient comes from the gradient cache (the same loss, metrics and gradient up
        to rounding; dropout masks are drawn per micro-batch, so they differ from k=1's)."""
        inputs = {k: batch[k] for k in ("audio", "text_ids", "text_mask")}
        (_, metrics), grads = grad_cache.grad_cache_value_and_grad(
            self.embed, self.contrastive, state.params["clap"], inputs, state.step_rng(), self.grad_accum_steps
        )
        return state.apply_gradients(grads, self.tx, "clap", ema=self.config.ema), metrics

    def model_inputs(self, batch: Batch) -> dict[str, np.ndarray]:
        ids, mask = self.tokenizer([str(c) for c in batch["caption"]])
        return {"audio": np.asarray(batch["audio"], np.float32), "text_ids": ids, "text_mask": mask}

    # ------------------------------------------------------------------ eval
    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """Embeddings of the eval batch with the EMA weights, plus its contrastive loss."""
        params = state.ema_params if self.config.get("eval_use_ema", True) else state.params
        audio_emb, text_emb, logit_scale = self.model.apply(
            {"params": params["clap"]}, batch["audio"], batch["text_ids"], batch["text_mask"]
        )
        loss, metrics = contrastive_loss(audio_emb, text_emb, logit_scale)
        return dict(metrics, audio_embeddings=audio_emb, text_embeddings=text_emb)

    def write_eval(self, outputs: dict[str, np.ndarray], batch: Batch, step: int, out_dir: str) -> dict[str, float]:
        """In-batch retrieval recall (text->audio, audio->text) next to chance."""
        scalars = {k: float(v) for k, v in outputs.items() if np.ndim(v) == 0}
        similarity = outputs["text_embeddings"] @ outputs["audio_embeddings"].T
        scalars.update(recall_at_k(similarity, ks=(1, 5)))
        return scalars


def clap_params(state: TrainState, use_ema: bool = True) -> Any:
    """The CLAP parameters of a train state (EMA by default)."""
    return (state.ema_params if use_ema else state.params)["clap"]


def tokenizer_in_run(run_dir: str) -> str | None:
    """The tokenizer copy a CLAP run directory keeps (see `CLAPTask.write_assets`), if any."""
    path = os.path.join(run_dir, "assets", "tokenizer.json")
    return path if os.path.exists(path) else None
