"""Training the latent diffusion model on pre-encoded shards (arXiv 2402.04825).

Each step: sample the VAE posterior (`mean + std * eps`, times `latent_scale`), draw
continuous times t in [0, 1] (`diffusion.timestep_sampler`, stratified uniform by default),
noise the latents and regress the target of `model.objective` (`diffusion/objective.py`: the
paper's v on the cosine schedule, or rectified flow's velocity `eps - x0` on the straight
path) with a plain MSE over every element. Each sample's conditioning (text and timing tokens) is
replaced by the null context (the U-Net's learned one, the DiT's zeros) with probability
`diffusion.cfg_dropout` (10%),
which is what classifier-free guidance needs at sampling time. An EMA of the model is
what sampling uses.

An inpainting-conditioned model (`model.input_concat_ids`) is also given, per example, a
random mask over the real latent frames (`diffusion/inpaint_masks.py`, the odds in
`diffusion.inpaint_masks`) and the clean latents where the mask keeps them; the loss stays
over every element, as the reference's.

With `config.lora.rank > 0` only low-rank adapters train (`lora.py`): the model's weights,
read from `config.init_from`, stay frozen in `state.frozen["diffusion"]` (in
`lora.base_dtype`), and `params`, `opt_state` and `ema_params` hold the adapters under
`"diffusion_lora"`, so a checkpoint holds nothing else.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from stable_audio_jax import lora, parallel
from stable_audio_jax.diffusion import inpaint_masks
from stable_audio_jax.diffusion.objective import TrainingObjective
from stable_audio_jax.diffusion.sampling_config import SamplingConfig
from stable_audio_jax.errors import UserError
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel, example_inputs
from stable_audio_jax.training import accumulate, schedules
from stable_audio_jax.training.task import Batch, Metrics, Task
from stable_audio_jax.training.train_state import TrainState

ADAPTERS = "diffusion_lora"  # params key of a LoRA run's adapters
MODEL_INPUTS = (
    "latent_mean",
    "latent_std",
    "latent_mask",
    "text_features",
    "text_mask",
    "seconds_start",
    "seconds_total",
)


def build_diffusion_model(config: ml_collections.ConfigDict) -> LatentDiffusionModel:
    """The model described by `config.model` (and `config.dtype`)."""
    return LatentDiffusionModel(
        LatentDiffusionConfig.from_dict(config.model.to_dict()),
        dtype=jnp.dtype(config.get("dtype", "float32")),
        param_dtype=jnp.dtype(config.get("param_dtype", "float32")),
    )


class DiffusionTask(Task):
    name = "diffusion"
    progress_keys = ("loss",)
    pretrained_parts = ("diffusion",)

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model = build_diffusion_model(config)
        self.tx = schedules.adamw(config.optimizer)
        model = self.model.config
        ratio = config.pretransform.downsampling_ratio
        if config.data.sample_size % (ratio * model.downsampling_factor):
            raise ValueError(
                f"data.sample_size={config.data.sample_size} must be a multiple of the VAE ratio "
                f"{ratio} times the {model.backbone}'s downsampling factor {model.downsampling_factor}"
            )
        self.latent_frames = config.data.sample_size // ratio
        if model.unet is not None and model.unet.frame_features:
            frame_seconds = ratio / config.data.sample_rate
            if abs(model.frame_seconds - frame_seconds) > 1e-9 * frame_seconds:
                raise ValueError(
                    f"model.frame_seconds={model.frame_seconds} but one latent frame is "
                    f"pretransform.downsampling_ratio / data.sample_rate = {ratio} / "
                    f"{config.data.sample_rate} = {frame_seconds} s"
                )
        self.objective = TrainingObjective.from_config(model.objective, config.get("diffusion", {}))
        try:  # demo samples and `launch/sample.py` use these: a v-sampler on a flow model fails here
            SamplingConfig.from_dict(config.get("sampling"), objective=model.objective)
        except (UserError, ValueError) as error:
            raise UserError(
                f"config.sampling does not fit config.model.objective={model.objective!r}: {error}"
            ) from None
        self.inpaint_masks = None
        if model.inpainting:
            options = dict(config.get("diffusion", {}).get("inpaint_masks", {}))
            unknown = sorted(set(options) - {"mask_type_probabilities", "max_mask_segments"})
            if unknown:
                raise UserError(f"unknown config.diffusion.inpaint_masks fields {unknown}")
            try:
                self.inpaint_masks = inpaint_masks.check_mask_options(
                    options.get("mask_type_probabilities", inpaint_masks.DEFAULT_PROBABILITIES),
                    options.get("max_mask_segments", inpaint_masks.DEFAULT_MAX_SEGMENTS),
                )
            except ValueError as error:
                raise UserError(f"config.diffusion.inpaint_masks: {error}") from None
        self.grad_accum_steps = accumulate.config_steps(config)
        self.lora = lora.LoraSettings.from_config(config.get("lora"))
        self.base_dtype = jnp.dtype(config.lora.get("base_dtype", "float32")) if self.lora.enabled else None
        self.lora_targets: dict[str, lora.Target] = {}
        if self.lora.enabled:
            if not config.get("init_from"):
                raise UserError(
                    "config.lora.rank > 0 trains adapters over pretrained weights: set "
                    "--config.init_from to the pretrained or run directory they adapt"
                )
            boxed = jax.eval_shape(
                lambda rng: self.model.init(rng, *self.example_inputs())["params"], jax.random.PRNGKey(0)
            )
            self.lora_targets = lora.find_targets(boxed, self.lora)
            trainable = lora.adapter_size(self.lora_targets, self.lora)
            total = parallel.count_params(boxed)
            logging.info(
                "LoRA (%s, rank %d) on %d kernels: %d trainable parameters, %.2f%% of %d",
                self.lora.kind,
                self.lora.rank,
                len(self.lora_targets),
                trainable,
                100 * trainable / total,
                total,
            )

    # ----------------------------------------------------------------- data
    def make_dataset(self, split: str, *, batch_size: int, shard_index: int, shard_count: int):
        from stable_audio_jax.input_pipeline.grain_pipeline import make_latent_dataset

        data = self.config.data
        is_train = split == "train"
        return iter(
            make_latent_dataset(
                self.shards(split),
                batch_size=batch_size,
                seed=data.seed,
                shuffle=is_train,
                num_epochs=None,
                worker_count=data.worker_count if is_train else 0,
                shard_index=shard_index,
                shard_count=shard_count,
                cache_bytes=data.get("cache_bytes", 0) if is_train else 0,
            )
        )

    def model_inputs(self, batch: Batch) -> dict[str, np.ndarray]:
        frames = np.shape(batch["latent_mean"])[1]
        if frames != self.latent_frames:
            raise ValueError(
                f"the latent shards hold {frames} frames per example but data.sample_size / "
                f"pretransform.downsampling_ratio = {self.latent_frames}; pre-encode with "
                f"--sample_size={self.config.data.sample_size} or fix the config"
            )
        return {k: np.asarray(batch[k]) for k in MODEL_INPUTS}

    # ----------------------------------------------------------------- state
    def example_inputs(self, batch_size: int = 1) -> tuple[jax.Array, ...]:
        """Zero inputs of the model's shapes (x, t, text_features, text_mask, seconds_start, seconds_total)."""
        return example_inputs(self.model.config, self.latent_frames, batch_size)

    def init_state(self, rng: jax.Array) -> TrainState:
        params_rng, state_rng = jax.random.split(rng)
        params = self.model.init(params_rng, *self.example_inputs())["params"]
        if self.lora.enabled:
            adapters = lora.init_adapters(jax.random.fold_in(params_rng, 1), self.lora_targets, self.lora)
            base = jax.tree.map(lambda x: x.astype(self.base_dtype), params)
            return TrainState(
                step=jnp.zeros((), jnp.int32),
                params={ADAPTERS: adapters},
                opt_state={ADAPTERS: self.tx.init(adapters)},
                ema_params={ADAPTERS: adapters},
                rng=state_rng,
                frozen={"diffusion": base},
            )
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params={"diffusion": params},
            opt_state={"diffusion": self.tx.init(params)},
            ema_params={"diffusion": params},
            rng=state_rng,
        )

    def pretrained_abstract(self, abstract: TrainState) -> dict[str, Any]:
        if not self.lora.enabled:
            return super().pretrained_abstract(abstract)
        # The base is read at its stored precision (float32), which `lora.fingerprint` hashes.
        return {
            "diffusion": jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding), abstract.frozen["diffusion"]
            )
        }

    def with_pretrained(self, state: TrainState, weights: dict[str, Any], abstract: TrainState) -> TrainState:
        if not self.lora.enabled:
            return super().with_pretrained(state, weights, abstract)
        frozen = abstract.frozen["diffusion"]
        place = jax.jit(
            lambda tree: jax.tree.map(lambda x, a: x.astype(a.dtype), tree, frozen),
            out_shardings=jax.tree.map(lambda a: a.sharding, frozen),
        )
        return state.replace(frozen={"diffusion": place(weights["diffusion"])})

    def adapter(self, adapter_params: Any) -> lora.Adapter:
        return lora.Adapter(adapter_params, self.lora)

    def model_params(self, state: TrainState, *, ema: bool) -> Any:
        """The diffusion model's params: the (EMA) model, or with LoRA the frozen base with the
        (EMA) adapters merged in."""
        params = state.ema_params if ema else state.params
        if not self.lora.enabled:
            return params["diffusion"]
        return lora.merge(state.frozen["diffusion"], [(self.adapter(params[ADAPTERS]), 1.0)])

    # ------------------------------------------------------------------ loss
    def clean_latents(self, batch: Batch, rng: jax.Array) -> jax.Array:
        """A sample of the VAE posterior the shards hold, times `latent_scale`: x0 `[batch, frames,
        latent_dim]`."""
        mean, std = batch["latent_mean"], batch["latent_std"]
        return (mean + std * jax.random.normal(rng, mean.shape)) * self.config.pretransform.latent_scale

    def noised_inputs(self, batch: Batch, rng: jax.Array, cfg_dropout: float) -> dict[str, jax.Array]:
        """Every random draw of a step, made once for the whole (global) batch.

        `rng` draws the posterior sample x0, the times t (stratified over this batch by
        default), the noise and the conditioning dropout. Returns the model's inputs `x_t`
        `[batch, frames, latent_dim]`, `t` `[batch]`, `use_null_context` `[batch]` bool and
        the conditioning (`text_features`, `text_mask`, `seconds_start`, `seconds_total`),
        plus the objective's target `[batch, frames, latent_dim]` float32. Slicing this dict along
        the batch gives micro-batches whose losses average to the batch's.
        """
        latent_rng, time_rng, noise_rng, drop_rng = jax.random.split(rng, 4)
        x0 = self.clean_latents(batch, latent_rng)
        batch_size = x0.shape[0]
        t = self.objective.times(time_rng, batch_size, x0.shape[1])
        noise = jax.random.normal(noise_rng, x0.shape)
        x_t, target = self.objective.noised_and_target(x0, noise, t)
        inputs = {
            "x_t": x_t,
            "t": t,
            "target": target.astype(jnp.float32),
            "use_null_context": jax.random.bernoulli(drop_rng, cfg_dropout, (batch_size,)),
            **{k: batch[k] for k in ("text_features", "text_mask", "seconds_start", "seconds_total")},
        }
        if self.inpaint_masks is not None:
            probabilities, max_segments = self.inpaint_masks
            # Its own key: a plain model's draws stay what they were.
            mask, _ = inpaint_masks.random_inpaint_mask(
                jax.random.fold_in(rng, 1), batch["latent_mask"], probabilities=probabilities, max_segments=max_segments
            )
            inputs.update(inpaint_mask=mask, inpaint_masked_input=x0 * mask[..., None])
        return inputs

    def prediction_loss(self, params: Any, inputs: dict[str, jax.Array]) -> jax.Array:
        """Mean squared error of the prediction (v or velocity) over every element of `inputs` (from
        `noised_inputs`), in float32 whatever the compute dtype."""
        v = self.model.apply(
            {"params": params},
            inputs["x_t"],
            inputs["t"],
            inputs["text_features"],
            inputs["text_mask"],
            inputs["seconds_start"],
            inputs["seconds_total"],
            inputs["use_null_context"],
            inpaint_mask=inputs.get("inpaint_mask"),
            inpaint_masked_input=inputs.get("inpaint_masked_input"),
        )
        return jnp.mean(jnp.square(v.astype(jnp.float32) - inputs["target"]))

    def loss(self, params: Any, batch: Batch, rng: jax.Array, cfg_dropout: float) -> tuple[jax.Array, Metrics]:
        """The objective's MSE on one batch; `rng` draws the latents, times, noise and dropout."""
        loss = self.prediction_loss(params, self.noised_inputs(batch, rng, cfg_dropout))
        return loss, {"loss": loss}

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One AdamW + EMA update on the global batch, its gradient accumulated over
        `optimizer.grad_accum_steps` micro-batches (the same update up to rounding)."""
        inputs = self.noised_inputs(batch, state.step_rng(), self.config.diffusion.cfg_dropout)
        if self.lora.enabled:  # gradients, optimizer and EMA for the adapters only
            key = ADAPTERS

            def loss_fn(adapters: Any, x: dict[str, jax.Array]) -> jax.Array:
                return self.prediction_loss(lora.merge(state.frozen["diffusion"], [(self.adapter(adapters), 1.0)]), x)
        else:
            key, loss_fn = "diffusion", self.prediction_loss
        loss, grads = accumulate.accumulated_value_and_grad(loss_fn, state.params[key], inputs, self.grad_accum_steps)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.apply_gradients(grads, self.tx, key, ema=self.config.ema), metrics

    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """The EMA model's loss on the eval batch, fully conditioned, with fixed noise."""
        loss, _ = self.loss(self.model_params(state, ema=True), batch, jax.random.PRNGKey(1234), 0.0)
        return {"loss": loss}
