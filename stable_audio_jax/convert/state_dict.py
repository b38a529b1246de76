"""Reading PyTorch state dicts without PyTorch, strictly.

Every importer in `convert/` (SAO DiT, Oobleck VAE, timing conditioners, T5, BERT) reads
a flat `{name: array}` mapping and builds a Flax param tree from it. This module holds
what they share:

- `load_state_dict(path)`: `.safetensors` directly; `.ckpt` / `.bin` / `.pt` (PyTorch's
  zip format) with a restricted unpickler that rebuilds tensors from their storages and
  never imports or calls anything else, so a checkpoint cannot execute code on load.
  Every storage is checked against its declared type and length, and every tensor view
  (offset, size, stride) against its storage before anything is copied out of it, so a
  crafted file is refused with one `ConversionError` line instead of reading other memory.
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
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for `torch.<X>Storage` in a pickle: only its element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]) if name in _STORAGE_DTYPES else None


class _Storage:
    """One storage file of a zip checkpoint (`<root>/data/<key>`): its elements, flat."""

    def __init__(self, key: str, data: np.ndarray):
        self.key = key
        self.data = data


class _TensorView:
    """The arguments of `torch._utils._rebuild_tensor_v2` exactly as the pickle gave them.

    Nothing is read from the storage while unpickling; `_materialize` checks the view once
    the tensor's name is known, so a refusal can name it.
    """

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


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


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *unused: Any) -> _TensorView:
    """Stands for `torch._utils._rebuild_tensor_v2` (and `_rebuild_tensor`)."""
    return _TensorView(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *unused: Any) -> Any:
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        return tuple(value)
    return None


_MAX_DIMS = 64  # NumPy's limit


def _view_problem(view: _TensorView) -> str | None:
    """Why `view` cannot be read from its storage without going out of bounds, or None.

    A strided view reads the elements `offset + sum_i k_i stride_i`, `0 <= k_i < size_i`;
    with non-negative strides the largest is `offset + sum_i (size_i - 1) stride_i`, which
    must lie inside the storage. A view with more elements than its storage (a stride-0
    broadcast, which no state dict holds) is refused too: copying it could take any amount
    of memory.
    """
    if not isinstance(view.storage, _Storage):
        return "its storage is not a storage record of this file"
    numel = view.storage.data.shape[0]
    size, stride, offset = _int_tuple(view.size), _int_tuple(view.stride), view.offset
    if size is None or stride is None or not _is_int(offset):
        return f"size {view.size!r}, stride {view.stride!r} and offset {view.offset!r} must be integers"
    if len(size) != len(stride):
        return f"size {size} and stride {stride} have different lengths"
    if len(size) > _MAX_DIMS:
        return f"it has {len(size)} dimensions, more than {_MAX_DIMS}"
    if offset < 0:
        return f"storage offset {offset} is negative"
    if any(n < 0 for n in size):
        return f"size {size} has a negative entry"
    if any(s < 0 for s in stride):
        return f"stride {stride} has a negative entry"
    elements = int(np.prod(size, dtype=object))
    if elements == 0:
        return f"storage offset {offset} is past the storage's {numel} elements" if offset > numel else None
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= numel:
        return (
            f"size {size}, stride {stride} and offset {offset} reach element {last}, "
            f"past the storage's {numel} elements"
        )
    if elements > numel:
        return f"its {elements} elements are more than the storage's {numel}"
    return None


def _materialize(view: _TensorView, name: str, source: str) -> np.ndarray:
    """A checked copy of the tensor `name` (`ConversionError` naming it and its storage)."""
    problem = _view_problem(view)
    if problem is not None:
        storage = f" (storage {view.storage.key!r})" if isinstance(view.storage, _Storage) else ""
        raise ConversionError(f"{source}: tensor {name!r}{storage} is not a valid view of its storage: {problem}")
    data = view.storage.data
    size = tuple(view.size)
    if 0 in size:
        return np.zeros(size, data.dtype)
    # Within bounds (checked above); a size-1 axis never moves, so its stride is irrelevant
    # and is zeroed rather than handed to NumPy however large it is.
    strides = tuple(0 if n == 1 else s * data.dtype.itemsize for n, s in zip(size, view.stride))
    return np.array(np.lib.stride_tricks.as_strided(data[view.offset :], shape=size, strides=strides))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a tensor checkpoint needs; everything else is `_Opaque`."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str, source: str):
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._source = source
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles
            return lambda text, encoding="latin1": text.encode(encoding)
        return _Opaque

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ConversionError(f"{self._source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key in self._storages:
            return self._storages[key]
        problem = f"{self._source}: storage {key!r}"
        if not isinstance(storage_type, _StorageType):
            raise ConversionError(f"{problem} has no storage type (found {type(storage_type).__name__})")
        if storage_type.dtype is None:
            raise ConversionError(f"{problem} has the unsupported type torch.{storage_type.name}")
        try:
            raw = self._archive.read(f"{self._root}/data/{key}")
        except KeyError:
            raise ConversionError(f"{problem} is missing from the archive") from None
        itemsize = storage_type.dtype.itemsize
        if len(raw) % itemsize:
            raise ConversionError(
                f"{problem}: {len(raw)} bytes is not a whole number of {itemsize}-byte {storage_type.name} elements"
            )
        if not _is_int(numel) or numel != len(raw) // itemsize:
            raise ConversionError(
                f"{problem} holds {len(raw) // itemsize} elements, the pickle says {numel!r} (truncated or altered)"
            )
        data = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        self._storages[key] = _Storage(key, data)
        return self._storages[key]


def _load_torch_zip(path: str) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ConversionError(
                    f"{path} is not a PyTorch zip checkpoint (no single data.pkl inside); "
                    "legacy (pre-1.6) torch.save files are not supported"
                )
            root = pickles[0][: -len("/data.pkl")]
            byteorder = f"{root}/byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
                raise ConversionError(f"{path}: big-endian checkpoints are not supported")
            with archive.open(pickles[0]) as f:
                return _RestrictedUnpickler(f, archive, root, path).load()
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt pickle or zip can fail in many ways; one clear line
        raise ConversionError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def _flatten(tree: Any, source: str, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(tree, _TensorView):
        yield prefix[:-1], _materialize(tree, prefix[:-1], source)
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _flatten(v, source, f"{prefix}{k}.")


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
    return dict(_flatten(obj, path))


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

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        source: str = "checkpoint",
        *,
        _prefix: str = "",
        _used: set[str] | None = None,
    ):
        self._tensors = tensors
        self.source = source
        self.prefix = _prefix
        self._used = set() if _used is None else _used

    def scoped(self, prefix: str) -> "StateDictReader":
        return StateDictReader(self._tensors, self.source, _prefix=self.prefix + prefix, _used=self._used)

    def has(self, key: str) -> bool:
        return self.prefix + key in self._tensors

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of `prefix + key` without taking it (to read a layout off a checkpoint)."""
        name = self.prefix + key
        if name not in self._tensors:
            raise ConversionError(f"{self.source}: missing key {name!r}")
        return tuple(int(d) for d in np.shape(self._tensors[name]))

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
            raise ConversionError(
                f"{self.source}: {name!r} has shape {tuple(value.shape)}, the model needs {tuple(shape)}"
            )
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
            raise ConversionError(
                f"{self.source}: {len(unused)} unexpected key(s) the model has no place for: {shown}{more}"
            )


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
