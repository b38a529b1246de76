"""Training the autoencoder: spectral + KL + adversarial + feature-matching losses.

As in the reference trainer, generator and discriminator have separate AdamW optimizers
and alternate on the step parity: odd steps update the discriminator, even steps the
autoencoder. Before `loss.warmup_steps` the adversarial and feature-matching terms are
off and every step is a generator step (with `warmup_mode='adv'` the discriminator still
trains on odd steps). The three kinds of step are separate phases chosen on the host
(`train_phase`), so each compiled program runs one branch and nothing else.

Memory knobs: `model.remat_policy` rematerialises the encoder and decoder blocks
(`AutoencoderConfig`), and `optimizer.grad_accum_steps` (default 1; it must divide
`data.batch_size`) splits each global batch into that many micro-batches for both the
generator and the discriminator step: one optimizer update from the mean of the
micro-batch gradients, computed in a `lax.scan` (`training/accumulate.py`), with metrics
averaged over the micro-batches. The posterior noise is drawn for the global batch before
the split, so a micro-batch's examples see the noise they would see in the whole batch.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stable_audio_jax.losses.adversarial import feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from stable_audio_jax.losses.stft import STFTLossConfig, stereo_stft_losses
from stable_audio_jax.models.autoencoder import AudioAutoencoder, AutoencoderConfig
from stable_audio_jax.models.discriminator import MultiScaleSTFTDiscriminator
from stable_audio_jax.training import accumulate, schedules
from stable_audio_jax.training.task import Batch, Metrics, Task
from stable_audio_jax.training.train_state import TrainState


def build_autoencoder(config: ml_collections.ConfigDict) -> AudioAutoencoder:
    """The autoencoder module described by `config.model` (and `config.dtype`)."""
    return AudioAutoencoder(
        AutoencoderConfig.from_dict(config.model.to_dict()),
        dtype=jnp.dtype(config.get("dtype", "float32")),
        param_dtype=jnp.dtype(config.get("param_dtype", "float32")),
    )


def _split_batch(tree: Any) -> tuple[Any, Any]:
    """Split every array of a tree in half along the batch axis: (first half, second half)."""
    half = lambda x: x.shape[0] // 2
    return jax.tree.map(lambda x: x[: half(x)], tree), jax.tree.map(lambda x: x[half(x) :], tree)


class VAETask(Task):
    name = "vae"
    progress_keys = ("spectral", "kl", "discriminator_loss")
    pretrained_parts = ("autoencoder",)

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.autoencoder = build_autoencoder(config)
        self.discriminator = MultiScaleSTFTDiscriminator(**config.discriminator.to_dict())
        self.stft_config = STFTLossConfig(**config.loss.stft.to_dict())
        self.generator_tx = schedules.adamw(config.optimizer.generator)
        self.discriminator_tx = schedules.adamw(config.optimizer.discriminator)
        self.grad_accum_steps = accumulate.config_steps(config)
        ratio = self.autoencoder.config.downsampling_ratio
        if config.data.sample_size % ratio:
            raise ValueError(
                f"data.sample_size={config.data.sample_size} must be a multiple of the "
                f"autoencoder's downsampling ratio {ratio}"
            )
        if config.data.sample_size < max(self.discriminator.n_ffts):
            raise ValueError(
                f"data.sample_size={config.data.sample_size} is shorter than the largest "
                f"discriminator FFT {max(self.discriminator.n_ffts)}"
            )

    # ----------------------------------------------------------------- state
    def init_state(self, rng: jax.Array) -> TrainState:
        ae_rng, disc_rng, state_rng = jax.random.split(rng, 3)
        ratio = self.autoencoder.config.downsampling_ratio
        length = ratio * -(-max(self.discriminator.n_ffts) // ratio)  # params do not depend on it
        audio = jnp.zeros((1, length, self.autoencoder.config.io_channels), jnp.float32)
        ae_params = self.autoencoder.init(ae_rng, audio)["params"]
        disc_params = self.discriminator.init(disc_rng, audio)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params={"autoencoder": ae_params, "discriminator": disc_params},
            opt_state={
                "generator": self.generator_tx.init(ae_params),
                "discriminator": self.discriminator_tx.init(disc_params),
            },
            ema_params={"autoencoder": ae_params},
            rng=state_rng,
        )

    # ------------------------------------------------------------------ step
    def train_phase(self, step: int) -> str:
        cfg = self.config.loss
        warmed_up = step >= cfg.warmup_steps
        if step % 2 == 1 and (warmed_up or cfg.warmup_mode == "adv"):
            return "discriminator"
        return "generator" if warmed_up else "generator_warmup"

    def train_phases(self):
        return {
            "generator_warmup": functools.partial(self._generator_update, adversarial=False),
            "generator": functools.partial(self._generator_update, adversarial=True),
            "discriminator": self._discriminator_update,
        }

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """The step the reference runs at `state.step` (host-side choice: not for tracing)."""
        return self.train_phases()[self.train_phase(int(state.step))](state, batch)

    def _discriminate(self, disc_params, reals: jax.Array, fakes: jax.Array):
        """One discriminator pass over reals and fakes stacked on the batch axis."""
        logits, features = self.discriminator.apply({"params": disc_params}, jnp.concatenate([reals, fakes], axis=0))
        return _split_batch(logits), _split_batch(features)

    def step_inputs(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """The step's inputs with its randomness drawn for the whole (global) batch: `audio`
        `[batch, time, io]` float32 and the posterior `noise` `[batch, time / ratio,
        latent_dim]` (`state.step_rng()`'s normal draw, the one `rng=state.step_rng()` would
        make inside the model). Slicing both along the batch gives the micro-batches."""
        audio = batch["audio"].astype(jnp.float32)
        c = self.autoencoder.config
        shape = (audio.shape[0], audio.shape[1] // c.downsampling_ratio, c.latent_dim)
        return {"audio": audio, "noise": jax.random.normal(state.step_rng(), shape, jnp.float32)}

    def generator_loss(
        self, ae_params, disc_params, inputs: dict[str, jax.Array], *, adversarial: bool
    ) -> tuple[jax.Array, Metrics]:
        """Spectral + KL (+ adversarial and feature matching) on `inputs` (from `step_inputs`)."""
        cfg = self.config.loss
        audio = inputs["audio"]
        recon, _, kl = self.autoencoder.apply({"params": ae_params}, audio, noise=inputs["noise"])
        terms = stereo_stft_losses(recon, audio, self.stft_config)
        total = terms["spectral"] + cfg.kl_weight * kl
        metrics = dict(terms, kl=kl)
        if adversarial:
            (_, logits_fake), (feats_real, feats_fake) = self._discriminate(disc_params, audio, recon)
            adv, fm = hinge_generator_loss(logits_fake), feature_matching_loss(feats_real, feats_fake)
            total = total + cfg.adversarial_weight * adv + cfg.feature_matching_weight * fm
            metrics.update(adversarial=adv, feature_matching=fm)
        return total, dict(metrics, loss=total)

    def discriminator_loss(self, disc_params, ae_params, inputs: dict[str, jax.Array]) -> jax.Array:
        """Hinge loss on reals vs the autoencoder's reconstructions (no gradient to the autoencoder)."""
        audio = inputs["audio"]
        recon, _, _ = self.autoencoder.apply({"params": ae_params}, audio, noise=inputs["noise"])
        (logits_real, logits_fake), _ = self._discriminate(disc_params, audio, jax.lax.stop_gradient(recon))
        return hinge_discriminator_loss(logits_real, logits_fake)

    # With grad_accum_steps = k each step optimises the mean of the k micro-batch losses.
    # KL, hinge, adversarial and feature-matching terms are means over equal-sized examples,
    # so that mean is the whole batch's loss; the MR-STFT spectral convergence
    # (`loss.stft.convergence_over='batch'`, the default) is a ratio of norms over the
    # batch, so it is the whole batch's only with k = 1 ('signal' makes it per example).
    def generator_grads(self, state: TrainState, batch: Batch, *, adversarial: bool) -> tuple[Any, Metrics]:
        """The autoencoder's gradient and metrics for one step, accumulated over
        `grad_accum_steps` micro-batches (metrics: means over them)."""
        disc_params = state.params["discriminator"]
        loss_fn = lambda ae_params, inputs: self.generator_loss(ae_params, disc_params, inputs, adversarial=adversarial)
        (_, metrics), grads = accumulate.accumulated_value_and_grad(
            loss_fn, state.params["autoencoder"], self.step_inputs(state, batch), self.grad_accum_steps, has_aux=True
        )
        return grads, metrics

    def discriminator_grads(self, state: TrainState, batch: Batch) -> tuple[Any, Metrics]:
        """The discriminator's gradient and loss for one step, accumulated over
        `grad_accum_steps` micro-batches (each reconstructed inside its own iteration)."""
        loss_fn = lambda disc_params, inputs: self.discriminator_loss(disc_params, state.params["autoencoder"], inputs)
        loss, grads = accumulate.accumulated_value_and_grad(
            loss_fn, state.params["discriminator"], self.step_inputs(state, batch), self.grad_accum_steps
        )
        return grads, {"discriminator_loss": loss}

    def _generator_update(self, state: TrainState, batch: Batch, *, adversarial: bool):
        """Autoencoder step: spectral + KL (+ adversarial and feature matching), then EMA."""
        grads, metrics = self.generator_grads(state, batch, adversarial=adversarial)
        return state.apply_gradients(
            grads, self.generator_tx, "autoencoder", opt_key="generator", ema=self.config.ema
        ), metrics

    def _discriminator_update(self, state: TrainState, batch: Batch):
        """Discriminator step: hinge loss on reals vs the autoencoder's current reconstructions."""
        grads, metrics = self.discriminator_grads(state, batch)
        return state.apply_gradients(grads, self.discriminator_tx, "discriminator"), metrics

    # ------------------------------------------------------------------ eval
    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """Deterministic reconstruction (latent mean) of the eval batch with the EMA weights."""
        audio = batch["audio"].astype(jnp.float32)
        params = state.ema_params if self.config.get("eval_use_ema", True) else state.params
        recon, _, kl = self.autoencoder.apply({"params": params["autoencoder"]}, audio, None)
        terms = stereo_stft_losses(recon, audio, self.stft_config)
        return dict(terms, kl=kl, reconstruction=recon)

    def write_eval(self, outputs: dict[str, np.ndarray], batch: Batch, step: int, out_dir: str) -> dict[str, float]:
        from stable_audio_jax.input_pipeline.audio_io import write_wav

        folder = os.path.join(out_dir, f"step_{step:07d}")
        os.makedirs(folder, exist_ok=True)
        sample_rate = self.config.data.sample_rate
        for i in range(min(self.config.get("eval_num_audio", 2), len(outputs["reconstruction"]))):
            write_wav(os.path.join(folder, f"clip{i}_original.wav"), np.asarray(batch["audio"][i]), sample_rate)
            write_wav(os.path.join(folder, f"clip{i}_reconstruction.wav"), outputs["reconstruction"][i], sample_rate)
        return {k: float(v) for k, v in outputs.items() if np.ndim(v) == 0}
