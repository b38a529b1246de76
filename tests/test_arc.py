"""ARC post-training: the relativistic losses, the score head, the DiT cut for the discriminator,
and a run on the tiny SAO-layout fixture (alternating players, resume, few-step sampling)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from stable_audio_jax import config_lib
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference.generate import AudioGenerator
from stable_audio_jax.losses.adversarial import relativistic_discriminator_loss, relativistic_generator_loss
from stable_audio_jax.models.arc_discriminator import ConvScoreHead
from stable_audio_jax.models.dit import DiffusionTransformer, DiTConfig
from stable_audio_jax.training.arc_task import ARCTask, _head_tokens
from stable_audio_jax.training.runs import load_run
from stable_audio_jax.training.trainer import Trainer
from tests.sao_finetune import finetune_config


def test_relativistic_losses():
    real, fake = jnp.array([[2.0], [0.0]]), jnp.array([[0.0], [1.0]])
    want_dis = np.mean(np.log1p(np.exp(-np.array([2.0, -1.0]))))
    want_gen = np.mean(np.log1p(np.exp(np.array([2.0, -1.0]))))
    np.testing.assert_allclose(relativistic_discriminator_loss(real, fake), want_dis, rtol=1e-6)
    np.testing.assert_allclose(relativistic_generator_loss(real, fake), want_gen, rtol=1e-6)
    # The discriminator gains by raising real over fake; the generator by the reverse.
    grad_real = jax.grad(relativistic_discriminator_loss)(real, fake)
    assert np.all(np.asarray(grad_real) < 0)
    assert np.all(np.asarray(jax.grad(relativistic_generator_loss, argnums=1)(real, fake)) < 0)


@pytest.mark.parametrize("tokens", [65, 129, 1025])
def test_score_head_length_and_clip(tokens):
    head = ConvScoreHead(soft_clip_scale=0.5)
    hidden = jax.random.normal(jax.random.key(0), (2, tokens, 64)) * 10
    params = head.init(jax.random.key(1), hidden)["params"]
    scores = head.apply({"params": params}, hidden)
    assert scores.shape == (2, _head_tokens(tokens), 1) and scores.shape[1] >= 1
    assert float(jnp.max(jnp.abs(scores))) <= 0.5


def test_dit_hidden_states_are_what_the_output_projects():
    """`return_hidden` stops after the last block: projecting its frames as the full model does
    gives the full model's v, and the cut model's params are the full model's minus the two
    output projections."""
    config = DiTConfig.tiny(io_channels=8, cond_token_dim=64)
    x = jax.random.normal(jax.random.key(0), (2, 12, 8))
    t, context = jnp.array([0.3, 0.8]), jax.random.normal(jax.random.key(1), (2, 5, 64))
    glob = jax.random.normal(jax.random.key(2), (2, config.global_cond_dim)) if config.global_cond_dim else None
    model = DiffusionTransformer(config)
    params = nn.meta.unbox(model.init(jax.random.key(3), x, t, context, glob)["params"])
    params = jax.tree.map(lambda p: p + 0.01 * jax.random.normal(jax.random.key(4), p.shape), params)
    hidden = model.apply({"params": params}, x, t, context, glob, True)
    assert hidden.shape == (2, 13, config.embed_dim)
    out = hidden[:, 1:] @ params["project_out"]["kernel"]
    out = out + out @ params["postprocess_conv"]["kernel"]
    np.testing.assert_allclose(out, model.apply({"params": params}, x, t, context, glob), atol=1e-5)
    cut = DiffusionTransformer(config).init(jax.random.key(3), x, t, context, glob, True)["params"]
    assert set(traverse_util.flatten_dict(cut)) == {
        p for p in traverse_util.flatten_dict(params) if p[0] not in ("project_out", "postprocess_conv")
    }


def _arc_config(converted: str, shards: str, **trainer):
    config = finetune_config(converted, shards, **{"num_steps": 4, "checkpoint_every": 2, **trainer})
    config.model.objective = "rf_denoiser"
    config = config_lib.arc_config(config)
    config.arc.discriminator_layer = 0  # the fixture's DiT has one block
    return config


@pytest.mark.slow
def test_arc_config_errors(converted, latents):
    config = _arc_config(converted, latents[0])
    config.model.objective = "v"
    config.sampling.update(sampler="dpmpp_3m_sde", sigma_max=500.0)
    with pytest.raises(UserError, match="ARC post-trains a rectified-flow model"):
        ARCTask(config)
    config = _arc_config(converted, latents[0])
    config.arc.discriminator_layer = 1
    with pytest.raises(UserError, match="discriminator_layer=1 is not a block"):
        ARCTask(config)


@pytest.fixture(scope="module")
def arc_run(converted, latents, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("arc_run"))
    config = _arc_config(converted, latents[0], num_steps=2)
    first = Trainer(config, workdir, ARCTask(config)).train()
    after_two = load_run(workdir)
    config = _arc_config(converted, latents[0])
    resumed = Trainer(config, workdir, ARCTask(config)).train()
    return {"workdir": workdir, "first": first, "resumed": resumed, "after_two": after_two}


@pytest.mark.e2e
def test_arc_alternates_players_and_resumes(arc_run, converted):
    first, resumed = arc_run["first"], arc_run["resumed"]
    assert first["end_step"] == 2 and resumed["start_step"] == 2 and resumed["end_step"] == 4
    assert {"generator", "discriminator", "contrastive"} <= set().union(*(h.keys() for h in first["history"]))
    assert all(np.isfinite(v) for h in first["history"] + resumed["history"] for k, v in h.items() if k != "step")
    run = load_run(arc_run["workdir"])
    before = arc_run["after_two"].state
    # Steps 2 (generator) and 3 (discriminator) each moved their own player.
    changed = {
        name: any(
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(run.state.params[name]), jax.tree.leaves(before.params[name]))
        )
        for name in ("diffusion", "discriminator")
    }
    assert changed == {"diffusion": True, "discriminator": True}
    # The discriminator's backbone starts from the generator's weights (the pretrained ones).
    from stable_audio_jax import parallel
    from stable_audio_jax.training.init_from import init_state_from

    task = run.task
    mesh = parallel.create_mesh((-1, 1, 1))
    abstract, _ = parallel.abstract_with_shardings(
        task.init_state, jax.random.PRNGKey(0), mesh=mesh, rules=parallel.DEFAULT_RULES
    )
    initial, weights = init_state_from(
        converted, task, abstract, jax.random.PRNGKey(0), mesh=mesh, rules=parallel.DEFAULT_RULES
    )
    base = traverse_util.flatten_dict(weights["diffusion"])
    backbone = traverse_util.flatten_dict(initial.params["discriminator"]["backbone"])
    assert backbone and set(backbone) < set(base)
    for path, leaf in backbone.items():
        np.testing.assert_array_equal(leaf, base[path])


@pytest.mark.e2e
def test_arc_generator_samples_in_eight_steps(arc_run, converted):
    generator = AudioGenerator.from_pretrained(converted, diffusion_dir=arc_run["workdir"])
    assert generator.objective == "rf_denoiser" and generator.sampling["sampler"] == "pingpong"
    audio = generator.generate(["warm pads"], seconds_total=0.05, seed=1)
    assert np.all(np.isfinite(audio)) and audio.shape[0] == 1
