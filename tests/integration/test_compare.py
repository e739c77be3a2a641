"""circuit compare on real traced runs and real (tiny) benches.

The figures a comparison states are checked against each run's own
``circuit summary --json`` (the comparison must add nothing of its own);
the behaviour compared (threads vs asyncio) is checked against what the
workload does by construction: ``io-sleep --model threads --tasks N`` starts
N threads that sleep in ``time.sleep`` while the main thread joins them,
``--model asyncio`` runs N coroutines in ``asyncio.sleep`` on one thread
(docs/workloads.md)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

import circuit
from tests.support.helpers import PY, cli

pytestmark = pytest.mark.integration

TASKS = 4
SCALE = "0.1"  # 0.4 s of sleeping per task: 40 samples of each sleeping thread at 100 Hz
EVIL_LABEL = "<script>alert(1)</script>"


def _run(out: Path, model: str) -> Path:
    argv = ["run", "-q", "--no-pyspy", "-o", str(out), "--", PY, "-m", "circuit.workloads"]
    argv += ["io-sleep", "--model", model, "--tasks", str(TASKS), "--scale", SCALE]
    p = cli(*argv)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cmp")
    return {m: _run(base / m, m) for m in ("threads", "asyncio")}


def _summary(path: Path) -> dict[str, Any]:
    p = cli("summary", "--json", str(path))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _compare(*args: str) -> dict[str, Any]:
    p = cli("compare", "--json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _rows(cmp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in cmp["table"]}


def test_threads_vs_asyncio(runs: dict[str, Path]) -> None:
    cmp = _compare(str(runs["threads"]), str(runs["asyncio"]))
    rows = _rows(cmp)
    assert cmp["labels"] == ["threads", "asyncio"]
    # the workload's construction: N sleeping threads + main, against one thread
    assert rows["threads"]["threads"] == TASKS + 1
    assert rows["threads"]["asyncio"] == 1
    assert rows["threads"]["asyncio vs threads"] == pytest.approx(1 / (TASKS + 1))
    # the wait moved from sleep to poll
    assert rows["wait_sleep_s"]["asyncio"] == 0.0
    assert rows["wait_poll_s"]["threads"] == 0.0
    assert rows["wait_sleep_share"]["threads"] > 0.5  # 4 of 5 threads sleep all along
    assert rows["wait_poll_share"]["asyncio"] > 0.5
    assert rows["wait_sleep_share"]["asyncio vs threads"] < -0.5
    head = cmp["headlines"][0]
    assert "threads fell from 5 to 1" in head
    assert "its waiting moved from `sleep`" in head and "to `poll`" in head
    assert [d["field"] for d in cmp["meta_differences"]] == ["command"]
    assert cmp["different_commands"] and not cmp["different_machines"]
    # both summaries have every section (loops: recorded, none found for threads)
    assert cmp["not_recorded"] == {"threads": [], "asyncio": []}


def test_figures_equal_each_runs_own_summary(runs: dict[str, Path]) -> None:
    """Every figure re-derived from ``circuit summary --json`` of that run."""
    cmp = _compare(str(runs["threads"]), str(runs["asyncio"]))
    rows = _rows(cmp)
    for label, path in runs.items():
        s = _summary(path)
        th, pr = s["threads"], s["processes"]
        total = sum(sum(t["time_by_wait"].values()) for t in th)
        want = {
            "wall_s": s["wall_s"],
            "cpu_s": s["cpu_s"],
            "cpu_user_s": s["cpu_user_s"],
            "cpu_system_s": s["cpu_system_s"],
            "parallelism": s["parallelism"],
            "threads": len(th),
            "processes": len(pr),
            "thread_s": total,
            "run_delay_s": sum(t["run_delay_s"] for t in th),
            "ctx_per_s": sum(t["ctx_voluntary"] + t["ctx_involuntary"] for t in th) / s["wall_s"],
            "gil_contention": s["gil"]["contention"],
            "fds_peak": sum(p["fds_peak"] for p in pr),
            "rss_peak_mib": max(p["rss_peak_bytes"] for p in pr) / 2**20,
        }
        for w in ("running", "runnable", "sleep", "lock", "poll"):
            sec = sum(t["time_by_wait"][w] for t in th)
            if f"wait_{w}_s" in rows:
                want[f"wait_{w}_s"] = sec
                want[f"wait_{w}_share"] = sec / total
        for kind in ("file", "socket", "epoll"):
            if f"fds_{kind}" in rows:
                want[f"fds_{kind}"] = sum(p["fds_peak_by_kind"][kind] for p in pr)
        for key, v in want.items():
            assert rows[key][label] == pytest.approx(v, rel=1e-9, abs=1e-9), (label, key)


def test_run_compared_with_itself(runs: dict[str, Path]) -> None:
    a = str(runs["asyncio"])
    cmp = _compare(a, a)
    assert cmp["labels"] == ["asyncio", "asyncio (2)"]
    rel = [r for r in cmp["table"] if r["asyncio (2) vs asyncio"] is not None]
    ratios = [r["asyncio (2) vs asyncio"] for r in rel if r["compared"] == "ratio"]
    diffs = [r["asyncio (2) vs asyncio"] for r in rel if r["compared"] == "difference"]
    assert len(ratios) > 20 and all(x == 1.0 for x in ratios)
    assert all(x == 0.0 for x in diffs)
    # the NaNs are the figures that do not apply: loops (none in the threads run)
    assert {r["group"] for r in cmp["table"] if r["asyncio (2) vs asyncio"] is None} <= {"loops"}
    assert cmp["changes"] == {"asyncio (2)": []}
    assert [e for e in cmp["findings"] if set(e["status"].values()) - {"unchanged"}] == []
    assert cmp["meta_differences"] == []


def test_api_returns_the_same_table(runs: dict[str, Path]) -> None:
    df = circuit.compare([circuit.load(runs["threads"]), runs["asyncio"]], labels=["t", "a"])
    cmp = _compare(str(runs["threads"]), str(runs["asyncio"]))
    for r in cmp["table"]:
        got = df.loc[df["metric"] == r["metric"]].iloc[0]
        for col, want in (("t", r["threads"]), ("a", r["asyncio"])):
            assert (want is None and math.isnan(got[col])) or got[col] == pytest.approx(want)
    assert df.attrs["not_recorded"] == {"t": [], "a": []}


def test_text_and_report(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r" / "cmp.html"
    p = cli(
        "compare", str(runs["threads"]), str(runs["asyncio"]),
        "--labels", f"{EVIL_LABEL},async", "-o", str(out),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "What changed most" in p.stdout
    doc = out.read_text(encoding="utf-8")
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "<script" not in doc.lower() and "&lt;script&gt;" in doc
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:|#)""", doc)  # offline
    assert doc.count("src='data:image/png;base64,") == 2  # wait bars, timelines
    assert "its waiting moved from" in doc and "its waiting moved from" in md
    assert "&lt;script&gt;" in md
    pngs = sorted(x.name for x in out.parent.glob("*.png"))
    assert pngs == ["cmp-timelines.png", "cmp-waits.png"]
    for f in out.parent.iterdir():  # owner-only, as the run folders
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def _one_error_line(p: Any) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("circuit: error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_missing_and_corrupt_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    good = str(runs["asyncio"])
    line = _one_error_line(cli("compare", good, str(tmp_path / "nope")))
    assert "nope: no such run or bench folder" in line
    bad = tmp_path / "bad"
    shutil.copytree(runs["threads"], bad)
    (bad / "meta.json").write_text('{"format_version": 1, "wall_')
    assert "meta.json is corrupted" in _one_error_line(cli("compare", good, str(bad)))
    cut = tmp_path / "cut"
    shutil.copytree(runs["threads"], cut)
    data = (cut / "threads.parquet").read_bytes()
    (cut / "threads.parquet").write_bytes(data[: len(data) // 2])
    assert "threads.parquet is corrupted" in _one_error_line(cli("compare", good, str(cut)))
    assert "at least two" in _one_error_line(cli("compare", good))
    line = _one_error_line(cli("compare", good, good, "--labels", "x"))
    assert "--labels names 1 runs, but 2" in line


def _bench(out: Path, models: str) -> Path:
    p = cli(
        "bench", "-q", "--no-pyspy", "--workloads", "io-sleep", "--models", models,
        "--tasks", "2", "--repeat", "1", "--scale", "0.02", "-o", str(out),
        timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return out


def test_benches_cell_by_cell(tmp_path: Path, runs: dict[str, Path]) -> None:
    a = _bench(tmp_path / "ba", "threads,asyncio")
    b = _bench(tmp_path / "bb", "threads,asyncio,sequential")
    cmp = _compare(str(a), str(b))
    assert cmp["kind"] == "benches"
    names = [c["name"] for c in cmp["cells"]]
    assert names == [
        "workload=io-sleep model=threads tasks=2",
        "workload=io-sleep model=asyncio tasks=2",
    ]
    assert cmp["unmatched"] == [
        {"cell": {"workload": "io-sleep", "model": "sequential", "tasks": 2}, "in": ["bb"]}
    ]
    for cell in cmp["cells"]:
        rows = _rows(cell)
        model = cell["cell"]["model"]
        for label, bench in (("ba", a), ("bb", b)):
            s = _summary(bench / "runs" / f"io-sleep_{model}_t2_r1")
            assert rows["threads"][label] == len(s["threads"])
            assert rows["wall_s"][label] == pytest.approx(s["wall_s"])
            assert rows["cpu_s"][label] == pytest.approx(s["cpu_s"])
        assert rows["threads"]["ba"] == (3 if model == "threads" else 1)
    # the text form names every cell; a bench and a run do not mix
    p = cli("compare", str(a), str(b))
    assert p.returncode == 0, p.stderr
    assert "model=threads tasks=2" in p.stdout and "model=asyncio tasks=2" in p.stdout
    assert "only in bb" in p.stdout
    line = _one_error_line(cli("compare", str(a), str(runs["asyncio"])))
    assert "cannot compare run folders with bench folders" in line
    out = tmp_path / "bench.html"
    assert cli("compare", str(a), str(b), "-o", str(out)).returncode == 0
    doc = out.read_text(encoding="utf-8")
    assert "model=asyncio" in doc and "only in bb" in doc
    assert os.stat(out).st_mode & 0o077 == 0
