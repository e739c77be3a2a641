"""benchmarks/mutants.py's edits still apply: each names text the product holds once.

A mutant whose text the code no longer holds would break nothing and
measure nothing; this fails first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mutants  # noqa: E402


@pytest.mark.parametrize("m", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_edit_names_text_found_once(m: mutants.Mutant) -> None:
    for path, old, new in m.edits:
        assert (ROOT / path).read_text().count(old) == 1, (m.name, path, old)
        assert old != new
    for t in m.tests:
        assert (ROOT / t).is_file(), t
