"""Many runs as one dataset (analysis/many.py) and the batched reader (analysis/query.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import circuit
from circuit.analysis.query import summarize_streamed, thread_batches
from circuit.analysis.summary import summarize
from circuit.errors import CircuitError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from analysis_cost import generate

from tests.support.stream_check import diff


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("many")
    for i in range(3):
        generate(base / f"r{i}", 2, 3 + i, 150, seed=i)
    return base


def test_batches_hold_whole_threads_and_every_row(runs: Path) -> None:
    total = 0
    seen: set[tuple[int, int]] = set()
    for df in thread_batches(runs / "r2", batch_rows=40):
        keys = set(zip(df["pid"], df["tid"], strict=True))
        assert not keys & seen  # no thread in two batches
        seen |= keys
        total += len(df)
    assert total == len(circuit.load(runs / "r2").threads)
    assert len(seen) == 2 * 5


@pytest.mark.parametrize("batch", [1, 100, 10_000])
def test_batched_summary_equals_the_in_memory_one(runs: Path, batch: int) -> None:
    ref = summarize(circuit.load(runs / "r1"))
    new = summarize_streamed(circuit.load(runs / "r1"), batch_rows=batch)
    norm = lambda s: json.loads(json.dumps(s, default=str))  # noqa: E731
    assert diff(norm(ref), norm(new)) == []


def test_load_many_gives_every_table_with_a_run_column(runs: Path) -> None:
    many = circuit.load_many(str(runs / "r*"))
    assert many.labels == ["r0", "r1", "r2"]
    th = many.threads
    assert th.columns[0] == "run"
    for label in many.labels:
        assert (th["run"] == label).sum() == len(circuit.load(runs / label).threads)
    s = many.summary(workers=1)
    assert list(s["run"]) == many.labels
    assert list(s["thread_samples"]) == [len(circuit.load(runs / x).threads) for x in many.labels]
    assert len(many.files("threads")) == 3


def test_load_many_takes_a_folder_of_runs_and_lists(runs: Path) -> None:
    assert len(circuit.load_many(runs)) == 3
    assert len(circuit.load_many([runs / "r0", runs / "r0", runs / "r1"])) == 2


def test_load_many_says_when_nothing_matches(tmp_path: Path) -> None:
    with pytest.raises(CircuitError, match="no run folder matches"):
        circuit.load_many(str(tmp_path / "nope*"))
    with pytest.raises(CircuitError, match="no such run folder"):
        circuit.load_many(tmp_path / "missing")


def test_compare_takes_a_glob(runs: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "circuit", "compare", str(runs / "r*"), "--json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["labels"] == ["r0", "r1", "r2"]


def test_buckets_add_up_to_each_threads_time(runs: Path) -> None:
    from circuit.analysis.query import scan

    s, shares = scan(circuit.load(runs / "r1"), batch_rows=50, buckets=20)
    per = shares.groupby(["pid", "tid"])["ns"].sum() / 1e9
    for t in s["threads"]:
        assert per[(t["pid"], t["tid"])] == pytest.approx(sum(t["time_by_wait"].values()), abs=1e-5)
    assert shares["start_ns"].nunique() <= 21


def test_a_long_run_gets_the_batched_report(runs: Path, tmp_path: Path, monkeypatch) -> None:
    import circuit.analysis.report.long_sections as L
    from circuit.analysis.report import write_report

    monkeypatch.setattr(L, "LONG_RUN_ROWS", 100)
    _, md = write_report(runs / "r2", tmp_path / "r.html")
    text = md.read_text()
    assert "Left out for a long run" in text
    assert (tmp_path / "r-timeline.png").stat().st_size > 0


def test_cpu_oversubscribed_is_found_alike_in_batches(tmp_path: Path) -> None:
    # a fifth of the synthetic threads run 60% of the time: on one CPU, too many
    generate(tmp_path / "r", 2, 10, 400, seed=3)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    (tmp_path / "r" / "meta.json").write_text(json.dumps({**meta, "cpus": 1}))
    ref = summarize(circuit.load(tmp_path / "r"))
    assert "cpu-oversubscribed" in [f["kind"] for f in ref["findings"]]
    new = summarize_streamed(circuit.load(tmp_path / "r"), batch_rows=300)
    norm = lambda s: json.loads(json.dumps(s, default=str))  # noqa: E731
    assert diff(norm(ref), norm(new)) == []


def test_report_of_a_glob_is_their_comparison(runs: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "circuit", "report", str(runs / "r*"), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "report of 3 runs" in r.stdout
    assert (tmp_path / "runs-report.html").stat().st_size > 0


def test_row_groups_smaller_than_a_batch_are_read_on(runs: Path, tmp_path: Path) -> None:
    import shutil

    import pyarrow.parquet as pq

    shutil.copytree(runs / "r2", tmp_path / "r")
    f = tmp_path / "r" / "threads.parquet"
    pq.write_table(pq.read_table(f), f, row_group_size=37)
    sizes = [len(df) for df in thread_batches(tmp_path / "r", batch_rows=100)]
    assert len(sizes) > 1
    assert sum(sizes) == len(circuit.load(tmp_path / "r").threads)
