"""Help texts a new user reads, and circuit.mark with a ``name`` field."""

from __future__ import annotations

import json

import pytest

import circuit
from circuit.cli import build_parser
from circuit.marks import ENV_RUN_DIR, MARKS_FILE


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


def test_summary_help_has_examples() -> None:
    text = _help("summary")
    assert "examples:" in text
    assert "circuit summary runs/app --json" in text and "| less -S" in text


def test_demo_help_describes_demo_not_bench() -> None:
    text = _help("demo")
    assert "circuit demo" in text.split("options:")[1]  # demo's own examples
    assert "report.html" in text
    # bench's examples and columns are not demo's
    assert "circuit bench --workloads" not in text and "speedup" not in text
    assert "default: circuit-runs/demo" in " ".join(text.split())


def test_mark_takes_a_name_field(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_RUN_DIR, str(tmp_path))
    circuit.mark("phase", name="load", step=1)
    circuit.mark("plain")
    recs = [json.loads(x) for x in (tmp_path / MARKS_FILE).read_text().splitlines()]
    assert [(r["name"], r.get("fields")) for r in recs] == [
        ("phase", {"name": "load", "step": 1}),
        ("plain", None),
    ]
