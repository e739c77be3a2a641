"""--profile's flame graph and speedscope file, named by the summary and linked by the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.helpers import PY, cli

pytestmark = pytest.mark.integration

SPIN = "import time\nend = time.monotonic() + 1\nwhile time.monotonic() < end: pass\n"


def test_summary_and_report_point_to_the_profile(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("run", "-q", "--profile", "-o", str(out), "--", PY, "-c", SPIN, timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads(cli("summary", "--json", str(out)).stdout)
    assert s["run"] == str(out)
    (p,) = s["profiles"]
    for key in ("flamegraph", "speedscope"):
        assert Path(p[key]).is_file(), p
        assert Path(p[key]).parent.parent == out, p  # inside the run folder
    text = cli("summary", str(out)).stdout
    assert p["flamegraph"] in text and p["speedscope"] in text, text
    rep = cli("report", str(out), "-o", str(tmp_path / "rep.html"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "rep.html").read_text()
    assert f'href="{Path(p["flamegraph"]).resolve().as_uri()}"' in html
    md = (tmp_path / "rep.md").read_text()
    assert Path(p["speedscope"]).resolve().as_uri() in md
