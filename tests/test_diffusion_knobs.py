"""Memory and speed knobs of the diffusion train step: bfloat16 compute with float32 params,
and gradient accumulation over micro-batches.

A one-level micro U-Net (the micro config of `micro_configs`, shallower) trains on a fixed
batch of random latents. Keys are RBG: threefry's XLA:CPU compile costs more than the
train step's, and nothing here depends on the generator.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stable_audio_jax.diffusion import guidance, samplers
from stable_audio_jax.training import accumulate
from stable_audio_jax.training.diffusion_task import DiffusionTask
from tests.micro_configs import TEXT_LENGTH, micro_diffusion_config

pytestmark = pytest.mark.slow

FRAMES, LATENT_DIM, TEXT_DIM, BATCH = 32, 4, 32, 8
STEPS = 40


def knob_config(**overrides):
    """`micro_diffusion_config` with one down level (2 bottleneck transformer blocks), a
    32-frame window and `overrides` (dotted keys, e.g. `{"optimizer.grad_accum_steps": 2}`)."""
    config = micro_diffusion_config({"vae": "", "clap": "", "latents": ""})
    config.model.unet.update(multipliers=(1, 1), factors=(2,), num_blocks=(1,), attentions=(0, 2), transformer_groups=8)
    config.data.sample_size = FRAMES * config.pretransform.downsampling_ratio
    for key, value in overrides.items():
        *path, name = key.split(".")
        section = config
        for part in path:
            section = section[part]
        section[name] = value
    return config


def random_batch(seed: int = 0) -> dict[str, np.ndarray]:
    """A pre-encoded batch: latents `[BATCH, FRAMES, LATENT_DIM]`, text `[BATCH, TEXT_LENGTH, TEXT_DIM]`."""
    rng = np.random.default_rng(seed)
    return {
        "latent_mean": rng.normal(size=(BATCH, FRAMES, LATENT_DIM)).astype(np.float32),
        "latent_std": rng.uniform(0.05, 0.2, (BATCH, FRAMES, LATENT_DIM)).astype(np.float32),
        "latent_mask": np.ones((BATCH, FRAMES), bool),
        "text_features": rng.normal(size=(BATCH, TEXT_LENGTH, TEXT_DIM)).astype(np.float32),
        "text_mask": np.arange(TEXT_LENGTH)[None] < rng.integers(1, TEXT_LENGTH + 1, (BATCH, 1)),
        "seconds_start": rng.integers(0, 4, BATCH).astype(np.int32),
        "seconds_total": rng.integers(4, 30, BATCH).astype(np.int32),
    }


@pytest.fixture(scope="module")
def start():
    """The float32 task, its initial state (float32 params, Adam state, EMA) and the batch."""
    task = DiffusionTask(knob_config())
    state = jax.jit(lambda key: nn.meta.unbox(task.init_state(key)))(jax.random.key(0, impl="rbg"))
    return task, state, random_batch()


def train(task: DiffusionTask, state, batch, steps: int):
    step = jax.jit(task.train_step)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    return state, np.array(losses)


def _matmul_input_dtypes(jaxpr) -> set[str]:
    """Operand dtypes of every dot_general and convolution in `jaxpr`, nested jaxprs included."""
    dtypes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            dtypes.update(str(v.aval.dtype) for v in eqn.invars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    dtypes |= _matmul_input_dtypes(getattr(sub, "jaxpr", sub))
    return dtypes


def test_bfloat16_compute_tracks_float32_training(start):
    """40 AdamW steps with bfloat16 compute follow the float32 run from the same state.

    Every matmul and convolution of the forward pass runs on bfloat16 operands (the
    backward of XLA's attention multiplies its float32 softmax gradient with bfloat16 values
    at BF16_BF16_F32 precision), while params, Adam moments and the EMA stay float32 and
    the loss is float32. Every logged loss is within
    1% of the float32 run's (measured: at most 0.09%, mean 0.03%, while the loss falls from
    1.58 to 0.98). The bfloat16 model also traces through CFG sampling (DPM-Solver++ 3M SDE)
    and returns float32 v.
    """
    task, state, batch = start
    bf16_task = DiffusionTask(knob_config(dtype="bfloat16"))
    forward = jax.make_jaxpr(bf16_task.loss)(state.params["diffusion"], batch, state.rng, 0.1).jaxpr
    assert _matmul_input_dtypes(forward) == {"bfloat16"}
    _, losses_32 = train(task, state, batch, STEPS)
    state_16, losses_16 = train(bf16_task, state, batch, STEPS)

    assert losses_16.dtype == np.float32
    for tree in (state_16.params, state_16.opt_state, state_16.ema_params):
        floats = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floats == {np.dtype("float32")}
    relative = np.abs(losses_16 - losses_32) / losses_32
    print(
        f"float32 loss {losses_32[0]:.3f} -> {losses_32[-1]:.3f}; bfloat16 relative difference "
        f"max {relative.max():.4f}, mean {relative.mean():.4f}"
    )
    assert losses_32[-1] < 0.8 * losses_32[0]  # it learns, so the comparison covers a moving state
    assert relative.max() < 0.01

    # Sampling with guidance: traced only (a dtype error would surface here), not compiled.
    inputs = {k: batch[k] for k in ("text_features", "text_mask", "seconds_start", "seconds_total")}

    def sample(params, x_init, rng):
        def model_fn(x, t, cond):
            return bf16_task.model.apply(
                {"params": params},
                x,
                t,
                cond["text_features"],
                cond["text_mask"],
                cond["seconds_start"],
                cond["seconds_total"],
                cond["null"],
            )

        cond = dict(inputs, null=jnp.zeros((BATCH,), bool))
        v_model = guidance.guided_v_model(model_fn, cond, dict(cond, null=~cond["null"]), 6.0, 0.4)
        v = v_model(x_init, jnp.full((BATCH,), 0.5))
        sigmas = jnp.array([10.0, 1.0, 0.1, 0.0])
        return v, samplers.sample(samplers.v_denoiser(v_model), x_init, sigmas, sampler="dpmpp_3m_sde", rng=rng)

    v, x = jax.eval_shape(
        sample, state_16.ema_params["diffusion"], jnp.zeros((BATCH, FRAMES, LATENT_DIM)), jax.random.key(1, impl="rbg")
    )
    assert v.dtype == x.dtype == jnp.float32 and x.shape == (BATCH, FRAMES, LATENT_DIM)


def test_gradient_accumulation_matches_the_whole_batch(start):
    """grad_accum_steps=2 on a batch of 8 gives the step of grad_accum_steps=1 on it.

    The step's random draws (posterior sample, stratified times, noise, dropout) are made
    for the whole batch before it is split, so both compute the same per-example losses.
    Measured: loss equal to 6e-7 and grad norm to 1e-7 relative (tolerance 1e-5), gradients
    to 3e-7 of their norm, SGD-updated params and EMA to 3e-8 (tolerance 1e-7 + 1e-5 relative;
    an SGD step moves a param by up to 1e-2 here).

    Params are compared after an SGD step because AdamW's first update `g / (|g| + eps)`
    turns float-rounding differences in near-zero gradients into steps of up to lr: here the
    Adam-updated params differ by 5e-6 (lr 2e-3), and in `test_diffusion`'s micro config by
    5e-4, where some conv biases feed GroupNorms of one channel per group and so have an
    exactly zero gradient, which rounding makes +-1e-9. (Adam is also blind to a wrong
    gradient scale, which the SGD step and the grad norm are not.)
    """
    _, state, batch = start
    sgd = optax.sgd(1e-2)
    tasks = [DiffusionTask(knob_config(**{"optimizer.grad_accum_steps": k})) for k in (1, 2)]
    for task in tasks:
        task.tx = sgd
    state = state.replace(opt_state={"diffusion": sgd.init(state.params["diffusion"])})
    (one, metrics_one), (two, metrics_two) = jax.jit(lambda s, b: [task.train_step(s, b) for task in tasks])(
        state, batch
    )

    np.testing.assert_allclose(metrics_two["loss"], metrics_one["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics_two["grad_norm"], metrics_one["grad_norm"], rtol=1e-5)
    for tree in ("params", "ema_params"):
        for got, want in zip(jax.tree.leaves(getattr(two, tree)), jax.tree.leaves(getattr(one, tree))):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_gradient_accumulation_needs_a_divisible_batch():
    with pytest.raises(ValueError, match="grad_accum_steps=3 must be >= 1 and divide data.batch_size=8"):
        DiffusionTask(knob_config(**{"optimizer.grad_accum_steps": 3}))
    with pytest.raises(ValueError, match="global batch of 10 examples is not divisible by"):
        accumulate.split_micro_batches({"x": np.zeros((10, 3))}, 4)
    # Micro-batch j takes every k-th example, so each stays spread over all data-parallel devices.
    micro = accumulate.split_micro_batches({"x": np.arange(8)}, 2)["x"]
    np.testing.assert_array_equal(micro, [[0, 2, 4, 6], [1, 3, 5, 7]])
