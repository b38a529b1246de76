"""Parity of the Oobleck VAE and the SAO timing conditioners with stable-audio-tools.

The fixtures were written by tests/reference/make_sao_vae_reference.py with the PyTorch
reference (stable-audio-tools 0.0.19, torch 2.13 CPU): a small SAO-architecture VAE
(channels 8, c_mults [1, 2, 4], strides [2, 4, 8], latent 8) and two NumberConditioners
(width 16), all with randomised weights, stored under the reference key names. Here they
go through the converters in `stable_audio_jax.convert` and the JAX modules must reproduce
the reference outputs.

Tolerance (float32 on both sides): max |jax - torch| <= 1e-4 * max(1, max |torch|).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from stable_audio_jax.convert.sao_conditioners import timing_params_from_state_dict
from stable_audio_jax.convert.sao_vae import autoencoder_params_from_state_dict, load_autoencoder_checkpoint
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, load_state_dict
from stable_audio_jax.models.autoencoder import AudioAutoencoder, AutoencoderConfig
from stable_audio_jax.models.conditioning import TimingConditioner
from tests.parity import assert_parity

pytestmark = pytest.mark.parity

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VAE_STATE = os.path.join(FIXTURES, "sao_vae_state.safetensors")
TIMING_STATE = os.path.join(FIXTURES, "sao_timing_state.safetensors")

# The reference script's VAE: SAT c_mults [1, 2, 4] are ours with the implicit leading 1.
CONFIG = AutoencoderConfig(
    io_channels=2,
    latent_dim=8,
    strides=(2, 4, 8),
    encoder_channels=8,
    encoder_multipliers=(1, 1, 2, 4),
    decoder_channels=8,
    decoder_multipliers=(1, 1, 2, 4),
)
TIMING_FEATURES = 16


def channels_last(x: np.ndarray) -> np.ndarray:
    """PyTorch `[batch, channels, time]` -> ours `[batch, time, channels]`, float32."""
    return np.transpose(np.asarray(x, np.float32), (0, 2, 1))


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIXTURES, "sao_vae_reference.npz"))


@pytest.fixture(scope="module")
def vae_params():
    reader = StateDictReader(load_state_dict(VAE_STATE), source=VAE_STATE)
    params = autoencoder_params_from_state_dict(reader, CONFIG)
    reader.finish()  # every reference tensor found a place
    return params


@jax.jit
def _encode(params, audio):
    """(pre-bottleneck output, deterministic latents, KL) of audio `[batch, T, 2]`."""

    def run(module, x):
        latents, kl = module.encode(x, None)
        return module.encoder(x), latents, kl

    return AudioAutoencoder(CONFIG).apply({"params": params}, audio, method=run)


@jax.jit
def _decode(params, latents):
    return AudioAutoencoder(CONFIG).apply({"params": params}, latents, method="decode")


def test_encoder_output_mean_and_kl(vae_params, reference):
    pre_bottleneck, latents, kl = _encode(vae_params, channels_last(reference["audio"]))
    assert_parity(pre_bottleneck, channels_last(reference["encoder_out"]), "encoder pre-bottleneck output")
    assert_parity(latents, channels_last(reference["mean"]), "bottleneck mean (encode with rng=None)")
    assert_parity(kl, reference["kl"], "bottleneck KL")


def test_decoder_output(vae_params, reference):
    decoded = _decode(vae_params, channels_last(reference["latents"]))
    assert_parity(decoded, channels_last(reference["decoded"]), "decoder output")


def test_converted_params_keep_weight_norm(vae_params):
    """(g, v) stay separate, in our layouts: conv g per output, transposed-conv g per input channel."""
    enc_conv = vae_params["encoder"]["WNConv_0"]
    assert enc_conv["weight_v"].shape == (7, 2, 8) and enc_conv["weight_g"].shape == (8,)
    up = vae_params["decoder"]["DecoderBlock_0"]["WNConvTranspose1d_0"]  # 32 -> 16 channels, stride 8
    assert up["weight_v"].shape == (16, 32, 16) and up["weight_g"].shape == (32,)
    assert "bias" not in vae_params["decoder"]["WNConv_1"]  # the reference's last conv has no bias


def test_timing_conditioners():
    ref = np.load(os.path.join(FIXTURES, "sao_timing_reference.npz"))
    reader = StateDictReader(load_state_dict(TIMING_STATE), source=TIMING_STATE)
    params = timing_params_from_state_dict(reader)
    reader.finish()
    tokens, global_cond = TimingConditioner(TIMING_FEATURES, kind="number").apply(
        {"params": params}, ref["seconds_start"], ref["seconds_total"]
    )
    # The inputs include values below 0 and above 512, so the clamp is covered.
    assert_parity(tokens[:, 0], ref["start_embeds"], "seconds_start embedding")
    assert_parity(tokens[:, 1], ref["total_embeds"], "seconds_total embedding")
    np.testing.assert_array_equal(global_cond, np.concatenate([tokens[:, 0], tokens[:, 1]], -1))


# ----------------------------------------------------------------------------- errors


def _convert(tensors: dict) -> None:
    reader = StateDictReader(tensors, source="ckpt")
    autoencoder_params_from_state_dict(reader, CONFIG)
    reader.finish()


def test_missing_key_is_named():
    tensors = dict(load_state_dict(VAE_STATE))
    del tensors["decoder.layers.2.layers.1.weight_g"]
    with pytest.raises(ConversionError, match=r"missing key 'decoder\.layers\.2\.layers\.1\.weight_g'"):
        _convert(tensors)


def test_unexpected_key_is_named():
    tensors = dict(load_state_dict(VAE_STATE))
    tensors["encoder.layers.9.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ConversionError, match=r"unexpected key.*'encoder\.layers\.9\.weight'"):
        _convert(tensors)


def test_wrong_shape_is_named():
    tensors = dict(load_state_dict(VAE_STATE))
    key = "encoder.layers.2.layers.4.weight_v"  # strided conv 8 -> 16 channels, k = 8
    tensors[key] = np.zeros((16, 8, 7), np.float32)
    with pytest.raises(ConversionError, match=rf"'{key}' has shape \(16, 8, 7\), the model needs \(16, 8, 8\)"):
        _convert(tensors)


def test_timing_missing_key_is_named():
    tensors = dict(load_state_dict(TIMING_STATE))
    key = "conditioner.conditioners.seconds_total.embedder.embedding.0.weights"
    del tensors[key]
    with pytest.raises(ConversionError, match=rf"missing key '{key}'"):
        timing_params_from_state_dict(StateDictReader(tensors))


def test_diffusion_checkpoint_layout(tmp_path, vae_params):
    """Under `pretransform.model.` next to other model parts, the VAE converts the same."""
    tensors = {f"pretransform.model.{k}": v for k, v in load_state_dict(VAE_STATE).items()}
    tensors["model.model.preprocess_conv.weight"] = np.zeros((8, 8, 1), np.float32)  # not the VAE's
    save_file(tensors, str(tmp_path / "model.safetensors"))
    params = load_autoencoder_checkpoint(tmp_path / "model.safetensors", CONFIG)
    jax.tree.map(np.testing.assert_array_equal, params, vae_params)
