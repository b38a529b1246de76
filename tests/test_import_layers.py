"""Imports inside the package point one way: from a layer to the layers below it.

Every top-level module or sub-package of `stable_audio_jax` sits in one layer; a module may
import from its own sub-package and from strictly lower layers, never sideways or up. The
test reads the source (function-level imports included), so it needs no JAX.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "stable_audio_jax"

# Lowest first. Models know no training, inference or files; training and conversion write
# runs and pretrained directories, which inference reads; entry points sit on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("spectral", "parallel", "integrity"),
    ("models", "diffusion", "losses", "metrics", "input_pipeline", "demo_corpus"),
    ("lora", "pretrained"),
    ("config_lib",),
    ("convert", "training"),
    ("inference",),
    ("cli", "benchmark"),
    ("generator_flags", "webapp"),
)
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _unit(path: pathlib.Path) -> str:
    """The top-level module or sub-package a file belongs to (`models`, `lora`, ...)."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported_units(path: pathlib.Path) -> set[tuple[str, int]]:
    """`(unit, line)` for every import of a `stable_audio_jax` unit in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "stable_audio_jax":
                continue
            if len(parts) > 1:
                found.add((parts[1], node.lineno))
            else:  # `from stable_audio_jax import lora, parallel`
                found.update((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                (alias.name.split(".")[1], node.lineno)
                for alias in node.names
                if alias.name.startswith("stable_audio_jax.")
            )
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in SOURCES}
    assert units - set(LAYER_OF) == set(), "place new modules in LAYERS"
    assert set(LAYER_OF) - units == set(), "LAYERS names modules that no longer exist"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    unit = _unit(path)
    assert unit in LAYER_OF, f"{unit} has no layer in LAYERS"
    wrong = [
        f"line {line}: {unit} (layer {LAYER_OF[unit]}) imports {target} (layer {LAYER_OF.get(target)})"
        for target, line in sorted(_imported_units(path))
        if target != unit and LAYER_OF.get(target, len(LAYERS)) >= LAYER_OF[unit]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_an_upward_import(tmp_path):
    """The walker sees a function-level `from stable_audio_jax.training import ...`."""
    source = tmp_path / "module.py"
    source.write_text(
        "def f():\n    from stable_audio_jax.training.runs import load_run\n"
        "from stable_audio_jax import lora, parallel\n"
    )
    assert _imported_units(source) == {("training", 2), ("lora", 3), ("parallel", 3)}
