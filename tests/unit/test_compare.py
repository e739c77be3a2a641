"""The comparison's pure logic on hand-built summaries: the table, findings,
loops, meta differences and the "what changed most" ranking.

The summaries are shaped like ``circuit summary --json`` (and carry the
``findings`` and ``loops`` keys other summaries will have), so the sums and
ratios checked here are exact arithmetic on known inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from circuit.analysis import compare as C
from circuit.analysis import compare_rank as R
from circuit.analysis.compare_load import Side, compare_sides, function_table, labels_for
from circuit.errors import CircuitError
from circuit.tracer.waits import WAIT_REASONS


def thread(pid: int, tid: int, waits: dict[str, float], vol: int = 0, inv: int = 0) -> dict:
    tbw = {w: waits.get(w, 0.0) for w in WAIT_REASONS}
    run = waits.get("running", 0.0) + waits.get("runnable", 0.0)
    return {
        "pid": pid,
        "tid": tid,
        "name": "python",
        "cpu_s": waits.get("running", 0.0),
        "ctx_voluntary": vol,
        "ctx_involuntary": inv,
        "run_delay_s": waits.get("runnable", 0.0),
        "time_by_state": {"R": run, "S": sum(tbw.values()) - run},
        "time_by_wait": tbw,
    }


def summary(
    threads: list[dict],
    wall: float = 1.0,
    contention: float | None = 0.0,
    fds: dict[str, int] | None = None,
    **extra: object,
) -> dict:
    kinds = {k: 0 for k in C.FD_KINDS} | (fds or {})
    return {
        "wall_s": wall,
        "cpu_s": 0.5,
        "cpu_user_s": 0.4,
        "cpu_system_s": 0.1,
        "parallelism": 0.5 / wall,
        "processes": [
            {
                "pid": 1,
                "rss_peak_bytes": 20 * 2**20,
                "threads_peak": len(threads),
                "fds_peak": sum(kinds.values()),
                "fds_peak_by_kind": kinds,
            }
        ],
        "threads": threads,
        "gil": {
            "contention": contention,
            "switches_per_s": None,
            "processes": [{"wait_s": (contention or 0.0) * 1.0}],
        },
        **extra,
    }


THREADS = summary(
    [
        thread(1, 1, {"lock": 1.0, "running": 0.02}),
        thread(1, 2, {"sleep": 0.95, "running": 0.05}, vol=10),
        thread(1, 3, {"sleep": 0.95, "running": 0.05}, vol=10),
    ],
    fds={"file": 3},
)
ASYNC = summary([thread(1, 1, {"poll": 0.9, "running": 0.1}, vol=20)], fds={"file": 3, "epoll": 1})


def test_figures_sum_the_threads_of_the_summary() -> None:
    f = C.figures(THREADS)
    assert f["threads"] == 3
    assert f["wait_sleep_s"] == pytest.approx(1.9)
    assert f["thread_s"] == pytest.approx(3.02)
    assert f["wait_sleep_share"] == pytest.approx(1.9 / 3.02)
    assert f["ctx_per_s"] == pytest.approx(20.0)
    assert f["run_delay_s"] == 0.0
    assert f["rss_peak_mib"] == 20.0


def test_loops_absent_are_not_recorded_empty_are_none() -> None:
    assert math.isnan(C.figures(THREADS)["loops"])
    assert C.not_recorded(THREADS) == {"loops"}
    empty = C.figures({**ASYNC, "loops": []})
    assert empty["loops"] == 0 and math.isnan(empty["loop_busy_share"])
    assert C.not_recorded({**ASYNC, "loops": []}) == set()
    loops = [
        {"pid": 1, "tid": 1, "busy_share": 0.3, "longest_stall_s": 0.2, "stalls": 3},
        {"pid": 1, "tid": 2, "busy_share": 0.7, "longest_stall_s": 0.05, "stalls": [{}, {}]},
    ]
    f = C.figures({**ASYNC, "loops": loops})
    assert (f["loops"], f["loop_busy_share"], f["loop_longest_stall_s"], f["loop_stalls"]) == (
        2,
        0.7,
        0.2,
        5,
    )


def test_table_ratios_and_differences() -> None:
    tab = C.table([C.figures(THREADS), C.figures(ASYNC)], ["t", "a"]).set_index("metric")
    assert tab.at["threads", "a vs t"] == pytest.approx(1 / 3)
    assert tab.at["wait_sleep_s", "a vs t"] == 0.0
    assert math.isnan(tab.at["wait_poll_s", "a vs t"])  # from zero: no ratio
    assert tab.at["wait_poll_share", "a vs t"] == pytest.approx(0.9)  # a difference
    assert "fds_epoll" in tab.index and "fds_socket" not in tab.index  # kinds nobody had
    assert "wait_disk_s" not in tab.index  # reasons nobody waited in
    assert C.vs_text(math.nan, 0.0, 0.9, C.RATIO) == "new"
    assert C.value_text(math.nan, "count", recorded=False) == C.NOT_RECORDED


def test_a_run_against_itself_has_ratios_of_one() -> None:
    f = C.figures({**THREADS, "loops": [{"busy_share": 0.5, "longest_stall_s": 0.1, "stalls": 2}]})
    tab = C.table([f, f], ["x", "y"])
    rel = tab["y vs x"]
    ratio = rel[tab["compared"] == C.RATIO].dropna()
    diff = rel[tab["compared"] == C.DIFF].dropna()
    assert len(ratio) > 20 and (ratio == 1.0).all()
    assert (diff == 0.0).all()
    assert R.changes(f, f) == []


FINDINGS_A = [
    {"kind": "loop-stall", "severity": "warning", "title": "loop blocked"},
    {"kind": "fd-leak", "severity": "critical", "title": "fds grow"},
    {"kind": "gil", "severity": "info", "title": "GIL"},
]
FINDINGS_B = [
    {"kind": "loop-stall", "severity": "critical", "title": "loop blocked long"},
    {"kind": "gil", "severity": "info", "title": "GIL"},
    {"kind": "gil", "severity": "info", "title": "GIL"},
    {"kind": "new-one", "severity": "info", "title": "new"},
]


def test_findings_side_by_side() -> None:
    rows = {e["kind"]: e for e in C.findings_table([FINDINGS_A, FINDINGS_B, None], ["a", "b", "c"])}
    assert rows["loop-stall"]["status"]["b"] == "severity rose"
    assert rows["fd-leak"]["status"]["b"] == "disappeared"
    assert rows["new-one"]["status"]["b"] == "appeared"
    assert rows["gil"]["status"]["b"] == "unchanged"
    assert rows["gil"]["runs"]["b"]["count"] == 2
    assert rows["gil"]["runs"]["c"] == C.NOT_RECORDED
    assert rows["gil"]["status"]["c"] == C.NOT_RECORDED
    changed = {e["kind"] for e in C.changed_findings(list(rows.values()))}
    assert changed == {"loop-stall", "fd-leak", "new-one"}
    same = C.findings_table([FINDINGS_A, FINDINGS_A], ["a", "b"])
    assert C.changed_findings(same) == []


def test_finding_changes_are_ranked_by_severity() -> None:
    f = C.figures(THREADS)
    ch = {c.metric: c.score for c in R.changes(f, f, FINDINGS_A, FINDINGS_B)}
    assert ch["finding_fd-leak"] == 0.9  # a critical one disappeared
    assert ch["finding_loop-stall"] == 0.45  # rose to critical: half its weight
    assert ch["finding_new-one"] == 0.1
    assert "finding_gil" not in ch


def test_ranking_says_the_move_from_sleep_to_poll() -> None:
    ranked = R.changes(C.figures(THREADS), C.figures(ASYNC))
    keys = [c.metric for c in ranked]
    # the whole of 1.9 of 3.02 thread-s left sleep: 0.63; threads 3 -> 1: 0.67
    assert keys[0] == "threads" and ranked[0].score == pytest.approx(2 / 3)
    move = next(c for c in ranked if c.metric == "wait_sleep_s>wait_poll_s")
    assert move.score == pytest.approx(1.9 / 3.02)
    assert "moved from `sleep`" in move.text and "to `poll`" in move.text
    assert "wait_lock_s" in keys  # the main thread's join is gone too, said on its own
    text = R.headline("a", "t", ranked)
    assert text.startswith("a against t: threads fell from 3 to 1; its waiting moved")


def test_gil_contention_phrase_and_score() -> None:
    a = C.figures(summary([thread(1, 1, {"running": 1.0})], contention=0.02))
    b = C.figures(summary([thread(1, 1, {"running": 1.0})], contention=0.61))
    (c,) = [c for c in R.changes(a, b) if c.metric == "gil_contention"]
    assert c.score == pytest.approx(0.59)
    assert c.text == "GIL contention rose from 0.02 to 0.61"


def test_quantity_scores_are_symmetric_and_floored() -> None:
    assert R.quantity_score(1.0, 2.0) == R.quantity_score(2.0, 1.0) == 0.5
    assert R.quantity_score(0.0, 3.0) == 1.0
    assert R.quantity_score(0.0, 0.0) == 0.0
    a = C.figures(summary([thread(1, 1, {"running": 0.004})], wall=0.004))
    b = C.figures(summary([thread(1, 1, {"running": 0.008})], wall=0.008))
    # 4 ms against 8 ms: under every floor, nothing called out
    assert [c.metric for c in R.changes(a, b) if c.metric in ("wall_s", "wait_running_s")] == []
    slower = C.figures(summary([thread(1, 1, {"running": 1.0})], wall=2.0))
    base = C.figures(summary([thread(1, 1, {"running": 1.0})], wall=1.0))
    (w,) = [c for c in R.changes(base, slower) if c.metric == "wall_s"]
    assert w.score == 0.5 and w.text == "wall time 2.0x (1.000 s -> 2.000 s)"


def test_a_small_wait_change_is_not_notable() -> None:
    a = C.figures(summary([thread(1, 1, {"sleep": 1.0, "poll": 0.02})]))
    b = C.figures(summary([thread(1, 1, {"sleep": 0.98, "poll": 0.04})]))
    assert R.changes(a, b) == []
    assert "no change scores" in R.headline("b", "a", [])


def test_meta_differences_name_commands_and_machines() -> None:
    m1 = {"command": ["python", "a.py"], "python_version": "3.11.7", "cpus": 2, "host": "x"}
    m2 = {"command": ["python", "b.py"], "python_version": "3.12.1", "cpus": 2, "host": "x"}
    d = C.meta_differences([m1, m2], ["a", "b"])
    assert [x["field"] for x in d] == ["command", "python_version"]
    assert C.different_commands(d) and not C.different_machines(d)
    assert C.different_machines(C.meta_differences([m1, {**m1, "cpus": 8}], ["a", "b"]))
    assert C.meta_differences([m1, m1], ["a", "b"]) == []


def test_compare_sides_on_synthetic_summaries() -> None:
    a = {**THREADS, "findings": FINDINGS_A, "loops": []}
    b = {**ASYNC, "findings": FINDINGS_B}
    sides = [
        Side("t", Path("t"), [a], [{"cpus": 2}]),
        Side("a", Path("a"), [b], [{"cpus": 2}]),
    ]
    cmp = compare_sides(sides)
    assert cmp["not_recorded"] == {"t": [], "a": ["loops"]}
    assert cmp["findings_recorded"] == {"t": True, "a": True}
    assert cmp["functions"] is None and cmp["meta_differences"] == []
    assert "finding `fd-leak` (critical) disappeared" in cmp["headlines"][0]


def test_median_figures_of_repeats() -> None:
    m = C.median_figures([{"x": 1.0, "y": math.nan}, {"x": 3.0, "y": 2.0}, {"x": 2.0}])
    assert m["x"] == 2.0 and m["y"] == 2.0


def test_labels() -> None:
    assert labels_for([Path("/r/a"), Path("/r/b")], None) == ["a", "b"]
    assert labels_for([Path("/x/run"), Path("/y/run")], None) == ["x/run", "y/run"]
    assert labels_for([Path("/r/a"), Path("/r/a")], None) == ["a", "a (2)"]
    assert labels_for([Path("a"), Path("b")], "old, new") == ["old", "new"]
    with pytest.raises(CircuitError, match="--labels names 1 runs, but 2"):
        labels_for([Path("a"), Path("b")], "one")
    with pytest.raises(CircuitError, match="different"):
        labels_for([Path("a"), Path("b")], "x,x")


def test_function_table_ranks_by_change() -> None:
    a = pd.Series({"recv (s.py)": 1.0, "sleep (t.py)": 0.5, "same (u.py)": 0.2})
    b = pd.Series({"recv (s.py)": 0.1, "select (e.py)": 0.7, "same (u.py)": 0.2})
    t = function_table([a, b], ["a", "b"])
    assert list(t["function"]) == ["recv (s.py)", "select (e.py)", "sleep (t.py)"]
    assert list(t["change_s"]) == pytest.approx([-0.9, 0.7, -0.5])
    assert function_table([None, b], ["a", "b"]) is None
    assert function_table([a, None], ["a", "b"]) is None
