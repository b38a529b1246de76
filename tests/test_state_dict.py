"""The shared state-dict reader of `convert/`: loading without PyTorch, strict key checks."""

import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest
from safetensors.numpy import save_file

from stable_audio_jax.convert import state_dict as sd

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_torch_zip_checkpoint_loads_without_torch():
    tensors = sd.load_state_dict(os.path.join(FIXTURES, "state_dict_lightning.ckpt"))
    expected = np.load(os.path.join(FIXTURES, "state_dict_expected.npz"))
    assert sorted(tensors) == sorted(k.replace("__", ".") for k in expected.files)
    for key in expected.files:
        got = tensors[key.replace("__", ".")]
        want = expected[key]
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(np.asarray(got, want.dtype), want, err_msg=key)
    assert tensors["layer.bias"].dtype == np.float16
    assert tensors["steps"].dtype == np.int64
    assert str(tensors["bf16"].dtype) == "bfloat16"


def test_pickled_code_is_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {"x": Boom()}}, protocol=2))
    tensors = sd.load_state_dict(path)
    assert tensors == {}  # the payload became an inert placeholder, not a tensor
    assert not (tmp_path / "pwned").exists()


def test_safetensors_and_bad_files(tmp_path):
    save_file({"a.weight": np.ones((2, 3), np.float32)}, str(tmp_path / "m.safetensors"))
    assert sd.load_state_dict(tmp_path / "m.safetensors")["a.weight"].shape == (2, 3)
    with pytest.raises(FileNotFoundError, match="not found"):
        sd.load_state_dict(tmp_path / "missing.safetensors")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(sd.ConversionError, match="neither"):
        sd.load_state_dict(tmp_path / "junk.ckpt")


def test_reader_is_strict_and_names_keys():
    reader = sd.StateDictReader({"m.a": np.zeros((2, 3)), "m.b": np.zeros(4), "m.beta": np.ones(4),
                                 "other": np.zeros(1)}, source="ckpt")
    m = reader.scoped("m.")
    assert m.keys() == ["a", "b", "beta"]
    assert m.take("a", (2, 3)).shape == (2, 3)
    with pytest.raises(sd.ConversionError, match=r"missing key 'm.c'"):
        m.take("c")
    with pytest.raises(sd.ConversionError, match=r"'m.b' has shape \(4,\), the model needs \(5,\)"):
        m.take("b", (5,))
    with pytest.raises(sd.ConversionError, match=r"'m.beta' must be all zeros"):
        m.skip("beta", must_be_zero=True)
    with pytest.raises(sd.ConversionError, match=r"3 unexpected key\(s\).*'m.b', 'm.beta', 'other'"):
        reader.finish()
    m.take("b")
    m.skip("beta")
    m.finish()  # everything under "m." is used; "other" is outside this scope
    with pytest.raises(sd.ConversionError, match="'other'"):
        reader.finish()


def test_layout_helpers_match_the_torch_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    w = rng.normal(size=(3, 7)).astype(np.float32)  # torch Linear [out, in]
    np.testing.assert_allclose(x @ sd.linear_kernel(w), x @ w.T, rtol=1e-6)
    conv = rng.normal(size=(4, 2, 3)).astype(np.float32)  # torch Conv1d [out, in, k]
    assert sd.conv1d_kernel(conv).shape == (3, 2, 4)
    assert sd.conv1d_kernel(conv)[1, 0, 2] == conv[2, 0, 1]
    g = rng.normal(size=(4, 1, 1)).astype(np.float32)
    folded = sd.fold_weight_norm(g, conv)
    np.testing.assert_allclose(np.linalg.norm(folded.reshape(4, -1), axis=1), np.abs(g.ravel()), rtol=1e-5)


def test_check_tree_reports_missing_extra_and_shapes():
    abstract = jax.eval_shape(nn.Dense(3).init, jax.random.PRNGKey(0), jnp.zeros((1, 2)))["params"]
    sd.check_tree({"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}, abstract, "dense")
    with pytest.raises(sd.ConversionError, match=r"missing \['bias'\]"):
        sd.check_tree({"kernel": np.zeros((2, 3))}, abstract, "dense")
    with pytest.raises(sd.ConversionError, match=r"unexpected \['scale'\].*kernel is \(3, 2\)"):
        sd.check_tree({"kernel": np.zeros((3, 2)), "bias": np.zeros(3), "scale": np.zeros(1)}, abstract, "dense")
