"""Checksums of a train state, to tell an intact checkpoint from a damaged one.

Each array leaf gets two 32-bit words, computed from its raw bits with wrapping uint32
arithmetic: the plain sum of its words and a position-weighted sum (so swapped or shifted
elements change it too). Integer sums modulo 2**32 do not depend on the order of
addition, so the checksum is the same whatever the mesh or sharding the state lives on,
and the same whether it is computed on the devices (`state_checksum`, inside `jax.jit`) or
on the host with NumPy (`host_checksum`) from a checkpoint read back into memory.

Orbax checks the structure of what it reads, but a file overwritten with other bytes of the
same size restores without complaint; comparing the checksum recorded at save time with the
restored state's catches that.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Odd multiplier of the element index (Knuth's multiplicative hash): a bijection modulo 2**32.
_INDEX_MULTIPLIER = 2654435761


def _words(x: Any, xp) -> Any:
    """The leaf's bits as uint32 words: 32-bit types reinterpreted, narrower types widened,
    64-bit types split into two words (a trailing axis of 2)."""
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_:
        return x.astype(xp.uint32)
    unsigned = np.dtype(f"uint{8 * dtype.itemsize}")
    if xp is np:
        bits = np.ascontiguousarray(x).view(unsigned)
        return bits.view(np.uint32) if dtype.itemsize == 8 else bits.astype(np.uint32)
    if dtype.itemsize == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    bits = jax.lax.bitcast_convert_type(x, unsigned) if dtype != unsigned else x
    return bits.astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...], xp) -> Any:
    """Row-major element index of every position, as uint32 (wrapping), without a reshape
    (so a sharded array is not gathered)."""
    index = xp.zeros(shape, xp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        if xp is np:
            iota = np.arange(shape[axis], dtype=np.uint32).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        else:
            iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        index = index + iota * xp.uint32(stride % (1 << 32))
        stride *= shape[axis]
    return index


def _leaf_checksum(x: Any, xp) -> Any:
    words = _words(x, xp)
    weights = _flat_index(words.shape, xp) * xp.uint32(_INDEX_MULTIPLIER) + xp.uint32(1)
    return xp.stack([xp.sum(words, dtype=xp.uint32), xp.sum(words * weights, dtype=xp.uint32)])


def leaf_paths(tree: Any) -> list[str]:
    """Dotted paths of the array leaves, in the order the checksums use."""
    return [
        jax.tree_util.keystr(path, simple=True, separator=".")
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def state_checksum(state: Any) -> jax.Array:
    """`[num_leaves, 2]` uint32 checksums of a (sharded) state's leaves; call under `jax.jit`."""
    leaves = jax.tree.leaves(state)
    return jnp.stack([_leaf_checksum(leaf, jnp) for leaf in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


def host_checksum(state: Any) -> np.ndarray:
    """`state_checksum` of a state held on the host as NumPy arrays."""
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(state)]
    return np.stack([_leaf_checksum(leaf, np) for leaf in leaves]) if leaves else np.zeros((0, 2), np.uint32)


def first_mismatch(expected: np.ndarray, actual: np.ndarray, paths: list[str]) -> str | None:
    """The path of the first leaf whose checksum differs, or None when all agree."""
    expected, actual = np.asarray(expected, np.uint32), np.asarray(actual, np.uint32)
    if expected.shape != actual.shape:
        return f"(the checkpoint records {len(expected)} arrays, the state has {len(actual)})"
    for i in np.flatnonzero(np.any(expected != actual, axis=-1)):
        return paths[i] if i < len(paths) else f"leaf {i}"
    return None
