"""What a new user meets on real runs, through the real command line: Python
thread names in the summary, timeline, Perfetto and CSV; piped summaries
that cut nothing; a bench folder given to summary; one message for a
folder that is not a run; owner-only reports and exports; named marks.

The oracle for names is the traced program itself: each thread writes its
own ``threading.get_native_id()`` and name (tests/targets/named_threads.py).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import circuit
from circuit.analysis import plots
from tests.support.helpers import PY, TARGETS, cli

pytestmark = pytest.mark.integration

# 80 characters: wider than any terminal column rich would give the name.
LONG = "a-thread-name-long-enough-that-a-narrow-console-would-have-cut-it-somewhere-0123"
# An argument that makes the command line long, as a user's paths do.
LONG_ARG = "--" + "x" * 150


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str]]:
    """A 1.5 s run of three named threads, dumped every 0.25 s (the first dump
    at 0.5 s, docs/pyspy.md): every thread lives through several dumps."""
    tmp = tmp_path_factory.mktemp("named")
    oracle = tmp / "oracle.json"
    out = tmp / "run"
    argv = [PY, str(TARGETS / "named_threads.py"), str(oracle), "1.5", LONG]
    p = cli("run", "-q", "--dump-interval", "0.25", "-o", str(out), "--", *argv, LONG_ARG)
    assert p.returncode == 0, p.stderr
    names = {int(k): v for k, v in json.loads(oracle.read_text()).items()}
    assert sorted(names.values()) == sorted(["MainThread", "worker-0", "worker-1", LONG])
    return out, names


def test_summary_json_has_each_threads_python_name(named) -> None:
    out, names = named
    p = cli("summary", str(out), "--json")
    assert p.returncode == 0, p.stderr
    got = {t["tid"]: t["python_name"] for t in json.loads(p.stdout)["threads"]}
    assert {tid: got.get(tid) for tid in names} == names


def test_piped_summary_prints_whole_names_and_command(named) -> None:
    """Through a pipe (not a tty) each thread is one row with its whole Python
    name; the command line is whole too."""
    out, names = named
    p = subprocess.run(
        [PY, "-m", "circuit", "summary", str(out)],
        capture_output=True,  # stdout is a pipe, as in `circuit summary RUN | less`
        text=True,
        env={**os.environ, "COLUMNS": "60"},  # a narrow width asked for must not cut either
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    rows = {}
    for line in p.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[2].isdigit():
            rows[int(cells[2])] = cells[3]
    assert {tid: rows.get(tid) for tid in names} == names
    assert LONG_ARG in p.stdout and str(TARGETS / "named_threads.py") in p.stdout
    assert "…" not in p.stdout


def test_timeline_lanes_name_python_threads(named) -> None:
    out, names = named
    run = circuit.load(out)
    fig = plots.timeline(run)
    lanes = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    plt.close(fig)
    for tid, name in names.items():
        if name != LONG:  # lanes shorten names to 24 characters
            assert f"{name} (tid {tid})" in lanes
    (long_tid,) = [tid for tid, n in names.items() if n == LONG]
    assert f"{LONG[:23]}… (tid {long_tid})" in lanes
    for lane in lanes:
        assert not lane.startswith("python")  # every Python thread was named
    notebook = run._repr_html_()  # the notebook view's thread table
    assert all(f"<td>{n}</td>" in notebook for n in names.values())


def test_perfetto_and_csv_exports_name_python_threads(named, tmp_path) -> None:
    out, names = named
    trace = tmp_path / "t.json"
    assert cli("export", str(out), "-o", str(trace)).returncode == 0
    ev = json.loads(trace.read_text())["traceEvents"]
    got = {e["tid"]: e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    assert {tid: got.get(tid) for tid in names} == {t: f"{n} (tid {t})" for t, n in names.items()}
    marks = sorted(e["name"] for e in ev if e["ph"] == "i")
    assert marks == ["phase: done", "phase: work"]
    zpath = tmp_path / "t.csv.zip"
    assert cli("export", str(out), "-f", "csv", "-o", str(zpath)).returncode == 0
    with zipfile.ZipFile(zpath) as z:
        th = pd.read_csv(io.BytesIO(z.read("threads.csv")), keep_default_na=False)
        mk = pd.read_csv(io.BytesIO(z.read("marks.csv")))
    got = th.drop_duplicates("tid").set_index("tid")["python_name"].to_dict()
    assert {tid: got.get(tid) for tid in names} == names
    # circuit.mark("phase", name=...): the mark's name and its name field
    assert mk[["name", "field_name"]].values.tolist() == [["phase", "work"], ["phase", "done"]]


# -- folders that are not runs ------------------------------------------------------


def _one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_summary_and_export_of_a_bench_folder_point_to_report(tmp_path: Path) -> None:
    bench = tmp_path / "b"
    p = cli(
        "bench",
        "-q",
        "--workloads",
        "io-sleep",
        "--models",
        "sequential",
        "--tasks",
        "1",
        "--repeat",
        "1",
        "--sweep",
        "none",
        "-o",
        str(bench),
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    for command in ("summary", "export"):
        err = _one_line_error(cli(command, str(bench)))
        assert f"{bench} is a bench folder" in err and f"`circuit report {bench}`" in err
    assert cli("report", str(bench), "-o", str(tmp_path / "r.html")).returncode == 0


def test_a_folder_that_is_not_a_run_gets_one_message_everywhere(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    expected = f"circuit: error: {folder} is not a circuit run folder (no meta.json)"
    for args in (
        ["summary", str(folder)],
        ["summary", str(folder), "--json"],
        ["report", str(folder)],
        ["export", str(folder)],
        ["export", str(folder), "-f", "csv"],
    ):
        assert _one_line_error(cli(*args)) == expected, args
    for args in (
        ["run", "-q", "-o", str(folder), "--", PY, "-c", "1"],
        ["run", "-q", "--force", "-o", str(folder), "--", PY, "-c", "1"],
        ["attach", "-q", "--duration", "0.1", "-o", str(folder), str(os.getpid())],
    ):
        assert _one_line_error(cli(*args)) == expected + "; not writing into it", args
    assert sorted(p.name for p in folder.iterdir()) == ["cat.jpg"]  # untouched
    assert not list(tmp_path.glob("photos*.html")) and not list(tmp_path.glob("photos.*"))


# -- owner-only outputs -------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_report_and_export_files_are_owner_only(named, tmp_path: Path) -> None:
    """With umask 0 (files would be 0666), over an existing 0644 file, into
    folders that do not exist yet: files 0600, created folders 0700; the
    existing folder they go in keeps its mode."""
    out, _ = named
    tmp_path.chmod(0o755)
    umask0 = {"preexec_fn": lambda: os.umask(0)}
    html = tmp_path / "new" / "deeper" / "r.html"
    assert cli("report", str(out), "-o", str(html), **umask0).returncode == 0
    written = [html, html.with_suffix(".md"), *html.parent.glob("*.png")]
    assert len(written) >= 4
    assert {p.name: _mode(p) for p in written} == {p.name: 0o600 for p in written}
    assert _mode(html.parent) == _mode(html.parent.parent) == 0o700
    assert _mode(tmp_path) == 0o755
    for fmt, name in (("perfetto", "t.json"), ("csv", "t.zip")):
        f = tmp_path / name
        f.write_text("old")
        f.chmod(0o644)
        assert cli("export", str(out), "-f", fmt, "-o", str(f), **umask0).returncode == 0
        assert _mode(f) == 0o600, fmt
        assert f.stat().st_size > 1000
