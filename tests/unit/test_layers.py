"""The layers import downwards only, checked on the source with ``ast``.

From the bottom: the tracer (samples, writes run folders); the analysis
(reads run and bench folders); the bench engine (``circuit.bench``: runs
workloads under the tracer, tabulates with the analysis); the command line
(``circuit.cli``, ``circuit.commands``: parses and prints).  ``circuit.workloads``
stands apart: it also runs under interpreters circuit is not installed in.
Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = ("circuit.cli", "circuit.commands")
# package -> what no module in it may import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "circuit.tracer": ("circuit.analysis", "circuit.bench", "circuit.api", *CLI),
    "circuit.analysis": ("circuit.bench", "circuit.api", *CLI),
    "circuit.bench": CLI,
    "circuit.workloads": (
        "circuit.tracer",
        "circuit.analysis",
        "circuit.bench",
        "circuit.api",
        *CLI,
    ),
}


def _source_files(package: str) -> Iterator[tuple[str, Path]]:
    """(module name, path) of every module of ``package``, from where it is installed."""
    mod = importlib.import_module(package)
    path = Path(mod.__file__ or "")
    if path.name != "__init__.py":  # a module, not a package
        yield package, path
        return
    root = path.parent
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join([package, *parts]), f


def _imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved;
    ``from X import y`` also yields ``X.y`` (y may be a submodule)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            yield node.lineno, base
            for a in node.names:
                yield node.lineno, f"{base}.{a.name}"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_downwards_only(package: str) -> None:
    bad = []
    for module, path in _source_files(package):
        for line, target in _imports(module, path):
            for forbidden in FORBIDDEN[package]:
                if _under(target, forbidden):
                    bad.append(f"{path.name}:{line} ({module}) imports {target}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_and_local_imports(tmp_path: Path) -> None:
    f = tmp_path / "__init__.py"
    f.write_text("from .. import commands\ndef f():\n    from ..commands.bench import run\n")
    names = [t for _, t in _imports("circuit.tracer", f)]
    assert "circuit.commands" in names and "circuit.commands.bench" in names
    f = tmp_path / "agent.py"
    f.write_text("from . import session\nimport circuit.cli\n")
    names = [t for _, t in _imports("circuit.tracer.agent", f)]
    assert names == ["circuit.tracer", "circuit.tracer.session", "circuit.cli"]


def test_the_cli_uses_public_names_only() -> None:
    # The command line calls the library's API; a private name it needed
    # would be a piece of the engine or the analysis living in the CLI.
    bad = []
    for package in CLI:
        for module, path in _source_files(package):
            for line, target in _imports(module, path):
                if target.startswith("circuit.") and any(
                    p.startswith("_") and not p.endswith("__") for p in target.split(".")[1:]
                ):
                    bad.append(f"{path.name}:{line} ({module}) imports {target}")
    assert not bad, "\n".join(bad)
