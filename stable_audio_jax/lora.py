"""Low-rank adapters (LoRA, DoRA) over a params tree: train a few weights, keep the base frozen.

An adapter replaces each targeted kernel `W` (a linear map from its leading `in` axes to its
trailing `out` axes, e.g. `[embed, heads, head_dim]`) by an adapted one, computed from the
frozen `W` and two small factors `a` `[*in, rank]` and `b` `[rank, *out]`:

    lora  W' = W + (alpha / rank) a b                                  (Hu et al., 2021)
    dora  W' = (|W| + magnitude) * V / |V|,  V = W + (alpha / rank) a b  (Liu et al., 2024)

with `|.|` the norm over the `in` axes (one per output unit). `b` starts at zero and
`magnitude` (an offset from the base's own norm) too, so a new adapter leaves the model as
it was. The adapters are a params tree of their own, `{path of W: {"a", "b"[, "magnitude"]}}`,
mirroring the model's nesting, so they train, shard and checkpoint like any params; the
adapted weights are recomputed from the base inside each step (`merge`), which keeps the
models unaware of adapters and makes the same function serve training, sampling with any
scale, stacking several adapters and exporting merged weights.

Factors carry the kernel's logical axes with the rank axis replicated (`a`: `(*in, None)`,
`b`: `(None, *out)`), so the mesh rules shard them as the kernel is sharded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from stable_audio_jax.errors import UserError

KINDS = ("lora", "dora")
# Attention query/key/value/out projections (DiT self- and cross-attention, the U-Net's
# attention blocks) and the MLP projections (the DiT's SwiGLU `ff`, the U-Net's `fc1`/`fc2`).
DEFAULT_TARGETS = (
    r"(^|/)(query|key|value|out)/kernel$",
    r"(^|/)ff/kernel$",
    r"(^|/)ff/out/kernel$",
    r"(^|/)fc[12]/kernel$",
)


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """How adapters are shaped: `rank` (0: no adapters), `alpha` (the update is scaled by
    alpha / rank), `targets` (regexes searched in each kernel's path, `/`-joined, e.g.
    `layers_3/self_attn/query/kernel`) and `kind` ("lora" or "dora")."""

    rank: int = 0
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    kind: str = "lora"

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "LoraSettings":
        """From a config's `lora` section (missing section: rank 0); bad values are UserErrors."""
        if not section:
            return cls()
        targets = section.get("targets", DEFAULT_TARGETS)
        settings = cls(
            rank=int(section.get("rank", 0)),
            alpha=float(section.get("alpha", 16.0)),
            targets=(targets,) if isinstance(targets, str) else tuple(targets),
            kind=str(section.get("kind", "lora")),
        )
        if settings.rank < 0:
            raise UserError(f"config.lora.rank={settings.rank} must be >= 0 (0: no adapters)")
        if settings.kind not in KINDS:
            raise UserError(f"config.lora.kind={settings.kind!r}; use one of {KINDS}")
        for pattern in settings.targets:
            try:
                re.compile(pattern)
            except re.error as error:
                raise UserError(f"config.lora.targets: {pattern!r} is not a regex ({error})") from None
        return settings

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def to_dict(self) -> dict[str, Any]:
        return dict(rank=self.rank, alpha=self.alpha, targets=list(self.targets), kind=self.kind)


@dataclasses.dataclass(frozen=True)
class Target:
    """One adapted kernel: its shape, how many leading axes are its input, its logical axes."""

    shape: tuple[int, ...]
    in_axes: int
    names: tuple[str | None, ...]

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[: self.in_axes])

    @property
    def fan_out(self) -> int:
        return math.prod(self.shape[self.in_axes :])


def _path(keys: tuple[str, ...]) -> str:
    return "/".join(str(k) for k in keys)


def input_axes(names: tuple[str | None, ...]) -> int:
    """Leading input axes of a kernel from its logical axes: a projection out of the heads
    (`[heads, kv, embed]`) contracts two, every other kernel its first one."""
    return 2 if tuple(names[:2]) == ("heads", "kv") else 1


def find_targets(boxed_params: Any, settings: LoraSettings) -> dict[str, Target]:
    """The kernels of `boxed_params` (params or their `eval_shape`, with logical-axis boxes)
    whose path matches one of `settings.targets`, by path.

    Raises:
      UserError: nothing matches, or the rank exceeds a target's input or output size.
    """
    flat = traverse_util.flatten_dict(boxed_params, is_leaf=lambda _, x: isinstance(x, nn.LogicallyPartitioned))
    patterns = [re.compile(p) for p in settings.targets]
    found = {}
    for keys, leaf in flat.items():
        path = _path(keys)
        if keys[-1] != "kernel" or not any(p.search(path) for p in patterns):
            continue
        value = leaf.unbox() if isinstance(leaf, nn.LogicallyPartitioned) else leaf
        names = tuple(leaf.names) if isinstance(leaf, nn.LogicallyPartitioned) else (None,) * value.ndim
        if value.ndim < 2:
            continue
        target = Target(tuple(value.shape), input_axes(names), names)
        if settings.rank > min(target.fan_in, target.fan_out):
            raise UserError(
                f"config.lora.rank={settings.rank} exceeds the dimensions of {path} "
                f"{list(target.shape)} (input {target.fan_in}, output {target.fan_out})"
            )
        found[path] = target
    if not found:
        kernels = [_path(k) for k in flat if k[-1] == "kernel"][:3]
        raise UserError(
            f"config.lora.targets {list(settings.targets)} match no kernel of the model "
            f"(kernel paths look like {kernels})"
        )
    return found


def init_adapters(rng: jax.Array, targets: Mapping[str, Target], settings: LoraSettings) -> dict[str, Any]:
    """Fresh adapters for `targets`, boxed with their logical axes: `a` uniform in
    +-1/sqrt(fan_in) (the scale of a PyTorch `nn.Linear` init), `b` and `magnitude` zero, so
    the adapted model starts equal to the base."""
    flat = {}
    for i, (path, target) in enumerate(sorted(targets.items())):
        in_names, out_names = target.names[: target.in_axes], target.names[target.in_axes :]
        bound = 1.0 / math.sqrt(target.fan_in)
        a = jax.random.uniform(
            jax.random.fold_in(rng, i), (*target.shape[: target.in_axes], settings.rank), jnp.float32, -bound, bound
        )
        leaves = {
            "a": nn.LogicallyPartitioned(a, (*in_names, None)),
            "b": nn.LogicallyPartitioned(
                jnp.zeros((settings.rank, *target.shape[target.in_axes :])), (None, *out_names)
            ),
        }
        if settings.kind == "dora":
            leaves["magnitude"] = nn.LogicallyPartitioned(jnp.zeros(target.shape[target.in_axes :]), out_names)
        for name, leaf in leaves.items():
            flat[(*path.split("/"), name)] = leaf
    return traverse_util.unflatten_dict(flat)


def adapter_size(targets: Mapping[str, Target], settings: LoraSettings) -> int:
    """Trainable parameters of adapters on `targets`: rank x (fan-in + fan-out) per kernel,
    plus fan-out for DoRA's magnitude."""
    per_kernel = [
        settings.rank * (t.fan_in + t.fan_out) + (t.fan_out if settings.kind == "dora" else 0) for t in targets.values()
    ]
    return sum(per_kernel)


def merged_kernels(boxed_base: Any, targets: Mapping[str, Target]) -> dict[str, Any]:
    """The adapted kernels `merge` computes, as a boxed abstract tree (float32, the kernels'
    logical axes): what a LoRA step holds besides the base (for memory estimates)."""
    flat = traverse_util.flatten_dict(boxed_base, is_leaf=lambda _, x: isinstance(x, nn.LogicallyPartitioned))
    return {
        path: flat[tuple(path.split("/"))].replace_boxed(jax.ShapeDtypeStruct(target.shape, jnp.float32))
        for path, target in targets.items()
    }


def adapter_paths(adapters: Any) -> list[str]:
    """The kernel paths an adapter tree adapts."""
    return sorted({_path(keys[:-1]) for keys in traverse_util.flatten_dict(adapters)})


def _adapted_kernel(kernel: jax.Array, factors: Mapping[str, jax.Array], settings: LoraSettings) -> jax.Array:
    """W' for one kernel (float32), from the frozen `kernel` and its adapter `factors`."""
    a, b = factors["a"], factors["b"]
    in_axes = a.ndim - 1
    base = kernel.astype(jnp.float32)
    update = jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32), axes=1) * (settings.alpha / a.shape[-1])
    adapted = base + update
    if settings.kind == "dora":
        axes = tuple(range(in_axes))
        base_norm = jnp.sqrt(jnp.sum(jnp.square(base), axis=axes))
        norm = jnp.sqrt(jnp.sum(jnp.square(adapted), axis=axes))
        adapted = adapted * ((base_norm + factors["magnitude"]) / jnp.maximum(norm, 1e-12))
    return adapted


@dataclasses.dataclass(frozen=True)
class Adapter:
    """Trained adapter params with the settings they were trained with (rank, alpha, kind)."""

    params: Any
    settings: LoraSettings


def _is_zero(scale: float | jax.Array) -> bool:
    return not isinstance(scale, jax.Array) and float(scale) == 0.0


def merge(base: Any, adapters: Sequence[tuple[Adapter, float | jax.Array]]) -> Any:
    """`base` params with each adapted kernel replaced by `W + sum_i scale_i (W'_i - W)`
    (float32; the other leaves are the base's own arrays).

    A scale of 0 leaves the base exactly as it is; one adapter at scale 1 gives its W'; two
    LoRA adapters give the base plus the sum of their scaled updates. Works inside `jit` and
    `grad` (the gradient reaches the adapter params through W')."""
    active = [(adapter, scale) for adapter, scale in adapters if not _is_zero(scale)]
    if not active:
        return base
    original = traverse_util.flatten_dict(base)
    merged = dict(original)
    for adapter, scale in active:
        by_kernel: dict[tuple[str, ...], dict[str, jax.Array]] = {}
        for keys, value in traverse_util.flatten_dict(adapter.params).items():
            by_kernel.setdefault(keys[:-1], {})[keys[-1]] = value
        for keys, factors in by_kernel.items():
            if keys not in original:
                raise UserError(f"the adapter adapts {_path(keys)}, which the base model does not have")
            kernel = original[keys]
            update = _adapted_kernel(kernel, factors, adapter.settings) - kernel.astype(jnp.float32)
            merged[keys] = merged[keys].astype(jnp.float32) + scale * update
    return traverse_util.unflatten_dict(merged)


def fingerprint(params: Any) -> str:
    """A short hex digest of a params tree: every leaf's path, shape, dtype and the bit-exact
    checksum of its values (`integrity.py`), so it is the same on any mesh and tells
    two bases apart even when their shapes agree."""
    from stable_audio_jax import integrity

    flat = traverse_util.flatten_dict(params)
    paths = sorted(flat)
    checksums = np.asarray(jax.jit(integrity.state_checksum)([flat[p] for p in paths]).addressable_data(0))
    description = [[_path(p), list(np.shape(flat[p])), str(np.dtype(flat[p].dtype))] for p in paths]
    digest = hashlib.sha256(json.dumps(description).encode())
    digest.update(np.ascontiguousarray(checksums, np.uint32).tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ the base an adapter run trains on
BASE_RECORD = "lora_base.json"  # in the run directory of a LoRA run


def write_base_record(run_dir: str, source: str, weights: Mapping[str, Any]) -> None:
    """Record which weights (`{part: params}`, as read from `source`) a LoRA run adapts."""
    record = {"source": os.path.abspath(source), "fingerprints": {part: fingerprint(w) for part, w in weights.items()}}
    os.makedirs(run_dir, exist_ok=True)
    temporary = os.path.join(run_dir, BASE_RECORD + ".tmp")
    with open(temporary, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(temporary, os.path.join(run_dir, BASE_RECORD))


def read_base_record(run_dir: str) -> dict[str, Any] | None:
    """The record of the base a LoRA run adapts; None for a run without adapters."""
    path = os.path.join(run_dir, BASE_RECORD)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_base_record(run_dir: str, weights: Mapping[str, Any], what: str) -> None:
    """Raise `UserError` unless `weights` (`{part: params}`, or `{part: fingerprint}` already
    computed, named `what` in the message) are the base the adapters of `run_dir` were trained on."""
    record = read_base_record(run_dir)
    if record is None:
        raise UserError(f"{run_dir} has no {BASE_RECORD}: it is not a LoRA run, or it never started")
    for part, params in weights.items():
        expected = record["fingerprints"].get(part)
        actual = params if isinstance(params, str) else fingerprint(params)
        if expected != actual:
            raise UserError(
                f"{what} is not the base the adapters in {run_dir} were trained on: its {part} "
                f"weights have fingerprint {actual}, the adapters' base ({record['source']}) "
                f"has {expected}"
            )
