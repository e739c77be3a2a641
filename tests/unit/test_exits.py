"""Unit tests of the exit records: the taskstats parser on canned bytes, the
tree filter, and the summary's use of them on small frames.

The canned struct is laid out from include/uapi/linux/taskstats.h (version
16, 560 bytes, as kernel 6.18 sends it; version 10 ends before ac_tgid).
tests/integration/test_exits.py checks the same code on real exits.
"""

from __future__ import annotations

import struct

import pandas as pd
import pytest

from circuit.analysis import exits as AX
from circuit.analysis.summary import summarize_frames
from circuit.tracer import exits as X
from circuit.tracer.schema import EXIT_FIELDS
from tests.support.report_data import MS, T0, process_frame, thread_frame


def _stats(version: int = 16, size: int = 560, **v: int) -> bytes:
    b = bytearray(size)
    struct.pack_into("H", b, 0, version)
    struct.pack_into("Q", b, 24, v.get("delay", 0))
    struct.pack_into("Q", b, 72, v.get("cpu", 0))
    b[80 : 80 + 32] = v.get("comm", b"worker").ljust(32, b"\0")  # type: ignore[arg-type]
    struct.pack_into("II", b, 128, v.get("tid", 0), v.get("ppid", 0))
    struct.pack_into("QQQ", b, 144, v.get("etime", 0), v.get("utime", 0), v.get("stime", 0))
    struct.pack_into("QQ", b, 272, v.get("vol", 0), v.get("invol", 0))
    if size >= 372:
        struct.pack_into("I", b, 368, v.get("tgid", 0))
    return bytes(b)


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * (-n % 4)


def _message(stats: bytes, tgid_stats: bytes | None = None, tid: int = 0) -> bytes:
    body = _nla(X.TASKSTATS_TYPE_AGGR_PID, _nla(1, struct.pack("I", tid)) + _nla(3, stats))
    if tgid_stats is not None:
        body += _nla(5, _nla(2, struct.pack("I", 1)) + _nla(3, tgid_stats))
    genl = struct.pack("BBH", X.TASKSTATS_CMD_NEW, 1, 0) + body
    return struct.pack("IHHII", 16 + len(genl), 27, 0, 0, 0) + genl


def test_a_thread_record_reads_every_field():
    s = _stats(tid=12, tgid=10, ppid=9, cpu=5_307_709, delay=46_909, utime=4000, stime=8,
               vol=3, invol=2, etime=15_510, comm=b"pool-1")  # fmt: skip
    (r,) = X.parse_messages(_message(s, tid=12))
    assert r == X.Exit(10, 12, 9, "pool-1", 4_000_000, 8000, 5_307_709, 46_909, 3, 2, 15_510_000)
    assert len(r) == len(EXIT_FIELDS) - 1  # a row of `exits` without t_ns


def test_a_group_exit_keeps_the_task_record_and_skips_the_aggregate():
    """The AGGR_TGID stats hold only delay sums: not a task."""
    data = _message(_stats(tid=10, tgid=10, cpu=7), _stats(tid=0, cpu=99)) * 2
    recs = X.parse_messages(data)
    assert [(r.tid, r.cpu_ns) for r in recs] == [(10, 7), (10, 7)]


def test_an_old_struct_has_no_tgid_and_a_short_one_is_refused():
    (r,) = X.parse_messages(_message(_stats(version=10, size=352, tid=5, tgid=0)))
    assert r.pid == 0 and r.tid == 5
    assert X.parse_stats(_stats()[:200]) is None
    assert X.parse_messages(b"\x05\0\0\0garbage") == []


def _exit(tid: int, pid: int, ppid: int, cpu: int = 1) -> X.Exit:
    return X.Exit(pid, tid, ppid, "x", 0, 0, cpu, 0, 1, 0, 0)


def test_the_filter_keeps_the_tree_and_children_born_between_samples():
    f = X.ExitFilter()
    traced = {100}
    recs = [
        _exit(101, 100, 50),  # a thread of a traced process
        _exit(301, 300, 200),  # a grandchild, before its parent's record
        _exit(200, 200, 100),  # a child born and dead between samples
        _exit(900, 900, 1),  # someone else
    ]
    kept = f.keep(recs, traced, T0)
    assert sorted(r.tid for r in kept) == [101, 200, 301]


def test_an_unmatched_record_waits_then_is_dropped():
    f = X.ExitFilter()
    assert f.keep([_exit(301, 300, 200)], {100}, T0) == []
    later = f.keep([_exit(200, 200, 100)], {100}, T0 + 100 * MS)  # its parent, later
    assert sorted(x.tid for x in later) == [200, 301]
    assert f.keep([], {100}, T0 + 200 * MS) == []  # (given once)
    f.keep([_exit(401, 400, 7)], {100}, T0)
    assert f.keep([], {100}, T0 + f.HOLD_NS + 1) == [] and not f._held


def _exits_frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (t_ms, pid, tid, ppid, cpu_ms, vol, invol)."""
    out = []
    for t, pid, tid, ppid, cpu, vol, invol in rows:
        out.append((T0 + t * MS, pid, tid, ppid, "w", cpu * MS, 0, cpu * MS, 0, vol, invol, 0))
    return pd.DataFrame(out, columns=[c for c, _ in EXIT_FIELDS])


THREADS = [
    (0, 1, 1, "main", "R", "running", -1, 0, 0, 0),
    (10, 1, 1, "main", "R", "running", -1, 10, 0, 0),
    (0, 1, 2, "pool", "R", "running", -1, 0, 0, 0),
    (10, 1, 2, "pool", "S", "sleep", 35, 4, 2, 0),
]
PROCS = [{"t_ms": 0, "pid": 1, "cpu_ms": 0}, {"t_ms": 10, "pid": 1, "cpu_ms": 14}]
META = {"mode": "run", "wall_s": 0.02, "exits": {"source": "taskstats", "overflows": 0}}


def _summary(exits: pd.DataFrame | None, meta: dict = META, procs=PROCS) -> dict:
    return summarize_frames(
        meta, thread_frame(THREADS), process_frame(procs), pd.DataFrame(), exits=exits
    )


def test_a_sampled_thread_takes_its_final_figures_from_its_record():
    s = _summary(_exits_frame([(15, 1, 2, 0, 6, 5, 1)]))
    t = {x["tid"]: x for x in s["threads"]}
    assert (t[2]["cpu_s"], t[2]["ctx_voluntary"], t[2]["ctx_involuntary"]) == (0.006, 5, 1)
    assert not t[2]["seen_only_at_exit"] and s["threads_seen_only_at_exit"] == 0


def test_a_final_record_below_the_last_sample_changes_nothing():
    """Counters only grow: a lower record (another tid's reuse) never lowers."""
    s = _summary(_exits_frame([(15, 1, 2, 0, 1, 0, 0)]))
    t = {x["tid"]: x for x in s["threads"]}
    assert (t[2]["cpu_s"], t[2]["ctx_voluntary"]) == (0.004, 2)


def test_threads_and_processes_seen_only_at_exit_get_rows_and_cpu():
    ex = _exits_frame([(12, 1, 3, 0, 2, 1, 0), (13, 5, 5, 1, 30, 0, 0), (13, 5, 6, 1, 10, 0, 0)])
    s = _summary(ex)
    t = {x["tid"]: x for x in s["threads"]}
    assert t[3]["seen_only_at_exit"] and t[3]["cpu_s"] == 0.002
    assert s["threads_seen_only_at_exit"] == 3 and s["processes_seen_only_at_exit"] == 1
    p = {x["pid"]: x for x in s["processes"]}
    assert p[5]["cpu_s"] == 0.04 and p[5]["seen_only_at_exit"]
    assert p[1]["cpu_s"] == 0.016  # 10 + 4 + 2 ms of its threads > its own 14 ms
    assert p[1]["children_cpu_s"] == 0.04 and p[1]["children_cpu_source"] == "exits"
    assert s["cpu_s"] == 0.056 and s["threads_missed_at_most"] == 0
    assert s["cpu_in_unseen_threads_s"] == 0.0  # every thread has its final figures


def test_without_records_children_cpu_is_what_the_parent_reaped():
    meta = {"mode": "run", "wall_s": 0.02, "exits": {"source": "off (asked)"}}
    procs = [
        {"t_ms": 0, "pid": 1, "children_user_ns": 0, "children_system_ns": 0},
        {"t_ms": 10, "pid": 1, "children_user_ns": 30 * MS, "children_system_ns": 20 * MS},
    ]
    s = _summary(None, meta, procs)
    (p,) = s["processes"]
    assert p["children_cpu_s"] == 0.05 and p["children_cpu_source"] == "reaped"
    assert s["threads_seen_only_at_exit"] == 0 and s["threads_missed_at_most"] is None
    assert s["cpu_in_unseen_threads_s"] == 0.0  # its 14 ms are its threads' 10 + 4


def test_an_old_run_without_the_columns_still_summarises():
    procs = process_frame(PROCS).drop(columns=["children_user_ns", "children_system_ns"])
    s = summarize_frames(
        {"mode": "run", "wall_s": 0.02}, thread_frame(THREADS), procs, pd.DataFrame()
    )
    assert s["processes"][0]["children_cpu_s"] == 0.0 and s["exits_source"] is None


def test_the_missed_bound_counts_pids_handed_out_and_not_seen():
    """tids 1000..1009 handed out after 999; the run saw 1001 and 1005, and
    one pid before the window (pre-existing) does not count as seen."""
    meta = {"exits": {"last_pid_start": 999, "pids_allocated": 10, "pid_max": 32768}}
    th = pd.DataFrame({"tid": [1001, 1005, 500]})
    assert AX.missed(meta, th, pd.DataFrame({"tid": []})) == 8
    wrapped = {"exits": {"last_pid_start": 32760, "pids_allocated": 20, "pid_max": 32768}}
    assert AX.missed(wrapped, pd.DataFrame({"tid": [32765, 5]}), pd.DataFrame({"tid": []})) == 18


def test_the_text_summary_says_what_was_seen_only_at_exit_or_missed():
    from circuit.commands.summary import _exits_line

    on = {"exits_source": "taskstats", "threads_seen_only_at_exit": 965,
          "processes_seen_only_at_exit": 2, "exit_records_lost": 0}  # fmt: skip
    assert _exits_line(on) == "exit records: 965 threads and 2 processes seen only at exit"
    assert "dropped records 3 times" in _exits_line({**on, "exit_records_lost": 3})
    off = {"exits_source": "unavailable: needs root (CAP_NET_ADMIN)", "threads_missed_at_most": 7}
    assert "at most 7 threads and processes never seen" in _exits_line(off)
    assert _exits_line({"exits_source": None}) == ""


def test_cpu_the_process_counted_beyond_its_threads_rows_is_unseen():
    meta = {"mode": "run", "wall_s": 0.02, "exits": {"source": "off (asked)"}}
    procs = [{"t_ms": 0, "pid": 1, "cpu_ms": 0}, {"t_ms": 10, "pid": 1, "cpu_ms": 20}]
    s = _summary(None, meta, procs)
    assert s["cpu_in_unseen_threads_s"] == 0.006  # 20 ms counted, 10 + 4 in rows
    assert s["processes"][0]["cpu_in_unseen_threads_s"] == 0.006


def test_the_listener_opens_before_the_target_starts(monkeypatch):
    # So a child or thread the target ends in its first milliseconds, before
    # the first sample, has its record; and a target that fails to start
    # leaves no listener registered.
    from types import SimpleNamespace

    from circuit.tracer import session as S

    calls: list[str] = []

    class Listener(X.ExitListener):
        def __init__(self) -> None:
            self.closed = False

        def close(self) -> None:
            self.closed = True

    listener = Listener()
    monkeypatch.setattr(
        S.ExitListener, "open", classmethod(lambda cls: calls.append("listen") or listener)
    )
    monkeypatch.setattr(S, "Sampler", lambda *a, **k: SimpleNamespace(exits=None))

    class Target:
        opts = SimpleNamespace(exits=True, fds=True, redact=False)
        pid = 1
        fail = False

        def start(self, writer, backend, old_mask) -> None:
            calls.append("start")
            if self.fail:
                raise OSError("no such command")

    writer = SimpleNamespace(meta={})
    backend = SimpleNamespace(name="proc")
    sampler = S.Session(Target())._start(writer, backend, set())
    assert calls == ["listen", "start"] and sampler.exits is listener
    t = Target()
    t.fail = True
    with pytest.raises(OSError):
        S.Session(t)._start(writer, backend, set())
    assert listener.closed
