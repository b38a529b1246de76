"""The README's "Layout" section names every module of the package, so it stays the map of the tree."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_every_module_is_in_the_layout():
    block = _layout_block()
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block))
    package = ROOT / "stable_audio_jax"
    missing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" and path.stem not in names
    )
    assert not missing, f"README Layout does not name: {missing}"
    packages = sorted(p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert [p for p in packages if f"{p}/" not in block] == []
