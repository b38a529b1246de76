"""Timing conditioning and the SA 1.0 U-Net: shapes, parameter counts, CFG null context, masking."""

import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.models.conditioning import (
    LearnedFourierFeatures,
    NumberEmbedder,
    SecondsTableEmbedder,
    TimingConditioner,
    build_context,
    seconds_left_features,
)
from stable_audio_jax.models.remat import REMAT_CHOICES
from stable_audio_jax.models.unet import Conv1d, ConvTranspose1d, UNet1D, UNetConfig, expected_num_params

SA1_PARAMS = 906_679_744


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _unet_inputs(config: UNetConfig, batch: int = 1, frames: int = 16):
    return (
        jnp.zeros((batch, frames, config.in_channels)),
        jnp.zeros((batch,)),
        jnp.zeros((batch, config.context_length, config.context_features)),
        jnp.ones((batch, config.context_length), bool),
        jnp.zeros((batch,), bool),
    )


# ----------------------------------------------------------------------------- conditioning


def test_fourier_features_order_is_raw_sin_cos():
    module = LearnedFourierFeatures(256)
    x = jnp.array([0.0, 0.25, 1.0])
    params = module.init(jax.random.key(0), x)
    w = params["params"]["weights"].value
    assert w.shape == (128,)
    out = module.apply(params, x)
    assert out.shape == (3, 257)
    f = 2 * math.pi * x[:, None] * w[None]
    np.testing.assert_allclose(out[:, 0], x, atol=1e-6)
    np.testing.assert_allclose(out[:, 1:129], jnp.sin(f), atol=1e-5)
    np.testing.assert_allclose(out[:, 129:], jnp.cos(f), atol=1e-5)


def test_number_embedder_normalises_and_clamps():
    module = NumberEmbedder(32, min_value=0.0, max_value=512.0)
    x = jnp.array([-5.0, 0.0, 128.0, 512.0, 600.0])
    params = module.init(jax.random.key(0), x)
    out = module.apply(params, x)
    assert out.shape == (5, 32)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # clamped to 0
    np.testing.assert_allclose(out[4], out[3], atol=1e-6)  # clamped to 512
    # Equals Dense([u, sin, cos]) with u = x / 512.
    p = params["params"]["embedding"]
    feats = LearnedFourierFeatures(256).apply({"params": p["fourier"]}, jnp.array([0.25]))
    expected = feats @ p["proj"]["kernel"].value + p["proj"]["bias"].value
    np.testing.assert_allclose(out[2], expected[0], rtol=1e-5, atol=1e-5)
    assert p["proj"]["kernel"].value.shape == (257, 32)


def test_seconds_table_clamps_to_512():
    module = SecondsTableEmbedder(8)
    x = jnp.array([-3.0, 0.0, 3.7, 512.0, 600.0, 10_000.0])
    params = module.init(jax.random.key(0), x)
    table = params["params"]["embedding"].value
    assert table.shape == (513, 8)
    out = module.apply(params, x)
    np.testing.assert_array_equal(out, table[jnp.array([0, 0, 3, 512, 512, 512])])


@pytest.mark.parametrize("kind", ["number", "table"])
def test_timing_conditioner(kind):
    module = TimingConditioner(16, kind=kind)
    start, total = jnp.array([0.0, 10.0, 30.0]), jnp.array([0.0, 10.0, 95.0])
    params = module.init(jax.random.key(0), start, total)
    assert set(params["params"]) == {"seconds_start", "seconds_total"}
    tokens, global_cond = module.apply(params, start, total)
    assert tokens.shape == (3, 2, 16) and global_cond.shape == (3, 32)
    np.testing.assert_array_equal(global_cond, jnp.concatenate([tokens[:, 0], tokens[:, 1]], -1))
    # Separate parameters: the same value embeds differently as start and as total.
    assert not np.allclose(tokens[1, 0], tokens[1, 1])


def test_timing_conditioner_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        TimingConditioner(8, kind="float").init(jax.random.key(0), jnp.zeros(1), jnp.zeros(1))


def test_build_context():
    text = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    timing = -jnp.ones((2, 2, 4))
    context, context_mask = build_context(text, mask, timing)
    assert context.shape == (2, 5, 4) and context_mask.shape == (2, 5)
    assert context_mask.dtype == jnp.bool_
    np.testing.assert_array_equal(context[:, :3], text)
    np.testing.assert_array_equal(context[:, 3:], timing)
    np.testing.assert_array_equal(context_mask, [[1, 1, 0, 1, 1], [1, 0, 0, 1, 1]])
    with pytest.raises(ValueError):
        build_context(text, mask, jnp.zeros((2, 2, 5)))


# ----------------------------------------------------------------------------- convolutions


def test_conv1d_adp_same_padding():
    """k=9, stride 4: total padding 5, 3 on the left (ADP puts the odd sample there)."""
    x = jax.random.normal(jax.random.key(1), (1, 16, 2))
    module = Conv1d(3, 9, 4)
    params = module.init(jax.random.key(0), x)
    y = module.apply(params, x)
    assert y.shape == (1, 4, 3)
    k, b = params["params"]["kernel"].value, params["params"]["bias"].value
    xp = np.pad(np.asarray(x[0]), ((3, 2), (0, 0)))
    ref = np.stack([np.einsum("ki,kio->o", xp[4 * i : 4 * i + 9], k) for i in range(4)]) + b
    np.testing.assert_allclose(y[0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [2, 3, 4])
def test_conv_transpose1d_matches_direct_definition(stride):
    length, kernel_size = 5, 2 * stride
    x = jax.random.normal(jax.random.key(1), (1, length, 2))
    module = ConvTranspose1d(3, kernel_size, stride)
    params = module.init(jax.random.key(0), x)
    y = module.apply(params, x)
    assert y.shape == (1, length * stride, 3)
    k, b = np.asarray(params["params"]["kernel"].value), np.asarray(params["params"]["bias"].value)
    full = np.zeros(((length - 1) * stride + kernel_size, 3))
    for i in range(length):
        full[i * stride : i * stride + kernel_size] += np.einsum("i,kio->ko", np.asarray(x[0, i]), k)
    total = kernel_size - stride
    left = total - total // 2
    np.testing.assert_allclose(y[0], full[left : left + length * stride] + b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- U-Net config


def test_config_dict_roundtrip_and_validation():
    config = UNetConfig.tiny(in_channels=16, text_length=10)
    assert config.context_length == 12
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert UNetConfig.sa1().downsampling_factor == 16
    with pytest.raises(ValueError, match="unknown"):
        UNetConfig.from_dict({"chanels": 3})
    with pytest.raises(ValueError, match="multipliers"):
        UNetConfig(multipliers=(4, 4))
    with pytest.raises(ValueError, match="attention_heads"):
        UNetConfig(attention_heads=24)
    with pytest.raises(ValueError, match="resnet_groups"):
        UNetConfig(resnet_groups=48)
    with pytest.raises(ValueError, match=r"unknown remat_policy 'dots'; choose one of \['none', 'full'"):
        UNetConfig(remat_policy="dots")
    with pytest.raises(ValueError, match=r"mask_semantics must be one of \('strict', 'reference'\)"):
        UNetConfig(mask_semantics="sat")
    reference = dataclasses.replace(config, mask_semantics="reference")
    assert UNetConfig.from_dict(reference.to_dict()) == reference and config.mask_semantics == "strict"


@pytest.fixture(scope="module")
def sa1_abstract():
    config = UNetConfig.sa1()
    return jax.eval_shape(UNet1D(config).init, jax.random.key(0), *_unet_inputs(config))


def test_sa1_param_count(sa1_abstract):
    assert _count(sa1_abstract) == SA1_PARAMS
    assert expected_num_params(UNetConfig.sa1()) == SA1_PARAMS
    params = sa1_abstract["params"]
    assert params["fixed_embedding"].value.shape == (79, 768)
    assert params["to_time"]["proj"]["kernel"].value.shape == (257, 1024)
    # head dim 80 at 1280 channels; q/k/v without bias, output with bias
    attn = params["bottleneck_transformer"]["blocks_0"]["cross_attention"]["attention"]
    assert attn["query"]["kernel"].value.shape == (1280, 16, 80)
    assert attn["key"]["kernel"].value.shape == (768, 16, 80)
    assert set(attn["query"]) == {"kernel"} and set(attn["out"]) == {"kernel", "bias"}
    assert params["downsamples_3_downsample"]["kernel"].value.shape == (9, 1280, 1280)
    assert params["upsamples_0_upsample"]["kernel"].value.shape == (8, 1280, 1280)
    assert params["upsamples_3_upsample"]["kernel"].value.shape == (3, 1024, 1024)


def test_all_params_have_logical_axes(sa1_abstract):
    leaves = jax.tree.leaves(sa1_abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves
    for leaf in leaves:
        assert isinstance(leaf, nn.Partitioned), leaf
        assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)


# ----------------------------------------------------------------------------- tiny U-Net forward


@pytest.fixture(scope="module")
def tiny():
    config = UNetConfig.tiny()
    model = UNet1D(config)
    params = jax.jit(model.init)(jax.random.key(0), *_unet_inputs(config, frames=4))
    return config, model, params, jax.jit(model.apply)


def test_tiny_param_count(tiny):
    config, _, params, _ = tiny
    assert _count(params) == expected_num_params(config)


def test_tiny_forward_null_context_and_mask(tiny):
    config, _, params, apply = tiny
    length, text_len = config.context_length, 10
    k1, k2, k3, k4 = jax.random.split(jax.random.key(42), 4)
    x = jnp.broadcast_to(jax.random.normal(k1, (1, 64, config.in_channels)), (4, 64, config.in_channels))
    t = jnp.full((4,), 0.3)
    ctx_a = jax.random.normal(k2, (length, config.context_features))
    positions = jnp.arange(length)
    mask_a = (positions < text_len) | (positions >= length - 2)  # text tokens + 2 timing tokens
    ctx_a2 = jnp.where(mask_a[:, None], ctx_a, jax.random.normal(k3, ctx_a.shape))  # differs only where masked
    ctx_b = jax.random.normal(k4, ctx_a.shape)
    context = jnp.stack([ctx_a, ctx_a2, ctx_a, ctx_b])
    mask = jnp.stack([mask_a, mask_a, mask_a, jnp.ones(length, bool)])
    use_null = jnp.array([False, False, True, True])
    v = apply(params, x, t, context, mask, use_null)
    assert v.shape == (4, 64, config.in_channels)
    assert bool(jnp.all(jnp.isfinite(v)))
    np.testing.assert_allclose(v[1], v[0], atol=1e-5)  # masked-out tokens do not matter
    np.testing.assert_allclose(v[3], v[2], atol=1e-5)  # null rows ignore their context and mask
    assert float(jnp.max(jnp.abs(v[2] - v[0]))) > 1e-3  # the null context differs from a real one
    # Without the flag the same call is the conditioned output; the time input matters.
    v_plain = apply(params, x, t, context, mask, None)
    np.testing.assert_allclose(v_plain[:2], v[:2], atol=1e-5)
    v_t = apply(params, x, jnp.full((4,), 0.7), context, mask, use_null)
    assert float(jnp.max(jnp.abs(v_t - v))) > 1e-3


@pytest.mark.slow
def test_reference_mask_semantics_keep_padding_in_the_softmax(tiny):
    """Same params as strict: padded tokens' contents still do not matter (their k, v are
    zeroed), but their number does (logit-0 keys in the softmax), and null rows follow the
    prompt's mask instead of attending to every learned token."""
    config, _, params, _ = tiny
    reference = UNet1D(dataclasses.replace(config, mask_semantics="reference"))
    length = config.context_length
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    x = jnp.broadcast_to(jax.random.normal(k1, (1, 16, config.in_channels)), (3, 16, config.in_channels))
    ctx = jax.random.normal(k2, (length, config.context_features))
    positions = jnp.arange(length)
    short, longer = ((positions < n) | (positions >= length - 2) for n in (3, 6))
    ctx_other = jnp.where(short[:, None], ctx, jax.random.normal(k3, ctx.shape))
    context, mask = jnp.stack([ctx, ctx_other, ctx]), jnp.stack([short, short, longer])
    args = (x, jnp.full((3,), 0.4), context, mask)
    v = reference.apply(params, *args)
    np.testing.assert_allclose(v[1], v[0], atol=1e-5)
    v_strict = UNet1D(config).apply(params, *args)
    assert float(jnp.max(jnp.abs(v[0] - v_strict[0]))) > 1e-3  # masked keys stay in the softmax
    null = reference.apply(params, *args, jnp.ones((3,), bool))
    assert float(jnp.max(jnp.abs(null[0] - null[2]))) > 1e-3  # the null rows keep each row's mask
    np.testing.assert_allclose(null[1], null[0], atol=1e-5)


def test_length_must_be_multiple_of_downsampling_factor(tiny):
    config, model, params, _ = tiny
    x, t, context, mask, null = _unet_inputs(config, batch=2, frames=config.downsampling_factor * 8 + 2)
    with pytest.raises(ValueError, match="multiple"):
        jax.eval_shape(model.apply, params, x, t, context, mask, null)


def test_bfloat16_compute_shape(tiny):
    config, _, params, _ = tiny
    model = UNet1D(config, dtype=jnp.bfloat16)
    out = jax.eval_shape(model.apply, params, *_unet_inputs(config, batch=2, frames=16))
    assert out.shape == (2, 16, config.in_channels) and out.dtype == jnp.bfloat16


@pytest.mark.slow
def test_global_conditioning_enters_the_mapping_and_is_nulled_with_the_context():
    config = UNetConfig(**{**UNetConfig.tiny().to_dict(), "global_features": 6})
    model = UNet1D(config)
    x, t, context, mask, _ = _unet_inputs(config, batch=3, frames=16)
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(1), x.shape[1:]), x.shape)  # same input per row
    glob = jax.random.normal(jax.random.key(2), (3, 6)).at[2].set(jax.random.normal(jax.random.key(3), (6,)))
    glob = glob.at[1].set(glob[0])
    params = model.init(jax.random.key(0), x, t, context, mask, None, glob)
    assert _count(params) == expected_num_params(config) == expected_num_params(UNetConfig.tiny()) + 6 * 64 + 64
    v = model.apply(params, x, t, context, mask, None, glob)
    assert float(jnp.max(jnp.abs(v[2] - v[0]))) > 1e-4  # a different global vector changes the output
    np.testing.assert_allclose(v[1], v[0], atol=1e-5)
    # Null rows see a zero global vector, whatever they were given.
    null = jnp.array([False, True, True])
    v_null = model.apply(params, x, t, context, mask, null, glob)
    np.testing.assert_allclose(v_null[2], v_null[1], atol=1e-5)
    v_zero = model.apply(params, x, t, context, mask, None, jnp.zeros_like(glob))
    assert float(jnp.max(jnp.abs(v_null[1] - v_zero[1]))) > 1e-4  # (the null context differs too)
    with pytest.raises(ValueError, match="global_cond"):
        model.apply(params, x, t, context, mask, None, None)


def test_seconds_left_features_change_sign_at_the_requested_end():
    """Frames of 0.5 s: a 10 s file whose window starts at second 4 ends in frame 11
    (centre 4 + 11.5 x 0.5 = 9.75 s); a window starting at 0 of a 3 s file in frame 5."""
    features = seconds_left_features(jnp.array([4, 0]), jnp.array([10, 3]), frames=16, frame_seconds=0.5, features=4)
    assert features.shape == (2, 16, 4)
    left = np.array([[10 - 4 - (f + 0.5) * 0.5 for f in range(16)], [3 - (f + 0.5) * 0.5 for f in range(16)]])
    np.testing.assert_allclose(features[..., 0], np.tanh(left / 0.25), atol=1e-6)  # the sharpest scale
    np.testing.assert_allclose(features[..., -1], np.tanh(left / 16.0), atol=1e-6)  # the widest
    assert list(np.flatnonzero(np.diff(np.sign(features[0, :, 2])))) == [11]
    assert list(np.flatnonzero(np.diff(np.sign(features[1, :, 2])))) == [5]
    with pytest.raises(ValueError, match="frame_seconds"):
        seconds_left_features(jnp.zeros(1), jnp.ones(1), frames=4, frame_seconds=0.0, features=2)


@pytest.mark.slow
def test_frame_conditioning_is_added_per_frame_and_nulled_with_the_context():
    config = UNetConfig(**{**UNetConfig.tiny().to_dict(), "frame_features": 3})
    model = UNet1D(config)
    x, t, context, mask, _ = _unet_inputs(config, batch=2, frames=16)
    frame_cond = jax.random.normal(jax.random.key(2), (2, 16, 3))
    params = model.init(jax.random.key(0), x, t, context, mask, None, None, frame_cond)
    assert (
        _count(params) == expected_num_params(config) == expected_num_params(UNetConfig.tiny()) + 3 * 32 + 32
    )  # widths[0] = 32
    v = model.apply(params, x, t, context, mask, None, None, frame_cond)
    v_zero = model.apply(params, x, t, context, mask, None, None, jnp.zeros_like(frame_cond))
    assert float(jnp.max(jnp.abs(v - v_zero))) > 1e-4
    null = jnp.array([True, True])
    np.testing.assert_allclose(
        model.apply(params, x, t, context, mask, null, None, frame_cond),
        model.apply(params, x, t, context, mask, null, None, jnp.zeros_like(frame_cond)),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="frame_cond"):
        model.apply(params, x, t, context, mask, None, None, None)
    with pytest.raises(ValueError, match="frame_cond must be"):
        model.apply(params, x, t, context, mask, None, None, frame_cond[:, :8])


# ----------------------------------------------------------------------------- rematerialisation

# One down level with a 2-block bottleneck transformer: 6 ResNet blocks + 2 transformer blocks.
REMAT_UNET = UNetConfig(
    **{
        **UNetConfig.tiny(in_channels=4, text_length=6, context_features=16).to_dict(),
        "channels": 16,
        "multipliers": (1, 1),
        "factors": (2,),
        "num_blocks": (1,),
        "attentions": (0, 2),
        "resnet_groups": 4,
        "transformer_groups": 8,
    }
)
REMAT_BLOCKS = 8


def _remat_unet(policy: str) -> UNet1D:
    return UNet1D(UNetConfig(**{**REMAT_UNET.to_dict(), "remat_policy": policy}))


def _remat_inputs(batch: int = 2, frames: int = 16):
    k = jax.random.split(jax.random.key(3), 3)
    c = REMAT_UNET
    return (
        jax.random.normal(k[0], (batch, frames, c.in_channels)),
        jax.random.uniform(k[1], (batch,)),
        jax.random.normal(k[2], (batch, c.context_length, c.context_features)),
        jnp.arange(c.context_length)[None] < jnp.array([[4], [8]]),
        jnp.array([False, True]),
    )


@pytest.mark.parametrize("policy", REMAT_CHOICES[1:])
def test_remat_keeps_the_parameter_tree(policy):
    """Checkpoints stay compatible: same names, shapes and logical axes with remat."""
    plain = jax.eval_shape(_remat_unet("none").init, jax.random.key(0), *_remat_inputs())
    remat = jax.eval_shape(_remat_unet(policy).init, jax.random.key(0), *_remat_inputs())
    assert jax.tree.structure(remat) == jax.tree.structure(plain)
    is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    assert jax.tree.leaves(remat, is_leaf=is_box) == jax.tree.leaves(plain, is_leaf=is_box)  # shapes, dtypes, axes


@pytest.fixture(scope="module")
def remat_reference():
    """Params of the plain U-Net and its (v, grads) on `_remat_inputs()` (grads of mean(v**2))."""
    model = _remat_unet("none")
    # An RBG key: threefry's XLA:CPU compile would take longer than the rest of these tests.
    params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *_remat_inputs())
    return params, _remat_value_and_grad(model)(params)


def _remat_value_and_grad(model: UNet1D):
    def loss(params):
        v = model.apply(params, *_remat_inputs())
        return jnp.mean(jnp.square(v)), v

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("policy", ["full", "dots_with_no_batch_dims_saveable"])
@pytest.mark.slow
def test_remat_gives_the_same_outputs_and_gradients(remat_reference, policy):
    """Every ResNet and transformer block is a `checkpoint` in the traced forward, and
    recomputation changes nothing: v and the gradients equal the plain model's (tolerance
    1e-6 + 1e-5 relative; measured: v bit-identical, gradients within 1.5e-8, max |g| 0.22)."""
    params, ((_, v_plain), g_plain) = remat_reference
    model = _remat_unet(policy)
    remat_name = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).eqns[0].primitive.name  # "remat2" in jax 0.10
    jaxpr = str(jax.make_jaxpr(model.apply)(params, *_remat_inputs()))  # the text includes nested jaxprs
    assert len(re.findall(rf"\b{remat_name}\[", jaxpr)) == REMAT_BLOCKS
    (_, v), grads = _remat_value_and_grad(model)(params)
    np.testing.assert_allclose(v, v_plain, rtol=1e-6, atol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(g_plain)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
