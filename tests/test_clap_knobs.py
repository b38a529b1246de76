"""Memory knobs of the CLAP train step: rematerialised tower blocks (`model.remat_policy`)
and the gradient cache (`optimizer.grad_accum_steps`, `training/grad_cache.py`).

The micro CLAP of `micro_configs` (1-layer text tower) with one one-block Swin stage, on a random
batch of 16 clips and captions; no tokenizer or data is read. Keys are RBG: threefry's
XLA:CPU compile costs more than the steps', and nothing here depends on the generator.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stable_audio_jax.models.clap import CLAP, CLAPConfig
from stable_audio_jax.training import grad_cache
from stable_audio_jax.training.accumulate import split_micro_batches
from stable_audio_jax.training.clap_task import CLAPTask
from tests.micro_configs import VOCAB_SIZE, micro_clap_config

BATCH, TEXT_LENGTH = 16, 12


def knob_config(**overrides):
    """`micro_configs.micro_clap_config` (no data) with `overrides`, dotted keys such as
    `{"optimizer.grad_accum_steps": 2}`."""
    config = micro_clap_config({"tokenizer": "", "train": "", "valid": ""})
    config.model.audio.update(depths=(1,), num_heads=(2,))  # one Swin stage: a quicker compile
    config.text.max_length = TEXT_LENGTH
    config.data.batch_size = BATCH
    config.update_from_flattened_dict(overrides)
    return config


def with_dropout(**overrides):
    """`knob_config` with text dropout and stochastic depth on (the micro config has neither)."""
    return knob_config(**{"model.text.dropout_rate": 0.2, "model.audio.drop_path_rate": 0.3, **overrides})


def random_inputs(config, seed: int = 0) -> dict[str, np.ndarray]:
    """What `CLAPTask.model_inputs` gives: audio `[BATCH, crop, 2]`, token ids and masks."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, TEXT_LENGTH + 1, (BATCH, 1))
    mask = np.arange(TEXT_LENGTH)[None] < lengths
    return {
        "audio": 0.3 * rng.standard_normal((BATCH, config.data.sample_size, 2)).astype(np.float32),
        "text_ids": np.where(mask, rng.integers(3, VOCAB_SIZE, (BATCH, TEXT_LENGTH)), 1).astype(np.int32),
        "text_mask": mask,
    }


def recording_sgd(learning_rate: float) -> optax.GradientTransformation:
    """SGD whose optimizer state is the last gradient it was given, so a train step's
    gradient can be read back from its new state. (SGD rather than AdamW: Adam's first
    update `g / (|g| + eps)` turns rounding in near-zero gradients into steps of up to lr;
    see test_diffusion_knobs.)"""
    return optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda grads, state, params=None: (jax.tree.map(lambda g: -learning_rate * g, grads), grads),
    )


@pytest.fixture(scope="module")
def start():
    """The plain task, its initial state (`recording_sgd` state), a batch, and `step(k,
    policy)`: one train step from that state with grad_accum_steps k and remat_policy
    `policy`, each compiled and run once per module."""
    task = CLAPTask(knob_config())
    state = jax.jit(lambda key: nn.meta.unbox(task.init_state(key)))(jax.random.key(0, impl="rbg"))
    tx = recording_sgd(0.1)
    state = state.replace(opt_state={"clap": tx.init(state.params["clap"])})
    inputs = random_inputs(task.config)

    @functools.cache
    def step(k: int, policy: str = "none"):
        knob_task = CLAPTask(knob_config(**{"optimizer.grad_accum_steps": k, "model.remat_policy": policy}))
        knob_task.tx = tx
        return jax.jit(knob_task.train_step)(state, inputs)

    return task, state, inputs, step


def _count_primitives(jaxpr, names: tuple[str, ...]) -> int:
    """Equations of a primitive in `names` in `jaxpr`, nested jaxprs included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name in names
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    count += _count_primitives(getattr(sub, "jaxpr", sub), names)
    return count


def _count_remat(jaxpr) -> int:
    """`jax.checkpoint` equations ("remat2" in jax 0.10, "checkpoint" in some versions)."""
    return _count_primitives(jaxpr, ("remat2", "checkpoint"))


def _assert_trees_close(got, want, rtol: float, atol_fraction: float = 0.0):
    """Leaf by leaf, within `rtol` and an absolute `atol_fraction` of the tree's largest
    entry (some gradients are exactly zero in theory, e.g. of attention key biases, and
    rounding noise in practice)."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    atol = atol_fraction * max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


def _assert_same_step(got, want, what: str):
    """Two train steps' `(state, metrics)` agree: metrics, the gradient (the recording
    optimizer's state) within 1e-5 of its norm, SGD-updated params and EMA."""
    (state, metrics), (want_state, want_metrics) = got, want
    for name, value in want_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6, err_msg=f"{what} {name}")
    grads, want_grads = state.opt_state["clap"], want_state.opt_state["clap"]
    _assert_trees_close(grads, want_grads, rtol=1e-5, atol_fraction=1e-5)
    error = float(optax.tree.norm(jax.tree.map(jnp.subtract, grads, want_grads)))
    error /= float(optax.tree.norm(want_grads))
    print(f"{what}: gradient error {error:.1e} of its norm")
    assert error <= 1e-5, what
    for tree in ("params", "ema_params"):
        _assert_trees_close(getattr(state, tree), getattr(want_state, tree), rtol=1e-5, atol_fraction=1e-6)


# --------------------------------------------------------------------------- remat
@pytest.mark.slow
def test_remat_keeps_params_outputs_and_gradients(start):
    """Every text layer and Swin block is rematerialised; the param tree, the embeddings
    (dropout on: the same masks) and the train step (gradient, loss, updated params) are the
    plain model's."""
    _, state, inputs, step = start
    config = with_dropout()
    plain = CLAP(CLAPConfig.from_dict(config.model.to_dict()))
    remat = CLAP(CLAPConfig.from_dict(dict(config.model.to_dict(), remat_policy="full")))
    args = (inputs["audio"], inputs["text_ids"], inputs["text_mask"])
    shapes = [
        jax.eval_shape(lambda m=m: nn.meta.unbox(m.init(jax.random.key(0, impl="rbg"), *args))) for m in (plain, remat)
    ]
    assert jax.tree_util.tree_leaves_with_path(shapes[0]) == jax.tree_util.tree_leaves_with_path(shapes[1])
    params = state.params["clap"]
    assert jax.tree.structure(params) == jax.tree.structure(shapes[0]["params"])

    def embed(model, params, dropout_key):
        return model.apply({"params": params}, *args, deterministic=False, rngs={"dropout": dropout_key})[:2]

    key = jax.random.key(2, impl="rbg")
    (audio_p, text_p), (audio_r, text_r) = jax.jit(lambda k: [embed(plain, params, k), embed(remat, params, k)])(key)
    np.testing.assert_allclose(audio_r, audio_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(text_r, text_p, rtol=1e-6, atol=1e-7)

    c = remat.config
    jaxpr = jax.make_jaxpr(lambda p: embed(remat, p, key))(params).jaxpr
    assert _count_remat(jaxpr) == c.text.num_layers + sum(c.audio.depths)
    # Not vacuous: masks are drawn, for the embedding dropout and the text layer's two
    # dropouts. (The one Swin block's stochastic-depth rate is 0: the rates rise linearly
    # from 0 at the first block.)
    assert _count_primitives(jaxpr, ("random_bits",)) >= 3
    assert _count_remat(jax.make_jaxpr(lambda p: embed(plain, p, key))(params).jaxpr) == 0
    _assert_same_step(step(1, "full"), step(1), "remat_policy=full")
    # The train step traces with a saving policy too.
    task = CLAPTask(knob_config(**{"model.remat_policy": "dots_with_no_batch_dims_saveable"}))
    task.tx = recording_sgd(0.1)
    jax.eval_shape(task.train_step, state, inputs)


# --------------------------------------------------------------------------- gradient cache
@pytest.mark.slow
def test_grad_cache_train_step_matches_the_whole_batch(start):
    """A train step with grad_accum_steps 2 and 4 (the gradient cache, k micro-batches of
    16 / k) equals the plain step (k=1, `jax.value_and_grad` of the contrastive loss of the
    whole batch), dropout off (the micro config has none): the same gradient within 1e-5 of
    its norm (measured 6e-7), loss and metrics (accuracies too: the embeddings are put back
    in batch order before the loss), and the same SGD-updated params and EMA.

    (The batch is 16, not 8, because micro-batches of 2 clips are up to 1e-5 off: with
    test_clap's two-stage tower XLA:CPU computed the audio tower of 2 clips differently from
    that of 8, 2e-6 apart in the pooled features, and a plain `jax.grad` through the same
    micro-batched forward was as far off as the gradient cache.)
    """
    _, _, _, step = start
    _, metrics = step(1)
    assert 2.0 < float(metrics["loss"]) < 5.0  # an untrained model: log 16 = 2.8 and up
    for k in (2, 4):
        _assert_same_step(step(k), step(1), f"grad_accum_steps={k}")


def test_grad_cache_uses_the_same_dropout_in_both_passes():
    """A toy embedder with dropout: k=2 is the exact gradient of the loss whose micro-batch
    j embeddings are drawn with rng `fold_in(rng, j)`, so the backward pass recomputes the
    masks the forward pass drew; the loss couples every pair of the batch."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((5, 4)), jnp.float32), "scale": jnp.float32(2.0)}
    inputs = {
        "x": jnp.asarray(rng.standard_normal((8, 5)), jnp.float32),
        "y": jnp.asarray(rng.standard_normal((8, 5)), jnp.float32),
    }
    key = jax.random.key(3, impl="rbg")

    def embed_fn(p, x, key):
        keep = jax.random.bernoulli(key, 0.7, x["x"].shape)
        return jnp.tanh(jnp.where(keep, x["x"], 0.0) @ p["w"]), jnp.tanh(x["y"] @ p["w"])

    def loss_fn(p, embeddings):
        logits = p["scale"] * embeddings[0] @ embeddings[1].T
        loss = -jnp.mean(jnp.diag(jax.nn.log_softmax(logits)))
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(8))}

    def reference(p):
        micro = split_micro_batches(inputs, 2)
        stacked = [embed_fn(p, jax.tree.map(lambda x: x[j], micro), jax.random.fold_in(key, j)) for j in range(2)]
        return loss_fn(p, grad_cache.merge_micro_batches(jax.tree.map(lambda *x: jnp.stack(x), *stacked), 2))

    def run(params):
        return (
            jax.value_and_grad(reference, has_aux=True)(params),
            grad_cache.grad_cache_value_and_grad(embed_fn, loss_fn, params, inputs, key, 2),
            grad_cache.grad_cache_value_and_grad(embed_fn, loss_fn, params, inputs, key, 1)[0][0],
        )

    ((want_loss, want_aux), want_grads), ((loss, aux), grads), plain_loss = jax.jit(run)(params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(aux["accuracy"], want_aux["accuracy"])
    _assert_trees_close(grads, want_grads, rtol=1e-5, atol_fraction=1e-6)
    # Not vacuous: the unsplit batch with `key` itself draws other masks, another loss.
    assert abs(float(plain_loss) - float(loss)) > 1e-3


# --------------------------------------------------------------------------- errors
def test_bad_knob_settings_give_clear_errors():
    with pytest.raises(ValueError, match=r"unknown CLAP remat_policy 'everything'; choose one of \['none', 'full'"):
        CLAPTask(knob_config(**{"model.remat_policy": "everything"}))
    for steps in (3, 0):  # 3 does not divide BATCH
        with pytest.raises(
            ValueError, match=f"optimizer.grad_accum_steps={steps} must be >= 1 and divide data.batch_size={BATCH}"
        ):
            CLAPTask(knob_config(**{"optimizer.grad_accum_steps": steps}))
    embed = lambda p, x, rng: x  # noqa: E731
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1, got 0"):
        grad_cache.grad_cache_value_and_grad(embed, None, {}, {"x": np.zeros((4, 2))}, None, 0)
    with pytest.raises(ValueError, match="global batch of 6 examples is not divisible by"):
        grad_cache.grad_cache_value_and_grad(embed, None, {}, {"x": np.zeros((6, 2))}, None, 4)
    # merge inverts the strided split.
    x = np.arange(24).reshape(8, 3)
    np.testing.assert_array_equal(grad_cache.merge_micro_batches(split_micro_batches(x, 4), 4), x)
    with pytest.raises(ValueError, match="expected 4 stacked micro-batches"):
        grad_cache.merge_micro_batches(split_micro_batches(x, 2), 4)
