"""What `pip install .` (not editable) ships: every package folder.

pyproject.toml lists the packages by hand (the top-level folders install
inside the circuit namespace); a folder missing from the list installs
fine in editable mode and is absent from a wheel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # (Python >= 3.11)

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_the_wheel() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {name: ROOT / path for name, path in cfg["package-dir"].items()}
    found = set()
    for name, top in dirs.items():
        for init in top.rglob("__init__.py"):
            rel = init.parent.relative_to(top)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these to pyproject.toml's packages"
    assert listed - found == set(), "these packages have no folder"
