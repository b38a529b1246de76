"""ARC post-training: a rectified-flow model made a few-step generator by an adversarial,
relativistic and contrastive game (arXiv 2505.08175; stable-audio-tools 0.0.19
`training/arc.py`, `ARCTrainingWrapper`, without its optional ODE warm-up, trimming and
gradient penalties).

Both players start from the weights of `config.init_from` (a rectified-flow model):
- the generator (`params["diffusion"]`, with its EMA) denoises in one step,
  `D = x_t - t G(x_t, t)`, from `x_t = (1 - t) x0 + t noise`;
- the discriminator is the same backbone cut after block `arc.discriminator_layer`
  (`return_hidden`) plus `ConvScoreHead`, scoring latents re-noised to `t_gan`:
  `(1 - t_gan) D + t_gan n` against the data `(1 - t_gan) x0 + t_gan n`, with the same `n`.
Steps alternate, even steps the generator, odd the discriminator (the reference's
`global_step % 2`), each one program (`train_phases`):
- generator: `softplus(s_real - s_fake)` (through the frozen discriminator);
- discriminator: `softplus(-(s_real - s_fake))`, plus with `arc.contrastive` the same loss
  between the data's scores under its own prompt and under the next row's prompt (the
  batch rolled by one), so the discriminator must read the prompt.
Latents `[batch, frames, latent_dim]`, times `[batch]`, scores `[batch, tokens', 1]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from stable_audio_jax.diffusion import flow
from stable_audio_jax.diffusion.objective import TrainingObjective
from stable_audio_jax.diffusion.sampling_config import is_flow
from stable_audio_jax.errors import UserError
from stable_audio_jax.losses.adversarial import relativistic_discriminator_loss, relativistic_generator_loss
from stable_audio_jax.models.arc_discriminator import DOWNSAMPLING_LAYERS, ConvScoreHead
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel
from stable_audio_jax.training import schedules
from stable_audio_jax.training.diffusion_task import DiffusionTask
from stable_audio_jax.training.task import Batch, Metrics
from stable_audio_jax.training.train_state import TrainState

CONDITIONING = ("text_features", "text_mask", "seconds_start", "seconds_total")


def _head_tokens(tokens: int) -> int:
    """Score positions `ConvScoreHead` leaves from `tokens` (PyTorch conv length arithmetic)."""
    for _ in range(DOWNSAMPLING_LAYERS):
        tokens = (tokens + 2 - 4) // 2 + 1
    return tokens - 3


class ARCTask(DiffusionTask):
    name = "arc"
    progress_keys = ("generator", "discriminator")
    # An RF diffusion run, or an ARC run (its generator; a run resumes from its own workdir).
    init_from_tasks = ("diffusion", "arc")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        arc = config.arc
        if not is_flow(self.model.config.objective):
            raise UserError(
                f"ARC post-trains a rectified-flow model: config.model.objective is "
                f"{self.model.config.objective!r}, not rectified_flow or rf_denoiser"
            )
        if self.model.config.dit is None:
            raise UserError("ARC's discriminator reads a DiT's hidden states: config.model needs a dit backbone")
        if self.lora.enabled or self.grad_accum_steps != 1:
            raise UserError("ARC trains whole models in single steps: set config.lora.rank=0 and grad_accum_steps=1")
        if not config.get("init_from"):
            raise UserError("ARC starts both players from a rectified-flow model: set --config.init_from")
        depth = self.model.config.dit.depth
        if not 0 <= arc.discriminator_layer < depth:
            raise UserError(
                f"config.arc.discriminator_layer={arc.discriminator_layer} is not a block of the DiT (0..{depth - 1})"
            )
        if self.model.config.dit.embed_dim % 32:
            raise UserError(
                f"the score head's GroupNorm(32) needs dit.embed_dim divisible by 32, got {self.model.config.dit.embed_dim}"
            )
        if _head_tokens(self.latent_frames + 1) < 1:
            raise UserError(f"{self.latent_frames} latent frames are too few for the score head (at least 63)")
        self.discriminator = LatentDiffusionModel(
            discriminator_config(self.model.config, arc.discriminator_layer),
            dtype=self.model.dtype,
            param_dtype=self.model.param_dtype,
        )
        self.head = ConvScoreHead(
            soft_clip_scale=arc.soft_clip_scale or None, dtype=self.model.dtype, param_dtype=self.model.param_dtype
        )
        self.generator_times = TrainingObjective(
            objective=self.model.config.objective, timestep_sampler=arc.generator_times
        )
        self.discriminator_times = TrainingObjective(
            objective=self.model.config.objective, timestep_sampler=arc.discriminator_times
        )
        self.discriminator_tx = schedules.adamw(arc.optimizer)

    # ----------------------------------------------------------------- state
    def init_state(self, rng: jax.Array) -> TrainState:
        g_rng, d_rng, h_rng, state_rng = jax.random.split(rng, 4)
        inputs = self.example_inputs()
        generator = self.model.init(g_rng, *inputs)["params"]
        backbone = self.discriminator.init(d_rng, *inputs, return_hidden=True)["params"]
        hidden = jnp.zeros((1, self.latent_frames + 1, self.model.config.dit.embed_dim), jnp.float32)
        head = self.head.init(h_rng, hidden)["params"]
        discriminator = {"backbone": backbone, "head": head}
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params={"diffusion": generator, "discriminator": discriminator},
            opt_state={
                "generator": self.tx.init(generator),
                "discriminator": self.discriminator_tx.init(discriminator),
            },
            ema_params={"diffusion": generator},
            rng=state_rng,
        )

    def with_pretrained(self, state: TrainState, weights: dict[str, Any], abstract: TrainState) -> TrainState:
        """The generator and its EMA from the pretrained model, and the discriminator's backbone
        from the same weights (its blocks up to `discriminator_layer`; the head starts fresh)."""
        state = super().with_pretrained(state, weights, abstract)
        source = traverse_util.flatten_dict(weights["diffusion"])
        target = abstract.params["discriminator"]["backbone"]
        picked = traverse_util.unflatten_dict({path: source[path] for path in traverse_util.flatten_dict(target)})
        place = jax.jit(
            lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=jax.tree.map(lambda x: x.sharding, target)
        )
        discriminator = {**state.params["discriminator"], "backbone": place(picked)}
        return state.replace(params={**state.params, "discriminator": discriminator})

    # ------------------------------------------------------------------ step
    def train_phase(self, step: int) -> str:
        return "generator" if step % 2 == 0 else "discriminator"

    def train_phases(self):
        return {"generator": self._generator_update, "discriminator": self._discriminator_update}

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        return self.train_phases()[self.train_phase(int(state.step))](state, batch)

    def game_inputs(self, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        """The step's random draws for the whole batch: clean latents `x0`, the generator's
        `x_t` at `t`, the discriminator's time `t_gan` and noise `noise_gan`, the generator's
        conditioning dropout, and the conditioning."""
        latent_rng, t_rng, noise_rng, gan_t_rng, gan_noise_rng, drop_rng = jax.random.split(rng, 6)
        x0 = self.clean_latents(batch, latent_rng)
        b, frames = x0.shape[:2]
        t = self.generator_times.times(t_rng, b, frames)
        return {
            "x0": x0,
            "t": t,
            "x_t": flow.add_noise(x0, jax.random.normal(noise_rng, x0.shape), t),
            "t_gan": self.discriminator_times.times(gan_t_rng, b, frames),
            "noise_gan": jax.random.normal(gan_noise_rng, x0.shape),
            "use_null_context": jax.random.bernoulli(drop_rng, self.config.diffusion.cfg_dropout, (b,)),
            **{k: batch[k] for k in CONDITIONING},
        }

    def denoise(self, generator: Any, inputs: dict[str, jax.Array], use_null_context: jax.Array | None) -> jax.Array:
        """The generator's one-step estimate of x0 from `x_t`."""
        v = self.model.apply(
            {"params": generator}, inputs["x_t"], inputs["t"], *(inputs[k] for k in CONDITIONING), use_null_context
        )
        return flow.denoised(inputs["x_t"], inputs["t"], v)

    def scores(self, discriminator: Any, latents: jax.Array, t: jax.Array, conditioning: tuple) -> jax.Array:
        """Scores `[batch, tokens', 1]` of `latents` (already noised to `t`) under `conditioning`."""
        hidden = self.discriminator.apply(
            {"params": discriminator["backbone"]}, latents, t, *conditioning, return_hidden=True
        )
        return self.head.apply({"params": discriminator["head"]}, hidden)

    def _paired_scores(self, discriminator: Any, x0: jax.Array, fake: jax.Array, inputs: dict[str, jax.Array]):
        """Scores of the data and of `fake`, both re-noised to `t_gan` with the same noise, in one pass."""
        t_gan, noise = inputs["t_gan"], inputs["noise_gan"]
        both = jnp.concatenate([flow.add_noise(x0, noise, t_gan), flow.add_noise(fake, noise, t_gan)])
        conditioning = tuple(jnp.concatenate([inputs[k], inputs[k]]) for k in CONDITIONING)
        real, fake_scores = jnp.split(
            self.scores(discriminator, both, jnp.concatenate([t_gan, t_gan]), conditioning), 2
        )
        return real, fake_scores

    def generator_loss(self, generator: Any, discriminator: Any, inputs: dict[str, jax.Array]) -> jax.Array:
        fake = self.denoise(generator, inputs, inputs["use_null_context"])
        real, fake_scores = self._paired_scores(discriminator, inputs["x0"], fake, inputs)
        return self.config.arc.generator_weight * relativistic_generator_loss(real, fake_scores)

    def discriminator_loss(self, discriminator: Any, generator: Any, inputs: dict[str, jax.Array]):
        arc = self.config.arc
        fake = jax.lax.stop_gradient(self.denoise(generator, inputs, None))
        real, fake_scores = self._paired_scores(discriminator, inputs["x0"], fake, inputs)
        adversarial = arc.discriminator_weight * relativistic_discriminator_loss(real, fake_scores)
        metrics = {"adversarial": adversarial}
        total = adversarial
        if arc.contrastive:
            # Row i under the prompt of row i + 1 (the reference rolls the prompts only).
            rolled = tuple(
                jnp.roll(inputs[k], -1, axis=0) if k in ("text_features", "text_mask") else inputs[k]
                for k in CONDITIONING
            )
            data = flow.add_noise(inputs["x0"], inputs["noise_gan"], inputs["t_gan"])
            swapped = self.scores(discriminator, data, inputs["t_gan"], rolled)
            contrastive = arc.contrastive_weight * relativistic_discriminator_loss(real, swapped)
            metrics["contrastive"] = contrastive
            total = total + contrastive
        return total, metrics

    def _generator_update(self, state: TrainState, batch: Batch):
        inputs = self.game_inputs(batch, state.step_rng())
        loss, grads = jax.value_and_grad(self.generator_loss)(
            state.params["diffusion"], state.params["discriminator"], inputs
        )
        metrics = {"generator": loss, "grad_norm": optax.tree.norm(grads)}
        return state.apply_gradients(grads, self.tx, "diffusion", opt_key="generator", ema=self.config.ema), metrics

    def _discriminator_update(self, state: TrainState, batch: Batch):
        inputs = self.game_inputs(batch, state.step_rng())
        (loss, metrics), grads = jax.value_and_grad(self.discriminator_loss, has_aux=True)(
            state.params["discriminator"], state.params["diffusion"], inputs
        )
        metrics = {"discriminator": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
        return state.apply_gradients(grads, self.discriminator_tx, "discriminator"), metrics


def discriminator_config(config: LatentDiffusionConfig, layer: int) -> LatentDiffusionConfig:
    """The discriminator backbone's config: `config` with its DiT cut after block `layer`."""
    return dataclasses.replace(config, dit=dataclasses.replace(config.dit, depth=layer + 1))
