"""The VAE modules: parameter counts, shapes at full size, numerics of the layers."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax import config_lib
from stable_audio_jax.models.autoencoder import AudioAutoencoder, AutoencoderConfig, vae_bottleneck
from stable_audio_jax.models.layers import Snake, WNConv, WNConvTranspose1d


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _abstract_params(config: AutoencoderConfig, length: int):
    model = AudioAutoencoder(config)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, length, 2))))
    return nn.meta.unbox(variables)["params"]


@pytest.mark.parametrize(
    "name, total, encoder, decoder",
    [
        ("SAO", 156_112_514, 77_989_888, 78_122_626),
        ("SA1", 133_431_300, 89_574_656, 43_856_644),
    ],
)
def test_full_size_parameter_counts(name, total, encoder, decoder):
    shape = config_lib.SAO_AUTOENCODER if name == "SAO" else config_lib.SA1_AUTOENCODER
    config = AutoencoderConfig.from_dict(shape)
    params = _abstract_params(config, config.downsampling_ratio)  # eval_shape: nothing materialised
    assert _count(params["encoder"]) == encoder
    assert _count(params["decoder"]) == decoder
    assert _count(params) == total


@pytest.mark.parametrize("shape, ratio", [(config_lib.SAO_AUTOENCODER, 2048), (config_lib.SA1_AUTOENCODER, 1024)])
@pytest.mark.slow
def test_full_size_encode_decode_shapes(shape, ratio):
    config = AutoencoderConfig.from_dict(shape)
    assert config.downsampling_ratio == ratio
    model = AudioAutoencoder(config)
    batch, length = 2, 3 * ratio
    audio = jax.ShapeDtypeStruct((batch, length, 2), jnp.float32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, ratio, 2))))
    latents, kl = jax.eval_shape(lambda p, x: model.apply(p, x, method="encode"), params, audio)
    assert latents.shape == (batch, length // ratio, 64) and kl.shape == ()
    decoded = jax.eval_shape(lambda p, z: model.apply(p, z, method="decode"), params, latents)
    assert decoded.shape == (batch, length, 2)


@pytest.mark.slow
def test_tiny_roundtrip_shapes_and_length_check():
    config = AutoencoderConfig(
        latent_dim=4,
        strides=(2, 4),
        encoder_channels=4,
        encoder_multipliers=(1, 2, 4),
        decoder_channels=4,
        decoder_multipliers=(1, 2, 4),
    )
    model = AudioAutoencoder(config)
    audio = jax.random.normal(jax.random.key(1), (3, 64, 2))
    params = model.init(jax.random.key(0), audio)
    recon, latents, kl = model.apply(params, audio, jax.random.key(2))
    assert recon.shape == audio.shape and latents.shape == (3, 8, 4)
    assert np.isfinite(float(kl))
    with pytest.raises(ValueError, match="multiple of the downsampling ratio"):
        model.apply(params, audio[:, :60], method="encode")


def test_config_rejects_unknown_keys_and_bad_multipliers():
    with pytest.raises(ValueError, match="unknown autoencoder config keys"):
        AutoencoderConfig.from_dict(dict(config_lib.SAO_AUTOENCODER, chanels=3))
    with pytest.raises(ValueError, match="len\\(strides\\) \\+ 1"):
        AutoencoderConfig(strides=(2, 4), encoder_multipliers=(1, 2))


def _torch_conv_transpose1d(x, weight, bias, stride, padding):
    """PyTorch ConvTranspose1d by definition (scatter-add), channels last.

    x [batch, L, in], weight [in, out, k] (PyTorch layout) -> [batch, (L-1)*stride - 2*padding + k, out].
    """
    batch, length, _ = x.shape
    _, out_ch, k = weight.shape
    full = np.zeros((batch, (length - 1) * stride + k, out_ch))
    for t in range(length):
        full[:, t * stride : t * stride + k, :] += np.einsum("bi,iok->bko", x[:, t, :], weight)
    return full[:, padding : full.shape[1] - padding, :] + bias


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_transposed_conv_matches_definition_and_length(stride):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    layer = WNConvTranspose1d(features=4, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2))
    params = nn.meta.unbox(layer.init(jax.random.key(0), x))
    # Random g so weight normalisation is really exercised.
    params["params"]["weight_g"] = jnp.asarray(rng.uniform(0.5, 2.0, size=3), jnp.float32)
    y = np.asarray(layer.apply(params, x))
    assert y.shape == (2, 5 * stride, 4)  # exactly L * stride

    v, g = np.asarray(params["params"]["weight_v"]), np.asarray(params["params"]["weight_g"])
    torch_v = v.transpose(1, 2, 0)  # [in, out, k]
    weight = g[:, None, None] * torch_v / np.linalg.norm(torch_v.reshape(3, -1), axis=1)[:, None, None]
    expected = _torch_conv_transpose1d(x, weight, np.asarray(params["params"]["bias"]), stride, math.ceil(stride / 2))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_weight_norm_conv_starts_at_v_and_strided_length():
    x = jax.random.normal(jax.random.key(0), (2, 32, 3))
    layer = WNConv(5, (8,), strides=(4,), padding=(2,))
    params = nn.meta.unbox(layer.init(jax.random.key(1), x))["params"]
    np.testing.assert_allclose(
        params["weight_g"], np.linalg.norm(np.asarray(params["weight_v"]).reshape(-1, 5), axis=0), rtol=1e-6
    )
    unnormed = WNConv(5, (8,), strides=(4,), padding=(2,), weight_norm=False)
    y = layer.apply({"params": params}, x)
    y_plain = unnormed.apply({"params": {"kernel": params["weight_v"], "bias": params["bias"]}}, x)
    assert y.shape == (2, 8, 5)  # T / stride
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta, log_scale", [(True, True), (False, False)])
def test_snake_formula_and_identity_at_zero(beta, log_scale):
    layer = Snake(beta=beta, log_scale=log_scale)
    x = jnp.linspace(-3, 3, 24).reshape(2, 4, 3)
    params = nn.meta.unbox(layer.init(jax.random.key(0), x))
    assert np.all(np.asarray(layer.apply(params, jnp.zeros((1, 2, 3)))) == 0.0)
    a = np.array([0.3, -0.2, 0.5], np.float32)
    b = np.array([-0.1, 0.4, 0.0], np.float32)
    params["params"]["alpha"] = jnp.asarray(a if log_scale else np.exp(a))
    if beta:
        params["params"]["beta"] = jnp.asarray(b)
    y = np.asarray(layer.apply(params, x))
    alpha = np.exp(a)
    scale = np.exp(b) if beta else alpha
    expected = np.asarray(x) + 1.0 / (scale + 1e-9) * np.sin(alpha * np.asarray(x)) ** 2
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_vae_bottleneck_kl_and_sampling():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mean, scale = h[..., :4], h[..., 4:]
    std = np.log1p(np.exp(scale)) + 1e-4
    expected_kl = np.mean(np.sum(mean**2 + std**2 - np.log(std**2) - 1, axis=-1))  # no 1/2
    z, kl = vae_bottleneck(jnp.asarray(h), None)
    np.testing.assert_allclose(z, mean, rtol=1e-6)
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-5)
    # Sampling: z - mean over many draws has the bottleneck's std.
    big = jnp.asarray(np.tile(h, (400, 1, 1)))
    z, _ = vae_bottleneck(big, jax.random.key(0))
    measured = np.std(np.asarray(z).reshape(400, 2, 5, 4) - mean, axis=0)
    np.testing.assert_allclose(measured, std, rtol=0.15)
