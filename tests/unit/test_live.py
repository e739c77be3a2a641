"""The live view's figures (analysis/live.py) on hand-built windows: the
same as ``circuit summary`` of the same samples, attached; the window
buffer; the repeated-sample collapse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuit.analysis.gil import classify_gil, gil_metrics
from circuit.analysis.live import apply_now, collapse_repeats, live_view, now_rows
from circuit.analysis.live_window import Frames, LiveWindow
from circuit.analysis.summary import counter_deltas, summarize_frames, time_by, with_durations
from circuit.tracer.schema import GIL_FIELDS, MAP_FIELDS, PROC_FIELDS, PROCESS_FIELDS, THREAD_FIELDS

MS = 1_000_000
T0 = 5_000 * MS
PID = 100
BSS = (0x7000, 0x8000)  # the python image's writable range: a futex there is the GIL
LOCK_ADDR = 0x1234_0000  # a heap lock
FUTEX = 202


def _window(n: int = 200, seed: int = 3) -> Frames:
    """One process, five threads, ``n`` samples 10 ms apart:
    ``spinner`` runs (queued a little), ``sleeper`` sleeps, ``locked``
    waits for a heap lock, ``giler`` alternates between running and waiting
    for the GIL, ``poller`` sits in epoll_wait; the GIL is read each sample."""
    rng = np.random.default_rng(seed)
    rows = []
    counters = {tid: [0, 0, 0, 0] for tid in range(PID, PID + 5)}  # cpu, delay, vol, invol
    gil_rows = []
    proc_rows = []
    for i in range(n):
        t = T0 + i * 10 * MS
        for tid, name in zip(
            range(PID, PID + 5), ("spinner", "sleeper", "locked", "giler", "poller"), strict=True
        ):
            c = counters[tid]
            state, wait, sc, arg0 = "S", "sleep", 230, 0
            if name == "spinner":
                c[0] += 8 * MS
                c[1] += 2 * MS
                c[3] += 1
                state, wait, sc = "R", "running", -1
            elif name == "locked":
                wait, sc, arg0 = "lock", FUTEX, LOCK_ADDR
            elif name == "giler":
                if rng.random() < 0.5:
                    c[0] += 5 * MS
                    c[2] += 1
                    state, wait, sc = "R", "running", -1
                else:
                    wait, sc, arg0 = "lock", FUTEX, BSS[0] + 0x10
            elif name == "poller":
                wait, sc, arg0 = "poll", 232, 7
                if i % 50 == 0:
                    c[2] += 1
            rows.append(
                (t, PID, tid, name, state, wait, sc, arg0, "", c[0], 0, c[0], c[1], c[2], c[3], 0)
            )
        gil_rows.append((t, PID, 1, PID if i % 2 else PID + 3, i + 1))
        cpu = sum(c[0] for c in counters.values())
        proc_rows.append(
            (t, PID, 1, 5, 10 << 20, cpu, 0, 0, 0, 0, 0, 0, 0, 6, 2, 1, 2, 1)
            + (0,) * (len(PROCESS_FIELDS) - 18)
        )
    threads = pd.DataFrame(
        rows,
        columns=[c for c, _ in THREAD_FIELDS],
    )
    for c in ("name", "state", "wait", "wchan"):
        threads[c] = threads[c].astype("category")
    processes = pd.DataFrame(proc_rows, columns=[c for c, _ in PROCESS_FIELDS])
    gil = pd.DataFrame(gil_rows, columns=[c for c, _ in GIL_FIELDS])
    maps = pd.DataFrame(
        [(T0, PID, BSS[0], BSS[1], "/usr/bin/python3 [bss]", "rw-p")],
        columns=[c for c, _ in MAP_FIELDS],
    )
    procs = pd.DataFrame(
        [(T0, PID, 1, "python3", "/usr/bin/python3", "python3 app.py", True)],
        columns=[c for c, _ in PROC_FIELDS],
    )
    stacks = pd.DataFrame(
        columns=[
            "t_ns",
            "end_ns",
            "pid",
            "tid",
            "thread_name",
            "owns_gil",
            "active",
            "trigger",
            "stack",
            "frames",
        ]
    )
    return Frames(
        threads,
        processes,
        gil,
        procs,
        maps,
        stacks,
        int(processes.t_ns.min()),
        int(processes.t_ns.max()),
    )


META = {"rate_hz_requested": 100.0, "machine": "x86_64", "loop_threshold_s": 0.1}


def _summary(fr: Frames) -> dict:
    wall = (fr.end_ns - fr.start_ns) / 1e9
    meta = {
        "mode": "attach",
        "rate_hz_achieved": 100.0,
        "wall_s": wall,
        "start_ns": fr.start_ns,
        "machine": "x86_64",
    }
    return summarize_frames(
        meta, fr.threads, fr.processes, fr.procs, maps=fr.maps, stacks=fr.stacks, gil=fr.gil
    )


def test_window_figures_are_the_summary_of_the_same_samples() -> None:
    fr = _window()
    view = live_view(META, fr)
    s = _summary(fr)
    wall = s["wall_s"]
    (p,) = view["processes"]
    (sp,) = s["processes"]
    assert p["cpu_pct"] == pytest.approx(100 * sp["cpu_s"] / wall, abs=0.01)
    assert p["fds_by_kind"] == {"file": 2, "socket": 1, "pipe": 2, "epoll": 1}
    assert p["threads"] == 5 and p["rss_bytes"] == 10 << 20
    by_tid = {t["tid"]: t for t in s["threads"]}
    assert len(p["thread_rows"]) == 5
    for row in p["thread_rows"]:
        st = by_tid[row["tid"]]
        assert row["cpu_pct"] == pytest.approx(100 * st["cpu_s"] / wall, abs=0.01)
        switches = st["ctx_voluntary"] + st["ctx_involuntary"]
        assert row["csw_per_s"] == pytest.approx(switches / wall, abs=0.1)
        assert row["runq_pct"] == pytest.approx(100 * st["run_delay_s"] / wall, abs=0.01)
        total = sum(st["time_by_wait"].values())
        want = {w: v / total for w, v in st["time_by_wait"].items() if v}
        assert row["shares"] == pytest.approx(want, abs=1e-4)
    rows = {t["name"]: t for t in p["thread_rows"]}
    assert rows["spinner"]["shares"] == pytest.approx({"running": 0.8, "runnable": 0.2}, abs=0.01)
    assert rows["locked"]["wait"] == "lock" and rows["locked"]["shares"] == {"lock": 1.0}
    assert rows["giler"]["shares"]["gil"] > 0.3  # classified from the maps, as the summary does
    g = p["gil"]
    (sg,) = s["gil"]["processes"]
    assert g["contention"] == sg["contention"] and g["held_share"] == sg["held_share"]
    assert g["holder"]["tid"] == PID  # the last gil row: held by the main thread (odd sample)


def test_collapsing_repeated_samples_keeps_every_total() -> None:
    fr = _window()
    threads = classify_gil(fr.threads, fr.maps)
    small = collapse_repeats(threads)
    assert len(small) < len(threads) / 2  # the idle threads' samples go
    full = with_durations(threads, 10 * MS)
    few = with_durations(small, 10 * MS)
    pd.testing.assert_frame_equal(time_by(full, "wait"), time_by(few, "wait"))
    pd.testing.assert_frame_equal(
        counter_deltas(full, fr.start_ns, True), counter_deltas(few, fr.start_ns, True)
    )
    a = gil_metrics(full, fr.gil, fr.maps, 10 * MS)
    b = gil_metrics(few, fr.gil, fr.maps, 10 * MS)
    assert a == b


@pytest.mark.parametrize("attached", [True, False])
def test_counter_deltas_of_sorted_samples_are_the_baselines(attached: bool) -> None:
    from circuit.analysis.summary import COUNTERS, _baseline

    fr = _window(n=30)
    df = with_durations(fr.threads, 10 * MS)
    late = df["t_ns"] > fr.start_ns + 100 * MS
    df = df[~((df["tid"] == PID + 2) & ~late)]  # a thread that appears late: counted from 0
    want = _baseline(df[["pid", "tid", *COUNTERS]], ["pid", "tid"], fr.start_ns, attached)
    got = counter_deltas(df, fr.start_ns, attached)
    pd.testing.assert_frame_equal(got, want, check_index_type=False)
    unsorted = counter_deltas(df.iloc[::-1], fr.start_ns, attached)  # the general path
    assert len(unsorted) == len(want)
    procs = fr.processes[["pid", "t_ns", "user_ns", "system_ns"]]
    one = _baseline(procs, ["pid"], fr.start_ns + 50 * MS, attached)  # one process: contiguous
    two = pd.concat([procs, procs.assign(pid=PID + 1)]).sort_values("t_ns", kind="stable")
    general = _baseline(two, ["pid"], fr.start_ns + 50 * MS, attached)  # interleaved
    pd.testing.assert_frame_equal(one, general.loc[[PID]], check_index_type=False)


def test_collapse_keeps_each_threads_first_and_last_sample() -> None:
    fr = _window(n=20)
    small = collapse_repeats(fr.threads)
    for tid, g in fr.threads.groupby("tid"):
        kept = small[small["tid"] == tid]["t_ns"]
        assert kept.min() == g["t_ns"].min() and kept.max() == g["t_ns"].max()


def test_only_the_traced_processes_are_shown() -> None:
    fr = _window(n=20)
    assert live_view(META, fr, pids=[PID])["processes"]
    assert live_view(META, fr, pids=[PID + 1000])["processes"] == []


def test_the_newest_rows_give_state_wait_and_holder() -> None:
    fr = _window(n=20)
    view = live_view(META, fr)
    row = (PID, PID + 1, "sleeper", "R", "running", -1, 0, "", 0, 0, 0, 0, 0, 0, 0)
    lock = (PID, PID + 3, "giler", "S", "lock", FUTEX, BSS[0] + 0x10, "", 0, 0, 0, 0, 0, 0, 0)
    now = now_rows({PID: (fr.end_ns + 5 * MS, [row, lock])}, fr.maps)
    assert now_rows({PID: (fr.end_ns, [lock])}, fr.maps.iloc[:0], view["futex_waits"]) == {
        (PID, PID + 3): ("giler", "S", "gil")  # as the window classified that futex
    }
    fresh = apply_now(view, now, {PID: (fr.end_ns, PID, 1, PID + 1, 99)})
    rows = {t["name"]: t for t in fresh["processes"][0]["thread_rows"]}
    assert (rows["sleeper"]["state"], rows["sleeper"]["wait"]) == ("R", "running")
    assert rows["giler"]["wait"] == "gil"  # a futex in the python image: classified
    assert rows["sleeper"]["shares"] == {"sleep": 1.0}  # the window's figures stay
    assert fresh["processes"][0]["gil"]["holder"] == {
        "tid": PID + 1,
        "locked": True,
        "name": "sleeper",
    }
    old = {t["name"]: t for t in view["processes"][0]["thread_rows"]}
    assert old["sleeper"]["state"] == "S"  # the computed view is not changed in place


def _batches(df: pd.DataFrame, table: str, every: int) -> list:
    """``df`` as the record batches a run folder would get, ``every`` samples each."""
    import pyarrow as pa

    from circuit.tracer.parts import part_schema
    from circuit.tracer.schema import arrow_schema

    schema = part_schema(pa, table, arrow_schema(table))
    out = []
    times = np.sort(df["t_ns"].unique())
    for i in range(0, len(times), every):
        part = df[df["t_ns"].isin(times[i : i + every])]
        cols = [
            pa.array(
                part[f.name].astype(str)
                if pa.types.is_dictionary(f.type)
                else part[f.name].to_numpy(),
                type=f.type.value_type if pa.types.is_dictionary(f.type) else f.type,
            )
            for f in schema
        ]
        cols = [
            c.dictionary_encode() if pa.types.is_dictionary(f.type) else c
            for c, f in zip(cols, schema, strict=True)
        ]
        out.append(pa.RecordBatch.from_arrays(cols, schema=schema))
    return out


def test_the_window_keeps_the_last_seconds_as_a_runs_frames() -> None:
    fr = _window(n=300)  # 3 s of samples
    win = LiveWindow(1.0)
    assert win.frames() is None
    for table, df in (("threads", fr.threads), ("processes", fr.processes), ("gil", fr.gil)):
        for b in _batches(df, table, 50):
            win.add(table, b)
    for table, df in (("procs", fr.procs), ("maps", fr.maps)):
        for b in _batches(df, table, 1):
            win.add(table, b)
    assert win.changed
    got = win.frames()
    assert got is not None and not win.changed
    assert got.end_ns == fr.end_ns and got.start_ns == fr.end_ns - 1000 * MS
    assert got.threads["t_ns"].min() == got.start_ns
    assert len(got.threads) == 101 * 5
    assert isinstance(got.threads["wait"].dtype, pd.CategoricalDtype)
    assert len(got.procs) == 1 and len(got.maps) == 1
    assert len(win.batches["threads"]) <= 3  # older batches are let go
    view = live_view(META, got)
    assert view["window_s"] == pytest.approx(1.0)


def test_the_window_reads_new_dumps_as_they_are_appended(tmp_path) -> None:
    import json

    d = tmp_path / "pyspy"
    d.mkdir()
    f = d / "dumps.jsonl"
    rec = {
        "t_ns": 1,
        "end_ns": 2,
        "pid": PID,
        "trigger": "periodic",
        "threads": [
            {
                "tid": PID + 1,
                "name": "sleeper",
                "frames": [{"name": "sleep", "file": "a.py", "line": 3}],
            }
        ],
    }
    f.write_text(json.dumps(rec) + "\n" + '{"t_ns": 3, "pid"')  # the second line is being written
    win = LiveWindow(2.0, tmp_path)
    s = win.stacks()
    assert list(s["thread_name"]) == ["sleeper"]
    with open(f, "a") as fh:
        fh.write(
            ': 100, "end_ns": 4, "threads": [{"tid": 101, "name": "renamed", "frames": []}]}\n'
        )
    s = win.stacks()
    assert list(s["thread_name"]) == ["sleeper", "renamed"]
