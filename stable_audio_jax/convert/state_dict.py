"""Reading PyTorch state dicts without PyTorch, strictly.

Every importer in `convert/` (SAO DiT, Oobleck VAE, timing conditioners, T5, BERT) reads
a flat `{name: array}` mapping and builds a Flax param tree from it. This module holds
what they share:

- `load_state_dict(path)`: `.safetensors` directly; `.ckpt` / `.bin` / `.pt` (PyTorch's
  zip format) with a restricted unpickler that rebuilds tensors from their storages and
  never imports or calls anything else, so a checkpoint cannot execute code on load.
  A Lightning `{"state_dict": ...}` wrapper is unwrapped.
- `StateDictReader`: hands out tensors by name and remembers which were used, so a
  missing key, a shape mismatch or a tensor that maps nowhere is an error naming it.
- Layout helpers for the PyTorch -> linen conventions (Linear and Conv1d weights
  transposed, weight norm folded, attention heads split) and `check_tree`,
  which compares a converted tree with the module's `jax.eval_shape` tree.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np


class ConversionError(ValueError):
    """A checkpoint that does not fit the model: the message names the offending keys."""


# ----------------------------------------------------------------------------- loading

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for `torch.<X>Storage` in a pickle: only its element dtype matters."""

    def __init__(self, dtype: Any):
        self.dtype = np.dtype(dtype)


class _Opaque:
    """Any other object in a checkpoint (Lightning callbacks, hyper-parameters, ...).

    It is never imported; it accepts whatever the pickle passes so the tensors around it
    can still be read.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> "_Opaque":
        return _Opaque(*args)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *unused: Any) -> np.ndarray:
    """A tensor view (`torch._utils._rebuild_tensor_v2`) copied out of its storage."""
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *unused: Any) -> np.ndarray:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a tensor checkpoint needs; everything else is `_Opaque`."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles
            return lambda text, encoding="latin1": text.encode(encoding)
        return _Opaque

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}/data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"), count=numel)
        return self._storages[key]


def _load_torch_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ConversionError(f"{path} is not a PyTorch zip checkpoint (no single data.pkl inside); "
                                  "legacy (pre-1.6) torch.save files are not supported")
        root = pickles[0][: -len("/data.pkl")]
        byteorder = f"{root}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ConversionError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as f:
            return _RestrictedUnpickler(f, archive, root).load()


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(tree, np.ndarray):
        yield prefix[:-1], tree
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}{k}.")


class _LazySafetensors(Mapping):
    """The tensors of a `.safetensors` file, each read from disk when asked for.

    A converter takes every tensor once and keeps only its converted copy, so peak memory
    is about one model instead of two (SAO: 4.9 GB of float32 weights).
    """

    def __init__(self, path: str):
        from safetensors import safe_open

        self._file = safe_open(path, framework="numpy")
        self._keys = tuple(self._file.keys())

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


def load_state_dict(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    """All tensors of a checkpoint file, by their PyTorch names.

    `.safetensors` is read lazily (each tensor when it is looked up); a `torch.save` zip
    (`.ckpt`, `.bin`, `.pt`, `.pth`) is read without executing its pickle. A Lightning
    checkpoint's `state_dict` entry is returned; nested dicts of tensors are flattened
    with dotted names.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            return _LazySafetensors(path)
        except Exception as e:  # noqa: BLE001 - one clear line for any corrupt/truncated file
            raise ConversionError(f"cannot read {path}: {e}") from e
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path} is neither .safetensors nor a PyTorch zip checkpoint")
    obj = _load_torch_zip(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return dict(_flatten(obj))


# ----------------------------------------------------------------------------- reading

class StateDictReader:
    """Strict access to a state dict: every tensor must be taken or skipped exactly once.

        reader = StateDictReader(load_state_dict(path), source=path)
        dit = reader.scoped("model.model.")
        kernel = linear_kernel(dit.take("project_in.weight", (1536, 64)))
        ...
        reader.finish()   # ConversionError listing any tensor nothing asked for

    Scoped readers share the record of used keys with their parent.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str = "checkpoint", *,
                 _prefix: str = "", _used: set[str] | None = None):
        self._tensors = tensors
        self.source = source
        self.prefix = _prefix
        self._used = set() if _used is None else _used

    def scoped(self, prefix: str) -> "StateDictReader":
        return StateDictReader(self._tensors, self.source, _prefix=self.prefix + prefix, _used=self._used)

    def has(self, key: str) -> bool:
        return self.prefix + key in self._tensors

    def keys(self) -> list[str]:
        """The names under this reader's prefix (without it)."""
        n = len(self.prefix)
        return sorted(k[n:] for k in self._tensors if k.startswith(self.prefix))

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor `prefix + key`, checked against `shape`, as a NumPy array."""
        name = self.prefix + key
        if name not in self._tensors:
            raise ConversionError(f"{self.source}: missing key {name!r}")
        value = np.asarray(self._tensors[name])
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(f"{self.source}: {name!r} has shape {tuple(value.shape)}, "
                                  f"the model needs {tuple(shape)}")
        self._used.add(name)
        return value

    def skip(self, key: str, *, must_be_zero: bool = False, required: bool = False) -> None:
        """Mark a tensor the model does not need (a buffer) as consumed.

        `must_be_zero`: it must be all zeros (e.g. the SAO LayerNorm `beta` buffer): the
        model has no parameter for it, so anything else would change the numbers.
        """
        name = self.prefix + key
        if name not in self._tensors:
            if required:
                raise ConversionError(f"{self.source}: missing key {name!r}")
            return
        if must_be_zero and np.any(np.asarray(self._tensors[name]) != 0):
            raise ConversionError(f"{self.source}: {name!r} must be all zeros (the model has no parameter for it)")
        self._used.add(name)

    def skip_prefix(self, prefix: str) -> int:
        """Consume every tensor under `prefix` (e.g. a T5 decoder); returns how many."""
        names = [k for k in self._tensors if k.startswith(self.prefix + prefix)]
        self._used.update(names)
        return len(names)

    def finish(self) -> None:
        """Raise unless every tensor under this reader's prefix was taken or skipped."""
        unused = sorted(k for k in self._tensors if k.startswith(self.prefix) and k not in self._used)
        if unused:
            shown = ", ".join(repr(k) for k in unused[:10])
            more = f" and {len(unused) - 10} more" if len(unused) > 10 else ""
            raise ConversionError(f"{self.source}: {len(unused)} unexpected key(s) the model has no place for: "
                                  f"{shown}{more}")


# ----------------------------------------------------------------------------- layouts

def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """`nn.Linear.weight` `[out, in]` -> `nn.Dense` kernel `[in, out]`."""
    return np.ascontiguousarray(np.asarray(weight).T)


def head_kernel(weight: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """An attention projection's `nn.Linear.weight` `[heads * head_dim, in]` -> kernel
    `[in, heads, head_dim]` (heads are contiguous `(h d)` blocks of the output dim)."""
    return linear_kernel(weight).reshape(weight.shape[1], heads, head_dim)


def dense_params(reader: "StateDictReader", key: str, fan_in: int, fan_out: int, bias: bool = True) -> dict:
    """`{kernel [in, out][, bias [out]]}` of the `nn.Linear` `key`, shapes checked."""
    out = {"kernel": linear_kernel(reader.take(f"{key}.weight", (fan_out, fan_in)))}
    if bias:
        out["bias"] = reader.take(f"{key}.bias", (fan_out,))
    return out


def conv1d_kernel(weight: np.ndarray) -> np.ndarray:
    """`nn.Conv1d.weight` `[out, in, k]` -> `nn.Conv` kernel `[k, in, out]` (channels last)."""
    return np.ascontiguousarray(np.transpose(weight, (2, 1, 0)))


def fold_weight_norm(g: np.ndarray, v: np.ndarray, axis: int = 0) -> np.ndarray:
    """`torch.nn.utils.weight_norm`'s effective weight `g * v / ||v||`, the norm taken over
    every axis but `axis` (0 for Conv1d = output channels, also 0 for ConvTranspose1d,
    where that is the *input* channels)."""
    v = np.asarray(v, np.float64)
    other = tuple(a for a in range(v.ndim) if a != axis % v.ndim)
    norm = np.sqrt(np.sum(v * v, axis=other, keepdims=True))
    return (np.asarray(g, np.float64) * v / norm).astype(np.float32)


def _paths(tree: Any) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf for path, leaf in flat}


def check_tree(params: Any, abstract_params: Any, what: str) -> None:
    """Raise `ConversionError` unless `params` has exactly the leaves and shapes of
    `abstract_params` (e.g. `jax.eval_shape(module.init, ...)["params"]`, logical
    partitioning boxes allowed)."""
    abstract_params = _unbox(abstract_params)
    got, want = _paths(params), _paths(abstract_params)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(got) & set(want) if tuple(np.shape(got[k])) != tuple(want[k].shape))
    problems = []
    if missing:
        problems.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if extra:
        problems.append(f"unexpected {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    for k in wrong[:8]:
        problems.append(f"{k} is {tuple(np.shape(got[k]))}, the model needs {tuple(want[k].shape)}")
    if problems:
        raise ConversionError(f"converted {what} params do not fit the model: " + "; ".join(problems))


def _unbox(tree: Any) -> Any:
    """Strip flax `Partitioned` boxes so paths end at the arrays."""
    import flax.linen as nn
    return nn.meta.unbox(tree)
