"""Tests of the T5 encoder, its HF import, tokenizer and inference wrapper.

The golden numbers in `fixtures/t5_reference.npz` and the checkpoint folders
`fixtures/t5_{relu,gated,spiece}` come from Hugging Face transformers
(`tests/reference/make_t5_reference.py` regenerates them): small random T5 encoders, one
`"relu"` (original T5) saved as safetensors, one `"gated-gelu"` (T5 v1.1) as a whole
encoder-decoder `pytorch_model.bin`, with a T5-style tokenizer trained offline.
"""

from __future__ import annotations

import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import ConversionError, load_state_dict
from stable_audio_jax.convert.t5_checkpoint import load_t5_checkpoint, load_t5_tokenizer, params_from_state_dict
from stable_audio_jax.inference.t5 import T5TextEncoder
from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer
from stable_audio_jax.models.t5 import T5Config, T5Encoder, expected_num_params, relative_position_bucket
from stable_audio_jax.models.text_encoder import num_params
from tests.parity import assert_parity

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RELU_DIR = os.path.join(FIXTURES, "t5_relu")
GATED_DIR = os.path.join(FIXTURES, "t5_gated")
SPIECE_DIR = os.path.join(FIXTURES, "t5_spiece")
# Parity tolerance: max |JAX - PyTorch| <= RTOL * max(1, max |reference|), float32 on
# XLA:CPU. Measured: 1.4e-6 (relu) and 1.6e-6 (gated-gelu), outputs up to ~3.7.
RTOL = 1e-4
# HF T5EncoderModel(T5Config(t5-base sizes)), counted with
# `make_t5_reference.py --count_t5_base` (transformers 5.23): shared embedding included.
T5_BASE_ENCODER_PARAMS = 109_628_544


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(FIXTURES, "t5_reference.npz"))


def prompts(ref) -> list[str]:
    return [str(p) for p in ref["prompts"]]


# ----------------------------------------------------------------- architecture


def test_t5_base_param_count():
    config = T5Config.t5_base()
    ids = jnp.zeros((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda: T5Encoder(config).init(jax.random.key(0), ids, ids == 0))
    assert num_params(abstract["params"]) == expected_num_params(config) == T5_BASE_ENCODER_PARAMS


def test_shapes_logical_axes_and_padding_invariance():
    config = T5Config.tiny(vocab_size=64)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(3, 64, (2, 6)), jnp.int32)
    mask = jnp.asarray([[1] * 6, [1, 1, 1, 0, 0, 0]], bool)
    model = T5Encoder(config)
    variables = jax.jit(model.init)(jax.random.key(0), ids, mask)
    names = jax.tree.map(lambda p: p.names, variables["params"], is_leaf=lambda p: hasattr(p, "names"))
    assert names["token_embedding"]["embedding"] == ("vocab", "embed")
    assert names["relative_attention_bias"]["embedding"] == (None, "heads")
    assert names["layer_0"]["attention"]["query"]["kernel"] == ("embed", "heads", "kv")
    assert names["layer_1"]["mlp"]["wi"]["kernel"] == ("embed", "mlp")
    assert names["final_norm"]["scale"] == ("embed",)

    apply = jax.jit(model.apply)
    short = apply(variables, ids, mask)
    assert short.shape == (2, 6, 32) and np.isfinite(np.asarray(short)).all()
    # Extra padded keys change nothing at the real positions (the relative bias depends
    # only on distances, and masked keys are excluded).
    long = apply(variables, jnp.pad(ids, ((0, 0), (0, 5))), jnp.pad(mask, ((0, 0), (0, 5))))
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(long)[:, :6][m], np.asarray(short)[m], atol=1e-5)


def bucket_numpy(relative_position: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """The bucket rule written out element by element (float32, as the reference computes it)."""
    half = num_buckets // 2
    exact = half // 2
    out = np.zeros(relative_position.shape, np.int64)
    for idx, r in np.ndenumerate(relative_position):
        d = abs(int(r))
        if d < exact:
            b = d
        else:
            ratio = np.log(np.float32(d) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
            b = min(exact + int(np.float32(ratio) * np.float32(half - exact)), half - 1)
        out[idx] = b + (half if r > 0 else 0)
    return out


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 20)])
@pytest.mark.parity
def test_relative_position_bucket(ref, num_buckets, max_distance):
    relative = ref["relative_positions"]
    ours = np.asarray(relative_position_bucket(jnp.asarray(relative), num_buckets, max_distance))
    np.testing.assert_array_equal(ours, bucket_numpy(relative, num_buckets, max_distance))
    np.testing.assert_array_equal(ours, ref[f"buckets_{num_buckets}_{max_distance}"])  # transformers'
    assert ours.min() == 0 and ours.max() == num_buckets - 1


def test_config_from_hf_and_errors():
    hf = dict(
        model_type="t5",
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_decoder_layers=12,
        num_heads=12,
        relative_attention_num_buckets=32,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="relu",
        architectures=["T5ForConditionalGeneration"],
    )
    assert T5Config.from_hf_config(hf) == T5Config.t5_base()
    assert T5Config.from_dict(T5Config.tiny().to_dict()) == T5Config.tiny()
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5Config.from_hf_config({**hf, "feed_forward_proj": "gated-silu"})
    with pytest.raises(ValueError, match="'d_ff'"):
        T5Config.from_hf_config({k: v for k, v in hf.items() if k != "d_ff"})


# -------------------------------------------------------------------- tokenizer


@pytest.mark.parity
def test_tokenizer_matches_hf(ref):
    """Same ids as transformers' T5TokenizerFast; `</s>` appended, kept on truncation, pad 0."""
    tokenizer = load_t5_tokenizer(RELU_DIR)
    ids, mask = tokenizer(prompts(ref))
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert ids.shape == mask.shape == (5, 128) and ids.dtype == np.int32 and mask.dtype == bool
    lengths = mask.sum(1)
    assert lengths[0] == 1 and ids[0, 0] == 1  # "" -> </s> alone
    assert lengths[3] == 128 and ids[3, -1] == 1  # truncated, </s> kept as token 128
    for row, row_mask, n in zip(ids, mask, lengths):
        assert row[n - 1] == 1 and (row[n:] == 0).all()  # EOS last, then pad id 0
        assert row_mask[:n].all()


@pytest.mark.parity
def test_spiece_tokenizer_matches_hf(ref):
    tokenizer = load_t5_tokenizer(SPIECE_DIR)
    ids, mask = tokenizer(prompts(ref))
    np.testing.assert_array_equal(ids, ref["spiece_input_ids"])
    np.testing.assert_array_equal(mask, ref["spiece_attention_mask"])
    assert tokenizer.tokenizer.token_to_id("<extra_id_0>") == tokenizer.vocab_size - 1


# -------------------------------------------------------------- golden parity


@pytest.mark.parametrize(
    "folder,key,weights",
    [(RELU_DIR, "relu_hidden", "model.safetensors"), (GATED_DIR, "gated_hidden", "pytorch_model.bin")],
)
@pytest.mark.parity
def test_matches_transformers(ref, folder, key, weights):
    assert os.path.isfile(os.path.join(folder, weights))
    config, params, tokenizer = load_t5_checkpoint(folder)
    assert config.feed_forward_proj == ("relu" if key == "relu_hidden" else "gated-gelu")
    ids, mask = tokenizer(prompts(ref))
    hidden = jax.jit(lambda p, i, m: T5Encoder(config).apply({"params": p}, i, m))(params, ids, mask)
    ours = np.asarray(hidden) * mask[..., None]
    assert_parity(ours, ref[key], f"T5 ({config.feed_forward_proj})", rel=RTOL)


# ------------------------------------------------------------ strict import


def test_strict_import_errors():
    config, _, _ = load_t5_checkpoint(GATED_DIR)
    state = load_state_dict(os.path.join(GATED_DIR, "pytorch_model.bin"))
    assert any(k.startswith("decoder.") for k in state) and "lm_head.weight" in state  # ignored
    encoder_only = {k: v for k, v in state.items() if not k.startswith(("decoder.", "lm_head."))}
    del encoder_only["encoder.embed_tokens.weight"]  # the tied copy is optional
    params_from_state_dict(encoder_only, config)

    missing = dict(state)
    del missing["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"]
    with pytest.raises(ConversionError, match=r"encoder\.block\.1\.layer\.1\.DenseReluDense\.wi_1\.weight"):
        params_from_state_dict(missing, config)
    with pytest.raises(ConversionError, match=r"encoder\.block\.7\.layer_norm\.weight"):
        params_from_state_dict({**state, "encoder.block.7.layer_norm.weight": np.ones(32, np.float32)}, config)
    with pytest.raises(ConversionError, match=r"extra\.weight"):  # only decoder.* / lm_head.* are ignored
        params_from_state_dict({**state, "extra.weight": np.ones(3, np.float32)}, config)
    bad = dict(state)
    bad["encoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((32, 31), np.float32)
    with pytest.raises(ConversionError, match=r"SelfAttention\.q\.weight.*\(32, 31\)"):
        params_from_state_dict(bad, config)
    untied = {**state, "encoder.embed_tokens.weight": state["shared.weight"] + 1}
    with pytest.raises(ConversionError, match="differ"):
        params_from_state_dict(untied, config)
    without_embedding = {k: v for k, v in state.items() if k not in ("shared.weight", "encoder.embed_tokens.weight")}
    with pytest.raises(ConversionError, match="shared.weight"):
        params_from_state_dict(without_embedding, config)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T5TextEncoder.from_pretrained(tmp_path / "nope")
    folder = tmp_path / "t5"
    shutil.copytree(RELU_DIR, folder)
    os.remove(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no T5 weights"):
        T5TextEncoder.from_pretrained(folder)
    os.remove(folder / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match="no T5 tokenizer"):
        T5TextEncoder.from_pretrained(folder)
    os.remove(folder / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json"):
        T5TextEncoder.from_pretrained(folder)


def test_tokenizer_must_be_t5_shaped(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "hello": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    TextTokenizer(tok).save(tmp_path)
    with pytest.raises(ValueError, match="not T5-shaped"):
        load_t5_tokenizer(tmp_path)


# ------------------------------------------------------------- inference


@pytest.mark.parity
def test_text_conditioning_wrapper(ref):
    encoder = T5TextEncoder.from_pretrained(RELU_DIR)
    assert encoder.mesh.size == 8
    batch = prompts(ref)[1:4]  # 3 prompts on 8 devices: padded to 8 and cut back
    features, mask = encoder.text_conditioning(batch)
    assert features.shape == (3, 128, 32) and features.dtype == jnp.float32
    assert mask.shape == (3, 128) and mask.dtype == jnp.bool_
    features, mask = np.asarray(features), np.asarray(mask)
    np.testing.assert_array_equal(mask, ref["attention_mask"][1:4])
    assert (features[~mask] == 0).all() and np.abs(features[mask]).min() > 0
    np.testing.assert_allclose(features, ref["relu_hidden"][1:4], atol=RTOL * 4, rtol=0)
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder.text_conditioning("one prompt")

    # Weights split by the logical rules (fsdp over d_model, tensor over heads/mlp/vocab).
    mesh = parallel.create_mesh((2, 2, 2))
    sharded = T5TextEncoder.from_pretrained(RELU_DIR, mesh=mesh)
    kernel = sharded.params["layer_0"]["attention"]["query"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    features_sharded, _ = sharded.text_conditioning(batch)
    np.testing.assert_allclose(np.asarray(features_sharded), features, atol=1e-5, rtol=0)


@pytest.mark.parity
def test_bfloat16_conditioning(ref):
    """Reduced precision runs end to end (measured max error 0.026 (relu) vs the float32 reference;
    float16 is what SAO uses, but XLA:CPU's attention has no float16 dot, so CPU tests bf16)."""
    encoder = T5TextEncoder.from_pretrained(RELU_DIR, dtype=jnp.bfloat16)
    assert jax.tree.leaves(encoder.params)[0].dtype == jnp.bfloat16
    features, mask = encoder.text_conditioning(prompts(ref))
    assert features.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(features), ref["relu_hidden"], atol=0.1, rtol=0)
