"""The SAO DiT: parameter count, attention details, conditioning semantics, training, weight import,
and parity with the PyTorch reference (golden files from tests/reference/make_dit_reference.py).

Parity tolerance: max |ours - reference| <= 1e-4 * max(1, max |reference|), everything in
float32 (the reference ran PyTorch's float32 SDPA on CPU; the measured errors are ~1e-6 of
the output scale, the CFG rows a few times more as guidance amplifies the difference).
"""

import dataclasses
import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from stable_audio_jax import config_lib, parallel
from stable_audio_jax.convert.sao_dit import check_dit_params, dit_params_from_state_dict
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, load_state_dict
from stable_audio_jax.diffusion import guidance
from stable_audio_jax.models.attention import dot_product_attention
from stable_audio_jax.models.conditioning import TimingConditioner
from stable_audio_jax.models.dit import (
    DiffusionTransformer,
    DiTConfig,
    apply_rotary,
    expected_num_params,
    rotary_angles,
)
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel
from stable_audio_jax.models.unet import UNetConfig
from tests.parity import assert_parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SAO_DIT_PARAMS = 1_056_828_544
TOLERANCE = 1e-4  # relative to max(1, max |reference|)

# The reference models of make_dit_reference.py.
CASES = {
    "rope_full": DiTConfig(
        io_channels=4, embed_dim=64, num_heads=2, depth=2, cond_token_dim=32, global_cond_dim=8, ff_mult=1
    ),
    "rope_half": DiTConfig(
        io_channels=4, embed_dim=64, num_heads=1, depth=1, cond_token_dim=64, global_cond_dim=8, ff_mult=1
    ),
}


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _load_config_module(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dit_inputs(c: DiTConfig, batch: int = 2, frames: int = 8, tokens: int = 5, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 4)
    return (
        jax.random.normal(keys[0], (batch, frames, c.io_channels)),
        jax.random.uniform(keys[1], (batch,)),
        jax.random.normal(keys[2], (batch, tokens, c.cond_token_dim)),
        jax.random.normal(keys[3], (batch, c.global_cond_dim)),
    )


# ----------------------------------------------------------------------------- sizes


def test_sao_parameter_count_by_eval_shape():
    """configs/dit_sao.py: the DiT alone is exactly 1,056,828,544 (the released SAO DiT's count), plus the two
    number embedders (2 x (128 + 257 x 768 + 768) = 396,544); nothing is allocated."""
    config = _load_config_module("dit_sao").get_config()
    model_config = LatentDiffusionConfig.from_dict(config.model.to_dict())
    assert dataclasses.replace(model_config.dit, remat_policy="none") == DiTConfig.sao()
    assert expected_num_params(model_config.dit) == SAO_DIT_PARAMS
    # SAO Small's DiT: the count of the reference's DiffusionTransformer with its options.
    assert expected_num_params(DiTConfig.sao_small()) == 340_879_488
    frames = config.data.sample_size // config.pretransform.downsampling_ratio
    assert frames == 1024 and model_config.text_length == 128 and model_config.latent_dim == 64
    model = LatentDiffusionModel(model_config, dtype=jnp.bfloat16)
    inputs = (
        jnp.zeros((1, frames, 64)),
        jnp.zeros((1,)),
        jnp.zeros((1, 128, 768)),
        jnp.ones((1, 128), bool),
        jnp.zeros((1,)),
        jnp.zeros((1,)),
    )
    params = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
    assert set(params) == {"dit", "timing"}
    assert _count(params["dit"]) == SAO_DIT_PARAMS
    assert _count(params["timing"]) == 396_544
    # Every parameter carries logical axis names (FSDP / tensor sharding come from the rules table).
    boxed = jax.tree.leaves(params["dit"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert all(isinstance(p, nn.LogicallyPartitioned) and len(p.names) == p.value.ndim for p in boxed)


@pytest.mark.parametrize(
    "config",
    [
        DiTConfig.tiny(),
        CASES["rope_half"],
        DiTConfig(
            io_channels=3,
            embed_dim=96,
            num_heads=3,
            depth=3,
            cond_token_dim=32,
            global_cond_dim=0,
            ff_mult=2,
            timestep_features_dim=32,
        ),
        # SAO Small's options: prompt tokens projected to the width, q/k LayerNorms.
        DiTConfig(
            io_channels=4,
            embed_dim=128,
            num_heads=2,
            depth=2,
            cond_token_dim=32,
            global_cond_dim=32,
            project_cond_tokens=True,
            qk_norm="ln",
        ),
        DiTConfig.sao_small(),
    ],
    ids=["tiny", "rope_half", "no_global", "open_small", "sao_small"],
)
def test_expected_num_params_matches_the_module(config):
    x, t, context, global_cond = _dit_inputs(config)
    params = jax.eval_shape(
        DiffusionTransformer(config).init,
        jax.random.key(0),
        x,
        t,
        context,
        global_cond if config.global_cond_dim else None,
    )["params"]
    assert _count(params) == expected_num_params(config)


def test_config_validation_and_round_trip():
    c = DiTConfig.tiny()
    assert DiTConfig.from_dict(c.to_dict()) == c
    assert (c.head_dim, c.kv_heads, c.rotary_dims) == (64, 1, 32)
    sao = DiTConfig.sao()
    assert (sao.head_dim, sao.kv_heads, sao.rotary_dims) == (64, 12, 32)
    with pytest.raises(ValueError, match="unknown DiT config keys"):
        DiTConfig.from_dict({"embed_dims": 64})
    with pytest.raises(ValueError, match="head dim >= 32"):
        DiTConfig(embed_dim=64, num_heads=4, cond_token_dim=32)  # head dim 16 < the default rotary 32
    with pytest.raises(ValueError, match="key/value heads"):
        DiTConfig(embed_dim=128, num_heads=2, cond_token_dim=192)  # 3 kv heads for 2 query heads
    with pytest.raises(ValueError, match="remat_policy"):
        DiTConfig(remat_policy="dots")
    unet = UNetConfig.tiny(in_channels=4, text_length=16, context_features=32)
    with pytest.raises(ValueError, match="exactly one backbone"):
        LatentDiffusionConfig(unet=unet, dit=DiTConfig.tiny(io_channels=4), text_tokens=16)
    with pytest.raises(ValueError, match="text_tokens"):
        LatentDiffusionConfig(dit=DiTConfig.tiny(io_channels=4), global_timing=True)
    with pytest.raises(ValueError, match="dit.global_cond_dim=0"):
        LatentDiffusionConfig(dit=DiTConfig.tiny(io_channels=4), text_tokens=16)
    model = LatentDiffusionConfig(
        dit=DiTConfig.tiny(io_channels=4), timing_kind="number", global_timing=True, text_tokens=16
    )
    assert "unet" not in model.to_dict()
    assert LatentDiffusionConfig.from_dict(model.to_dict()) == model
    assert (model.backbone, model.latent_dim, model.downsampling_factor, model.text_length) == ("dit", 4, 1, 16)
    legacy = LatentDiffusionConfig.from_dict({"unet": unet.to_dict(), "timing_kind": "table"})
    assert (legacy.backbone, legacy.text_length, legacy.latent_dim) == ("unet", 16, 4)


# ----------------------------------------------------------------------------- attention details


def test_grouped_query_attention_is_repeat_interleave():
    """4 query heads on 2 key/value heads: query head h reads kv head h // 2 (PyTorch's
    `repeat_interleave`), not h % 2."""
    keys = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(keys[0], (2, 5, 4, 8))
    k = jax.random.normal(keys[1], (2, 7, 2, 8))
    v = jax.random.normal(keys[2], (2, 7, 2, 8))
    out = dot_product_attention(q, k, v)
    interleaved = dot_product_attention(q, jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2))
    tiled = dot_product_attention(q, jnp.tile(k, (1, 1, 2, 1)), jnp.tile(v, (1, 1, 2, 1)))
    np.testing.assert_allclose(out, interleaved, atol=1e-6)
    assert not np.allclose(out, tiled, atol=1e-3)
    logits = np.einsum("bqhd,bkhd->bhqk", q, np.repeat(k, 2, axis=2)) / np.sqrt(8)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bhqk,bkhd->bqhd", weights, np.repeat(v, 2, axis=2)), atol=1e-5)


def test_rope_rotates_only_the_first_rotary_dims():
    length, heads, head_dim, rotary_dim = 6, 2, 64, 32
    x = jax.random.normal(jax.random.key(0), (1, length, heads, head_dim))
    cos, sin = rotary_angles(length, rotary_dim)
    y = np.asarray(apply_rotary(x, cos, sin))
    np.testing.assert_array_equal(y[..., rotary_dim:], x[..., rotary_dim:])  # dims 32..63 untouched
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6)  # position 0 (the global token) unrotated
    # NeoX rotate-half: dim i pairs with i + 16 at angle pos * 10000^(-2i/32).
    half = rotary_dim // 2
    angle = np.arange(length)[:, None] * 10_000.0 ** (-np.arange(0, rotary_dim, 2) / rotary_dim)[None]
    a, b = np.asarray(x[0, ..., :half]), np.asarray(x[0, ..., half:rotary_dim])
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    np.testing.assert_allclose(y[0, ..., :half], a * c - b * s, atol=1e-5)
    np.testing.assert_allclose(y[0, ..., half:rotary_dim], b * c + a * s, atol=1e-5)
    # Rotations preserve norms, and q.k depends on the offset only.
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    v = jnp.broadcast_to(x[:, :1], x.shape)
    r = np.asarray(apply_rotary(v, cos, sin))
    np.testing.assert_allclose(np.sum(r[0, 1] * r[0, 3], -1), np.sum(r[0, 2] * r[0, 4], -1), rtol=1e-4)


def test_zero_init_branches_and_float32_output():
    """At init every attention/MLP output and both 1x1 convs are zero, so v is
    project_out(project_in(x)) and does not depend on t or the conditioning."""
    c = CASES["rope_half"]
    x, t, context, global_cond = _dit_inputs(c)
    model = DiffusionTransformer(c, dtype=jnp.bfloat16)
    params = jax.jit(model.init)(jax.random.key(0), x, t, context, global_cond)["params"]
    apply = jax.jit(model.apply)
    v = apply({"params": params}, x, t, context, global_cond)
    assert v.dtype == jnp.float32 and v.shape == x.shape
    other = apply({"params": params}, x, 1 - t, 2 * context, -global_cond)
    np.testing.assert_array_equal(v, other)


@pytest.mark.slow
def test_remat_keeps_parameters_and_gradients():
    c = CASES["rope_half"]
    x, t, context, global_cond = _dit_inputs(c)
    params = jax.jit(DiffusionTransformer(c).init)(jax.random.key(0), x, t, context, global_cond)["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)

    def grads(config):
        loss = lambda p: jnp.sum(DiffusionTransformer(config).apply({"params": p}, x, t, context, global_cond) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    remat = DiTConfig(**{**c.to_dict(), "remat_policy": "dots_with_no_batch_dims_saveable"})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads(c), grads(remat))


# ----------------------------------------------------------------------------- conditioning


def _tiny_model(**overrides):
    config = LatentDiffusionConfig(
        dit=DiTConfig.tiny(io_channels=4), timing_kind="number", global_timing=True, text_tokens=6, **overrides
    )
    return LatentDiffusionModel(config)


@pytest.mark.slow
def test_null_context_is_an_all_zero_context_with_the_global_timing():
    """`use_null_context` zeroes the whole cross-attention context (text and timing tokens),
    keeps `[start || total]` as global conditioning, and padded text tokens are zeros."""
    model = _tiny_model()
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (2, 8, 4))
    t = jnp.array([0.3, 0.7])
    text = jax.random.normal(keys[1], (2, 6, 64))
    mask = jnp.array([[True] * 6, [True] * 3 + [False] * 3])
    start, total = jnp.array([0.0, 3.0]), jnp.array([10.0, 30.0])
    variables = jax.jit(model.init)(jax.random.key(1), x, t, text, mask, start, total)
    # Randomise the zero-initialised branches so that every input matters.
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(keys[2], p.shape), variables["params"])
    apply = jax.jit(
        lambda text, start, null: model.apply({"params": params}, x, t, text, mask, start, total, jnp.array(null))
    )

    null = apply(text, start, [True, True])
    timing = TimingConditioner(64, "number").apply({"params": params["timing"]}, start, total)[1]
    direct = DiffusionTransformer(model.config.dit).apply(
        {"params": params["dit"]}, x, t, jnp.zeros((2, 8, 64)), timing
    )
    np.testing.assert_allclose(null, direct, rtol=1e-5, atol=1e-5)  # jitted vs eager rounding
    # The unconditional rows ignore the text but not the timing.
    np.testing.assert_allclose(apply(5 * text, start, [True, True]), null, atol=1e-6)
    assert not np.allclose(apply(text, start + 7, [True, True]), null, atol=1e-4)
    # Dropping one row changes that row only.
    cond = apply(text, start, [False, False])
    mixed = apply(text, start, [False, True])
    np.testing.assert_allclose(mixed[0], cond[0], atol=1e-6)
    np.testing.assert_allclose(mixed[1], null[1], atol=1e-6)
    assert not np.allclose(cond[1], null[1], atol=1e-4)
    # Padded text tokens are zero vectors: their features do not matter.
    noisy_padding = text.at[1, 3:].set(100.0)
    np.testing.assert_allclose(apply(noisy_padding, start, [False, False]), cond, atol=1e-5)


# ----------------------------------------------------------------------------- training


def _micro_task(text_length: int = 16):
    from stable_audio_jax.training.diffusion_task import DiffusionTask

    dit = DiTConfig(io_channels=4, embed_dim=64, depth=1, num_heads=2, cond_token_dim=32, global_cond_dim=64, ff_mult=2)
    config = config_lib.diffusion_config(
        dit=dit.to_dict(), timing_kind="number", global_timing=True, text_tokens=text_length
    )
    config.pretransform.downsampling_ratio = 8
    config.data.sample_size = 32 * 8
    config.data.batch_size = 8
    config.optimizer.update(lr=3e-3, b2=0.99, warmup=0.0)
    config.ema.beta = 0.9
    config.diffusion.cfg_dropout = 0.0
    return DiffusionTask(config)


@pytest.mark.slow
def test_tiny_dit_trains_with_the_diffusion_task_and_shards():
    """The DiffusionTask trains a micro DiT: the v-loss on a fixed batch of learnable latents
    falls by a fifth in 60 steps (measured 0.76 -> 0.56). On a (data 2, fsdp 2, tensor 2)
    mesh, with the parameters sharded by their logical axes, the loss equals one device's."""
    from stable_audio_jax.parallel import with_rules
    from stable_audio_jax.training.trainer import jit_train_step

    task = _micro_task()
    rng = np.random.default_rng(0)
    # Learnable latents: one smooth pattern (per channel a sinusoid over the frames) plus a little noise.
    pattern = np.sin(2 * np.pi * np.arange(32)[:, None] / 8 + np.arange(4)[None, :])
    host = {
        "latent_mean": (pattern + 0.1 * rng.normal(size=(8, 32, 4))).astype(np.float32),
        "latent_std": np.full((8, 32, 4), 0.05, np.float32),
        "latent_mask": np.ones((8, 32), bool),
        "text_features": rng.normal(size=(8, 16, 32)).astype(np.float32),
        "text_mask": np.arange(16)[None] < rng.integers(1, 17, (8, 1)),
        "seconds_start": rng.integers(0, 4, 8),
        "seconds_total": rng.integers(4, 30, 8),
    }
    inputs = task.model_inputs(host)
    rules = parallel.DEFAULT_RULES

    mesh = parallel.create_mesh((2, 2, 2))
    state, shardings = parallel.init_sharded(task.init_state, jax.random.key(0), mesh=mesh, rules=rules)
    assert shardings.params["diffusion"]["dit"]["layers_0"]["self_attn"]["query"]["kernel"].spec == P(
        "fsdp", "tensor", None
    )
    loss_fn = jax.jit(with_rules(lambda p, b: task.loss(p, b, jax.random.key(7), 0.0)[0], rules))
    with jax.set_mesh(mesh):
        mesh_loss = float(loss_fn(state.params["diffusion"], parallel.host_to_global(inputs, mesh)))

    single = parallel.create_mesh((1, 1, 1), devices=jax.devices()[:1])
    state, shardings = parallel.init_sharded(task.init_state, jax.random.key(0), mesh=single, rules=rules)
    batch = parallel.host_to_global(inputs, single)
    step = jit_train_step(task.train_step, mesh=single, rules=rules, state_shardings=shardings, example_batch=batch)
    losses = []
    with jax.set_mesh(single):
        single_loss = float(loss_fn(state.params["diffusion"], batch))
        for _ in range(60):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
    print(f"v-loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}")
    np.testing.assert_allclose(mesh_loss, single_loss, rtol=1e-5)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_dit_tiny_config_builds():
    config = _load_config_module("dit_tiny").get_config()
    model = LatentDiffusionConfig.from_dict(config.model.to_dict())
    assert model.backbone == "dit" and model.latent_dim == 32 and model.text_length == 77
    assert model.dit.head_dim >= 32
    assert config.data.sample_size % config.pretransform.downsampling_ratio == 0


# ----------------------------------------------------------------------------- weight import


def _state(case: str) -> dict[str, np.ndarray]:
    return dict(load_state_dict(os.path.join(FIXTURES, f"dit_{case}_state.safetensors")))


def _convert(tensors: dict, config: DiTConfig):
    return dit_params_from_state_dict(StateDictReader(tensors, "fixture"), config)


def test_converter_errors_name_the_key():
    config = CASES["rope_full"]
    tensors = _state("rope_full")
    params = _convert(tensors, config)
    check_dit_params(params, config)

    missing = {k: v for k, v in tensors.items() if k != "model.model.transformer.layers.1.cross_attn.to_kv.weight"}
    with pytest.raises(ConversionError, match=r"missing key 'model\.model\.transformer\.layers\.1\.cross_attn\.to_kv"):
        _convert(missing, config)
    extra = dict(tensors, **{"model.model.transformer.layers.2.pre_norm.gamma": np.ones(64, np.float32)})
    with pytest.raises(ConversionError, match=r"unexpected key.*'model\.model\.transformer\.layers\.2\.pre_norm"):
        _convert(extra, config)
    wrong = dict(tensors, **{"model.model.transformer.project_in.weight": np.zeros((64, 5), np.float32)})
    with pytest.raises(ConversionError, match=r"'model\.model\.transformer\.project_in\.weight' has shape \(64, 5\)"):
        _convert(wrong, config)
    beta = dict(tensors, **{"model.model.transformer.layers.0.ff_norm.beta": np.full(64, 0.5, np.float32)})
    with pytest.raises(ConversionError, match=r"ff_norm\.beta' must be all zeros"):
        _convert(beta, config)
    freqs = dict(tensors, **{"model.model.transformer.rotary_pos_emb.inv_freq": np.ones(16, np.float32)})
    with pytest.raises(ConversionError, match=r"rotary_pos_emb\.inv_freq"):
        _convert(freqs, config)
    # A config that does not fit the checkpoint (deeper) fails on the first absent key.
    with pytest.raises(ConversionError, match=r"missing key 'model\.model\.transformer\.layers\.2\."):
        _convert(tensors, DiTConfig(**{**config.to_dict(), "depth": 3}))
    # And a tree that does not fit the module is caught by the shape check.
    params["layers_0"]["ff"]["bias"] = np.zeros((2, 63), np.float32)
    del params["project_out"]
    with pytest.raises(ConversionError, match=r"missing \['project_out/kernel'\].*layers_0/ff/bias is \(2, 63\)"):
        check_dit_params(params, config)


# ----------------------------------------------------------------------------- parity


@pytest.fixture(scope="module", params=sorted(CASES))
def reference(request):
    """(config, converted params, the reference arrays) of one golden case."""
    config = CASES[request.param]
    params = _convert(_state(request.param), config)
    arrays = dict(np.load(os.path.join(FIXTURES, f"dit_{request.param}_reference.npz")))
    return config, params, arrays


@pytest.mark.parametrize("output", ["v_plain", "v_cfg6", "v_cfg6_neg_rescale"])
@pytest.mark.parity
def test_parity_with_the_reference(reference, output):
    """Our DiT (+ `guidance.guided_v_model` for the CFG rows) against the reference DiT's
    forward with `cfg_scale` 1, 6, and 6 with `scale_phi` 0.7 and a negative context."""
    config, params, ref = reference
    model = DiffusionTransformer(config)

    def model_fn(x, t, cond):
        return model.apply({"params": params}, x, t, cond["context"], cond["global"])

    x = jnp.asarray(ref["x"]).transpose(0, 2, 1)  # [batch, channels, frames] -> channels last
    cond = {"context": ref["cond"], "global": ref["global_cond"]}
    if output == "v_plain":
        v = model_fn(x, ref["t"], cond)
    elif output == "v_cfg6":
        uncond = dict(cond, context=np.zeros_like(ref["cond"]))
        v = guidance.guided_v_model(model_fn, cond, uncond, 6.0)(x, ref["t"])
    else:  # the negative prompt's masked tokens are zeroed, as the reference does
        uncond = dict(cond, context=np.where(ref["negative_mask"][..., None], ref["negative"], 0.0))
        v = guidance.guided_v_model(model_fn, cond, uncond, 6.0, rescale_phi=0.7)(x, ref["t"])
    v = np.asarray(v).transpose(0, 2, 1)
    assert_parity(v, ref[output], output, rel=TOLERANCE)
