"""The shared state-dict reader of `convert/`: loading without PyTorch, strict key checks."""

import os
import pickle
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from stable_audio_jax.convert import state_dict as sd

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parity
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
    reader = sd.StateDictReader(
        {"m.a": np.zeros((2, 3)), "m.b": np.zeros(4), "m.beta": np.ones(4), "other": np.zeros(1)}, source="ckpt"
    )
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


# ----------------------------------------------------------------------------- crafted checkpoints
# The pickle is written opcode by opcode, in the layout torch.save uses (protocol 2; see the
# fixture's data.pkl), so a test can put any offset, size, stride or storage into it.


def _pickle_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _pickle_int(value: int) -> bytes:
    return b"I%d\n" % value


def _pickle_tuple(values) -> bytes:
    return b"(" + b"".join(_pickle_int(v) for v in values) + b"t"


def _tensor_pickle(storage_type: str, key: str, numel: int, offset: int, size, stride) -> bytes:
    """`_rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, {})`."""
    persistent = (
        b"("
        + _pickle_str("storage")
        + b"ctorch\n"
        + storage_type.encode()
        + b"\n"
        + _pickle_str(key)
        + _pickle_str("cpu")
        + _pickle_int(numel)
        + b"tQ"
    )
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + persistent
        + _pickle_int(offset)
        + _pickle_tuple(size)
        + _pickle_tuple(stride)
        + b"\x89}tR"
    )


def _write_checkpoint(path, tensor: bytes, storages: dict) -> None:
    pkl = b"\x80\x02}(" + _pickle_str("w") + tensor + b"u."
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)


STORAGE = np.arange(12, dtype=np.float32)  # the storage every crafted file shares
STORAGE_BYTES = STORAGE.tobytes()


def _crafted(
    tmp_path, *, storage_type="FloatStorage", numel=12, offset=0, size=(3, 4), stride=(4, 1), raw=STORAGE_BYTES
):
    path = tmp_path / "crafted.ckpt"
    _write_checkpoint(path, _tensor_pickle(storage_type, "0", numel, offset, size, stride), {"0": raw})
    return path


def test_hand_built_checkpoint_reads_in_bounds_views(tmp_path):
    cases = {  # (offset, size, stride) -> the same view taken by NumPy
        (0, (3, 4), (4, 1)): STORAGE.reshape(3, 4),
        (0, (4, 3), (1, 4)): STORAGE.reshape(3, 4).T,
        (5, (7,), (1,)): STORAGE[5:],  # ends exactly on the last element
        (11, (), ()): STORAGE[11],
        (1, (2, 1, 3), (6, 10**12, 2)): STORAGE[1::2].reshape(2, 1, 3),  # size-1 axis: any stride
        (2, (3, 2), (0, 1)): np.broadcast_to(STORAGE[2:4], (3, 2)),  # stride 0, within the storage
        (12, (0, 5), (5, 1)): np.zeros((0, 5), np.float32),  # empty, offset at the end
    }
    for (offset, size, stride), want in cases.items():
        got = sd.load_state_dict(_crafted(tmp_path, offset=offset, size=size, stride=stride))["w"]
        assert got.shape == want.shape and got.dtype == np.float32, (offset, size, stride)
        np.testing.assert_array_equal(got, want, err_msg=str((offset, size, stride)))
        assert got.flags.writeable  # a copy, not a view of the file's read-only buffer


@pytest.mark.parametrize(
    "crafted, message",
    [
        (dict(offset=12), r"reach element 23, past the storage's 12 elements"),
        (dict(offset=9, size=(4,), stride=(1,)), r"reach element 12, past the storage's 12 elements"),
        (dict(size=(2**40, 2**40), stride=(2**40, 1)), r"past the storage's 12 elements"),
        (dict(size=(3, 4), stride=(5, 1)), r"reach element 13"),
        (dict(size=(10**6,), stride=(0,)), r"1000000 elements are more than the storage's 12"),
        (dict(offset=-1, size=(2,), stride=(1,)), r"storage offset -1 is negative"),
        (dict(offset=11, size=(2,), stride=(-1,)), r"stride \(-1,\) has a negative entry"),
        (dict(size=(-1, 4), stride=(4, 1)), r"size \(-1, 4\) has a negative entry"),
        (dict(offset=13, size=(0,), stride=(1,)), r"offset 13 is past the storage's 12 elements"),
        (dict(size=(3, 4), stride=(4,)), r"different lengths"),
        (dict(size=(1,) * 65, stride=(1,) * 65), r"65 dimensions"),
        (dict(storage_type="ComplexFloatStorage"), r"storage '0' has the unsupported type torch.ComplexFloatStorage"),
        (dict(raw=STORAGE.tobytes()[:-4]), r"storage '0' holds 11 elements, the pickle says 12"),
        (dict(raw=STORAGE.tobytes()[:-1]), r"storage '0': 47 bytes is not a whole number of 4-byte FloatStorage"),
        (dict(numel=10**12), r"storage '0' holds 12 elements, the pickle says 1000000000000"),
    ],
)
def test_crafted_views_are_refused_in_one_line(tmp_path, crafted, message):
    with pytest.raises(sd.ConversionError, match=message) as info:
        sd.load_state_dict(_crafted(tmp_path, **crafted))
    text = str(info.value)
    assert "\n" not in text and "crafted.ckpt" in text
    if "stride" in text or "offset" in text or "elements are" in text:
        assert "tensor 'w' (storage '0')" in text


def test_broken_archives_are_refused_in_one_line(tmp_path):
    path = tmp_path / "missing.ckpt"
    _write_checkpoint(path, _tensor_pickle("FloatStorage", "7", 12, 0, (12,), (1,)), {"0": STORAGE.tobytes()})
    with pytest.raises(sd.ConversionError, match=r"storage '7' is missing from the archive"):
        sd.load_state_dict(path)
    truncated = tmp_path / "truncated.ckpt"
    good = _tensor_pickle("FloatStorage", "0", 12, 0, (12,), (1,))
    _write_checkpoint(truncated, good[:-5], {"0": STORAGE.tobytes()})
    with pytest.raises(sd.ConversionError, match=r"cannot read .*truncated.ckpt") as info:
        sd.load_state_dict(truncated)
    assert "\n" not in str(info.value)
    # The storage is not a storage: a tensor whose first argument is a plain int.
    bogus = tmp_path / "bogus.ckpt"
    _write_checkpoint(
        bogus,
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + _pickle_int(0) * 2
        + _pickle_tuple((1,))
        + _pickle_tuple((1,))
        + b"\x89}tR",
        {},
    )
    with pytest.raises(sd.ConversionError, match=r"tensor 'w' is not a valid view.*not a storage record"):
        sd.load_state_dict(bogus)


def test_crafted_file_cannot_crash_the_process(tmp_path):
    """The out-of-bounds views run in a child process: a segfault there fails the test
    instead of killing pytest, and each must end in a ConversionError."""
    import subprocess
    import sys

    paths = []
    for i, crafted in enumerate([dict(offset=10**9), dict(size=(2**30,), stride=(2**30,)), dict(offset=2**62)]):
        sub = tmp_path / str(i)
        sub.mkdir()
        paths.append(str(_crafted(sub, **crafted)))
    code = (
        "import sys\nfrom stable_audio_jax.convert import state_dict as sd\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        sd.load_state_dict(p)\n    except sd.ConversionError:\n        print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *paths],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused"] * 3
