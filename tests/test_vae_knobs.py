"""Memory knobs of the VAE train step: rematerialised encoder / decoder blocks
(`model.remat_policy`) and gradient accumulation over micro-batches
(`optimizer.grad_accum_steps`) for both the generator and the discriminator update.

The task uses the micro VAE config of `micro_configs` (4-channel Oobleck, 8x
downsampling), cut to one residual unit per block, one discriminator scale and two STFT
loss resolutions (every compiled program here is a different one, so compile time is
what counts), on a batch of 8 crops of 512 samples. The init key is RBG: with threefry
the init's XLA:CPU compile takes about three times as long.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stable_audio_jax.models.autoencoder import AudioAutoencoder, AutoencoderConfig
from stable_audio_jax.models.remat import REMAT_POLICIES
from stable_audio_jax.training.vae_task import VAETask
from tests.micro_configs import fixed_batch, micro_vae_config

LENGTH = 512  # samples per crop: a multiple of the 8x ratio, >= the discriminator's FFT (128)


def knob_config(grad_accum_steps: int = 1, convergence_over: str = "batch", remat_policy: str = "none"):
    """`micro_vae_config()`, smaller (see the module docstring), on LENGTH-sample crops, with
    the given knobs."""
    config = micro_vae_config()
    config.data.sample_size = LENGTH
    config.model.update(dilations=(1,), remat_policy=remat_policy)
    config.discriminator.update(n_ffts=(128,), hop_lengths=(32,), win_lengths=(128,))
    config.loss.stft.update(fft_sizes=(128, 64), hop_sizes=(32, 16), convergence_over=convergence_over)
    config.optimizer.grad_accum_steps = grad_accum_steps
    return config


@pytest.fixture(scope="module")
def start():
    """The initial state (unboxed params, Adam states, EMA) and a fixed batch of 8 crops."""
    task = VAETask(knob_config())
    state = jax.jit(lambda key: nn.meta.unbox(task.init_state(key)))(jax.random.key(0, impl="rbg"))
    return state, {"audio": fixed_batch()["audio"][:, :LENGTH]}


def _checkpoints(jaxpr) -> list:
    """The `jax.checkpoint` (remat) equations of `jaxpr`, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("checkpoint", "remat", "remat2"):
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    found += _checkpoints(getattr(sub, "jaxpr", sub))
    return found


def _relative_error(got, want) -> float:
    """Relative L2 distance of two pytrees, over all their leaves."""
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    return float(np.linalg.norm(flat(got) - flat(want)) / np.linalg.norm(flat(want)))


@pytest.mark.slow
def test_remat_policies_keep_params_outputs_and_gradients(start):
    """Every policy wraps the 2 encoder and 2 decoder blocks in a checkpoint with its policy
    and keeps the param tree; "full" and "dots_saveable" (the two distinct sets of saved
    values here) keep the outputs and gradients too.

    Measured: outputs and gradients bit-identical to the plain model's on XLA:CPU (tolerance
    1e-6 relative). Posterior noise given to the model equals the same noise drawn inside.
    """
    state, batch = start
    config = knob_config().model.to_dict()
    audio = batch["audio"][:2, :64]
    rng = jax.random.key(2)
    noise = jax.random.normal(rng, (2, 8, 4))
    models = {
        policy: AudioAutoencoder(AutoencoderConfig.from_dict(dict(config, remat_policy=policy)))
        for policy in ("none", *REMAT_POLICIES)
    }
    params = state.params["autoencoder"]

    def loss(model, params):
        recon, _, kl = model.apply({"params": params}, audio, noise=noise)
        return jnp.mean(jnp.square(recon - audio)) + kl, recon

    boxed = {
        policy: jax.eval_shape(lambda: model.init(jax.random.key(0), audio)["params"])
        for policy, model in models.items()
    }
    for policy, model in models.items():
        # The same names, shapes and logical axis names (so the same shardings) as the state's.
        assert jax.tree.structure(boxed[policy]) == jax.tree.structure(boxed["none"]), policy
        shapes = nn.meta.unbox(boxed[policy])
        assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(jnp.shape, params), policy
        checkpoints = _checkpoints(jax.make_jaxpr(lambda p: loss(model, p))(params).jaxpr)
        assert len(checkpoints) == (0 if policy == "none" else 4), policy
        assert all(eqn.params["policy"] is REMAT_POLICIES[policy] for eqn in checkpoints), policy

    def run(params):
        drawn = [models["none"].apply({"params": params}, audio, *args)[0] for args in ((rng,), (None, noise))]
        return drawn, {
            policy: jax.value_and_grad(lambda p: loss(models[policy], p), has_aux=True)(params)
            for policy in ("none", "full", "dots_saveable")
        }

    drawn, results = jax.jit(run)(params)
    np.testing.assert_array_equal(*drawn)
    (want_loss, want_recon), want_grads = results.pop("none")
    for policy, ((got_loss, got_recon), got_grads) in results.items():
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6, err_msg=policy)
        np.testing.assert_allclose(got_recon, want_recon, rtol=1e-6, atol=1e-7, err_msg=policy)
        assert _relative_error(got_grads, want_grads) < 1e-6, policy


@pytest.mark.slow
def test_generator_accumulation_averages_micro_batch_losses(start):
    """grad_accum_steps=2: the generator's gradient and metrics are the means of those of
    micro-batches 0::2 and 1::2 (posterior noise sliced from the whole batch's draw).

    With the default batch-wide spectral convergence that is not the whole batch's step (the
    loss is a ratio over the batch: measured 3e-2 relative apart in gradient); with
    `convergence_over='signal'` every term is a mean of per-example terms and the step is
    the whole batch's. Measured: gradients equal to 6e-7 relative (tolerance 1e-5), metrics
    to 1e-7 (tolerance 1e-5).
    """
    state, batch = start
    task = VAETask(knob_config(grad_accum_steps=2))
    tasks = [VAETask(knob_config(k, convergence_over="signal")) for k in (1, 2)]

    def run(state, batch):
        inputs = task.step_inputs(state, batch)
        micro = [jax.tree.map(lambda x: x[j::2], inputs) for j in range(2)]
        explicit = [
            jax.grad(task.generator_loss, has_aux=True)(
                state.params["autoencoder"], state.params["discriminator"], m, adversarial=True
            )
            for m in micro
        ]
        explicit_mean = jax.tree.map(lambda a, b: (a + b) / 2, *explicit)
        return [t.generator_grads(state, batch, adversarial=True) for t in (task, *tasks)], explicit_mean

    results, (want_grads, want_metrics) = jax.jit(run)(state, batch)
    (grads, metrics), (one_grads, one_metrics), (two_grads, two_metrics) = results

    assert set(metrics) == {
        "spectral",
        "mrstft_sum_diff",
        "mrstft_left",
        "mrstft_right",
        "kl",
        "adversarial",
        "feature_matching",
        "loss",
    }
    for key in metrics:
        np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(two_metrics[key], one_metrics[key], rtol=1e-5, err_msg=key)
    errors = {
        "explicit mean": _relative_error(grads, want_grads),
        "whole batch, per-signal ratio": _relative_error(two_grads, one_grads),
    }
    print({k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-5


@pytest.mark.slow
def test_discriminator_accumulation_matches_the_whole_batch(start):
    """grad_accum_steps=2 gives the discriminator gradient of the whole batch: the hinge loss
    is a mean over equal-sized examples, and each micro-batch is reconstructed with its slice
    of the whole batch's posterior noise. The step (here with SGD, lr 1e-2) applies it.

    Measured: loss equal to 1e-7 relative (tolerance 1e-5), gradients to 3e-5 of their norm
    (tolerance 2e-4). At initialisation every logit is within +-0.1, so the hinge gradient is
    the difference of the real and the fake terms, 1e-4 of either: rounding in the sums is
    amplified (in the biases of the last hidden convs most).
    """
    state, batch = start
    sgd = optax.sgd(1e-2)
    one, two = [VAETask(knob_config(k)) for k in (1, 2)]
    two.discriminator_tx = sgd
    state = state.replace(opt_state=dict(state.opt_state, discriminator=sgd.init(state.params["discriminator"])))
    (grads_one, metrics_one), (grads_two, metrics_two), (stepped, step_metrics) = jax.jit(
        lambda s, b: [
            one.discriminator_grads(s, b),
            two.discriminator_grads(s, b),
            two.train_phases()["discriminator"](s, b),
        ]
    )(state, batch)

    np.testing.assert_allclose(metrics_two["discriminator_loss"], metrics_one["discriminator_loss"], rtol=1e-5)
    assert _relative_error(grads_two, grads_one) < 2e-4
    assert set(step_metrics) == {"discriminator_loss"} and int(stepped.step) == int(state.step) + 1
    jax.tree.map(np.testing.assert_array_equal, stepped.params["autoencoder"], state.params["autoencoder"])
    want = jax.tree.map(lambda p, g: p - 1e-2 * g, state.params["discriminator"], grads_two)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), stepped.params["discriminator"], want
    )


def test_bad_knobs_give_clear_errors():
    for steps in (0, 3):
        with pytest.raises(
            ValueError, match=f"optimizer.grad_accum_steps={steps} must be >= 1 and divide data.batch_size=8"
        ):
            VAETask(knob_config(steps))
    with pytest.raises(ValueError, match=r"unknown remat_policy 'dots'; choose one of \['none', 'full'"):
        VAETask(knob_config(remat_policy="dots"))
    with pytest.raises(ValueError, match="unknown remat_policy 'checkpoint'"):
        AutoencoderConfig(remat_policy="checkpoint")
    # An optimizer section from before the field accumulates nothing.
    config = knob_config()
    del config.optimizer.grad_accum_steps
    assert VAETask(config).grad_accum_steps == 1
