"""What a model family brings to the generic trainer.

A task is a loss function plus how to build its inputs and state; the trainer knows
nothing about models, and models know nothing about training. Every method that runs
on devices is pure (no Python side effects), so the trainer can `jax.jit` it with
shardings and donation.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stable_audio_jax.training.train_state import TrainState

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]


class Task(abc.ABC):
    """Base class of the per-model training logic (VAE, CLAP, diffusion)."""

    name: str = "task"
    progress_keys: tuple[str, ...] = ("loss",)  # metrics shown on the progress bar
    # Keys of `params` / `ema_params` that `config.init_from` fills from existing weights (the
    # parts of a pretrained directory of the same names, or another run's EMA); () for none.
    pretrained_parts: tuple[str, ...] = ()
    # Tasks whose runs `config.init_from` may name (their EMA holds `pretrained_parts`); () = this task's.
    init_from_tasks: tuple[str, ...] = ()

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @abc.abstractmethod
    def init_state(self, rng: jax.Array) -> TrainState:
        """A fresh state from a raw uint32 key; params may carry logical-axis boxes."""

    def pretrained_abstract(self, abstract: TrainState) -> dict[str, Any]:
        """`{part: abstract tree}` (leaves carry shardings) that the weights of
        `config.init_from` are read into, for each of `pretrained_parts`."""
        return {part: abstract.params[part] for part in self.pretrained_parts}

    def with_pretrained(self, state: TrainState, weights: dict[str, Any], abstract: TrainState) -> TrainState:
        """`state` starting from `weights` (read into `pretrained_abstract(abstract)`): by
        default they become the params and the EMA, on `abstract`'s shardings (two copies: the
        train step donates the state, and params and EMA may not share buffers)."""
        shardings = {part: jax.tree.map(lambda x: x.sharding, abstract.params[part]) for part in weights}
        place = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=shardings)
        return state.replace(
            params={**state.params, **place(weights)}, ema_params={**state.ema_params, **place(weights)}
        )

    @abc.abstractmethod
    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One optimizer step on a global batch; metrics are scalars."""

    def train_phase(self, step: int) -> str:
        """Name of the step function that runs at `step` (a key of `train_phases`).

        Tasks that alternate updates (the VAE: autoencoder / discriminator) choose the
        phase on the host, so each compiled program holds one branch: a `lax.cond`
        inside the step makes XLA:CPU run the whole step about 5x slower.
        """
        return "train"

    def train_phases(self) -> dict[str, Callable[[TrainState, Batch], tuple[TrainState, Metrics]]]:
        """Every step function the task uses, by phase name."""
        return {"train": self.train_step}

    def write_assets(self, directory: str) -> None:
        """Write the files a trained model needs besides its checkpoint (e.g. a tokenizer) into
        `directory` (`<workdir>/assets`), so it loads from its run directory alone. The trainer
        calls this on process 0 before training; files already there belong to the run."""

    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """Device outputs for the fixed evaluation batch (scalars and arrays)."""
        return {}

    def write_eval(self, outputs: dict[str, np.ndarray], batch: Batch, step: int, out_dir: str) -> dict[str, float]:
        """Host side of evaluation (process 0): write files, return scalar metrics."""
        return {k: float(v) for k, v in outputs.items() if np.ndim(v) == 0}

    def model_inputs(self, batch: Batch) -> dict[str, np.ndarray]:
        """The numeric arrays of a host batch that go to the devices (captions stay behind)."""
        return {k: np.asarray(v) for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}

    def shards(self, split: str) -> str:
        """The shard pattern of `split`; evaluation reads the train shards when no eval_shards are set."""
        data = self.config.data
        return data.train_shards if split == "train" else (data.get("eval_shards") or data.train_shards)

    def make_dataset(self, split: str, *, batch_size: int, shard_index: int, shard_count: int) -> Iterator:
        """A checkpointable iterator over host batches of `batch_size` for this process."""
        from stable_audio_jax.input_pipeline.grain_pipeline import make_audio_dataset

        data = self.config.data
        is_train = split == "train"
        dataset = make_audio_dataset(
            self.shards(split),
            sample_rate=data.sample_rate,
            sample_size=data.sample_size,
            batch_size=batch_size,
            seed=data.seed,
            shuffle=is_train,
            num_epochs=None,  # eval repeats too, so a small split still fills one batch
            random_crop=is_train,
            worker_count=data.worker_count if is_train else 0,
            shard_index=shard_index,
            shard_count=shard_count,
            drop_remainder=True,
        )
        return iter(dataset)
