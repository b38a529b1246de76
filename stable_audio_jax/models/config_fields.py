"""The one check every model config's `from_dict` makes: no unknown keys, lists back to tuples."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def checked_fields(cls: type, d: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`d` as keyword arguments of the dataclass `cls`.

    Raises ValueError naming the unknown keys (a misspelt config key must not be ignored);
    lists (from JSON or ml_collections) become tuples, as the frozen configs hold them.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known: {sorted(known)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
