"""The GIL: who waits for it, who holds it, how contended it is.

The one GIL model of circuit: ``circuit summary``, the run and bench reports,
the bench table, the plots and the export all take their figures from
:func:`gil_metrics` and their holder timelines from :func:`holder_timeline`
(docs/pyspy.md, "The GIL model", has the definitions and their error bounds).

Two kinds of evidence:

* futex (every Python process whose threads' syscalls circuit can read): a
  thread waiting for the GIL sleeps in ``futex`` on an address inside the
  interpreter's static data; :func:`classify_gil` turns those ``lock``
  samples into ``gil`` with the python image mappings (table ``maps``).
* interpreter (table ``gil``): the GIL's own state (locked, holder, the
  interpreter's switch counter) read from the target's memory at every
  sample.  Only a process with rows there has a measured holder, held time
  and hand-off rate; elsewhere those are None, never estimated from CPU use:
  a thread on a CPU may be running C code without the GIL.

GIL *wait* is the futex evidence under both sources: a thread that is
running, or runnable and queued for a CPU, is never waiting for the GIL.

All functions are pure and vectorised: DataFrames in, DataFrames or dicts out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .cols import eq
from .runnable import own_ns

INTERPRETER = "interpreter"
FUTEX = "futex"


def gil_ranges(maps: pd.DataFrame) -> pd.DataFrame:
    """The writable python image ranges per (pid, snapshot t_ns)."""
    cols = ["pid", "t_ns", "start", "end"]
    if maps is None or maps.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    w = maps[maps["perms"].astype(str).str[1] == "w"]
    return w[cols].sort_values(["pid", "t_ns", "start"]).reset_index(drop=True)


def classify_gil(threads: pd.DataFrame, maps: pd.DataFrame) -> pd.DataFrame:
    """Return ``threads`` with ``wait`` = ``gil`` for futex waits inside the python image.

    A sample uses the maps snapshot of its pid in effect at its time (the
    latest one taken at or before it; the first one for earlier samples).
    """
    if threads.empty:
        return threads.copy()
    # On the category codes: 1M strings cost ~0.4 s to make and ~0.3 s to
    # encode back, for a column that holds a dozen distinct values.
    wait = threads["wait"]
    if not isinstance(wait.dtype, pd.CategoricalDtype):
        wait = wait.astype(str).astype("category")
    cats = [str(c) for c in wait.cat.categories]
    codes = wait.cat.codes.to_numpy()
    if "lock" not in cats or not (is_lock := codes == cats.index("lock")).any():
        return threads.copy(deep=False)  # copy-on-write (pandas 3): theirs stays as it is
    gil = gil_hits(
        threads["pid"].to_numpy(),
        threads["t_ns"].to_numpy(),
        threads["arg0"].to_numpy(),
        is_lock,
        gil_ranges(maps),
    )
    if "gil" not in cats:
        cats.append("gil")
    codes = codes.astype(np.int32)  # a copy, wide enough for one more category
    codes[gil] = cats.index("gil")
    out = threads.copy(deep=False)
    out["wait"] = pd.Categorical.from_codes(codes, categories=cats)
    return out


def gil_hits(
    pid: np.ndarray, t: np.ndarray, arg0: np.ndarray, is_lock: np.ndarray, ranges: pd.DataFrame
) -> np.ndarray:
    """Which samples are GIL waits: ``is_lock`` rows whose futex address lies
    in the python image's writable ranges (:func:`gil_ranges`) of the
    snapshot in effect at their time."""
    gil = np.zeros(len(is_lock), dtype=bool)
    if len(ranges):
        addr = arg0.astype(np.int64).astype(np.uint64)
        for p, snaps in ranges.groupby("pid", sort=False):
            rows = is_lock & (pid == p)
            if not rows.any():
                continue
            times = np.sort(snaps["t_ns"].unique())
            which = np.clip(np.searchsorted(times, t[rows], side="right") - 1, 0, None)
            hit = np.zeros(int(rows.sum()), dtype=bool)
            for i, ts in enumerate(times):
                snap = snaps[snaps["t_ns"] == ts]
                sel = which == i
                if not sel.any():
                    continue
                a = addr[rows][sel]
                inside = np.zeros(len(a), dtype=bool)
                for lo, hi in zip(
                    snap["start"].to_numpy(np.uint64), snap["end"].to_numpy(np.uint64), strict=True
                ):
                    inside |= (a >= lo) & (a < hi)
                hit[sel] = inside
            gil[np.flatnonzero(rows)[hit]] = True
    return gil


def python_pids(
    maps: pd.DataFrame | None,
    gil: pd.DataFrame | None = None,
    threads: pd.DataFrame | None = None,
) -> set[int]:
    """Processes running a Python interpreter: a python executable or libpython
    mapped (``maps``), its GIL state read (``gil``), or one of its threads
    seen waiting for the GIL (``threads``, classified)."""
    out: set[int] = set()
    for df in (maps, gil):
        if df is not None and len(df):
            out |= {int(p) for p in pd.unique(df["pid"])}
    if threads is not None and len(threads):
        is_gil = eq(threads["wait"], "gil")
        out |= {int(p) for p in pd.unique(threads["pid"].to_numpy()[is_gil])}
    return out


def gil_sources(pids: Iterable[int], gil: pd.DataFrame | None) -> dict[int, str]:
    """The source of each process's GIL figures: ``interpreter`` where the
    ``gil`` table has rows for it, else ``futex``."""
    read = set() if gil is None or gil.empty else {int(p) for p in pd.unique(gil["pid"])}
    return {int(p): INTERPRETER if int(p) in read else FUTEX for p in sorted(pids)}


GIL_COLUMNS = ["pid", "t_ns", "locked", "holder", "switches", "dt_ns"]


def gil_intervals(
    gil: pd.DataFrame | None, threads: pd.DataFrame | None, period_ns: int
) -> pd.DataFrame:
    """The ``gil`` rows by (pid, t_ns), each with ``dt_ns``: the interval it
    stands for, up to the process's next sample (a thread sample or a GIL
    reading: a reading that failed does not stretch the one before it), one
    sampling period for the last."""
    if gil is None or gil.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in GIL_COLUMNS})
    return intervals_of(gil, sample_times(threads), period_ns)


def sample_times(threads: pd.DataFrame | None) -> dict[int, np.ndarray]:
    """Each process's thread sample times, sorted and unique."""
    if threads is None or threads.empty:
        return {}
    tp = threads["pid"].to_numpy().astype(np.int64)
    tt = threads["t_ns"].to_numpy().astype(np.int64)
    return {int(p): np.unique(tt[tp == p]) for p in np.unique(tp)}


def intervals_of(
    gil: pd.DataFrame, times_by_pid: dict[int, np.ndarray], period_ns: int
) -> pd.DataFrame:
    """:func:`gil_intervals` with the thread sample times given per process
    (:func:`sample_times`)."""
    if gil is None or gil.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in GIL_COLUMNS})
    g = gil.sort_values(["pid", "t_ns"], kind="stable").reset_index(drop=True)
    gp = g["pid"].to_numpy().astype(np.int64)
    gt = g["t_ns"].to_numpy().astype(np.int64)
    dt = np.full(len(g), int(period_ns), dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, gp[1:] != gp[:-1], True])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        own = gt[a:b]
        theirs = times_by_pid.get(int(gp[a]))
        times = np.union1d(own, theirs) if theirs is not None else np.unique(own)
        i = np.searchsorted(times, own, side="right")
        last = i >= len(times)
        nxt = times[np.minimum(i, len(times) - 1)]
        dt[a:b] = np.where(last, int(period_ns), nxt - own)
    return pd.DataFrame(
        {
            "pid": gp,
            "t_ns": gt,
            "locked": g["locked"].to_numpy().astype(np.int64),
            "holder": g["holder"].to_numpy().astype(np.int64),
            "switches": g["switches"].to_numpy().astype(np.int64),
            "dt_ns": dt,
        }
    )


def holder_timeline(
    gil: pd.DataFrame | None, threads: pd.DataFrame | None, period_ns: int
) -> pd.DataFrame:
    """Who held the GIL, from the interpreter's own state: pid, t_ns, dt_ns,
    holder (tid; 0 held by a thread circuit could not name; -1 free),
    switches (the interpreter's counter).  Empty for processes without
    ``gil`` rows: the futex evidence does not say who holds the GIL."""
    iv = gil_intervals(gil, threads, period_ns)
    holder = np.where(iv["locked"].to_numpy() != 0, iv["holder"].to_numpy(), -1)
    return iv[["pid", "t_ns", "dt_ns"]].assign(holder=holder, switches=iv["switches"])


def holder_runs(timeline: pd.DataFrame) -> pd.DataFrame:
    """The holder timeline run-length encoded: pid, start_ns, end_ns, holder.

    A run ends where the holder changes, or where the interpreter counted a
    hand-off between two samples that show the same holder (the GIL went
    elsewhere and came back)."""
    cols = ["pid", "start_ns", "end_ns", "holder"]
    if timeline.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    tl = timeline.sort_values(["pid", "t_ns"], kind="stable")
    p, t = tl["pid"].to_numpy(), tl["t_ns"].to_numpy()
    h, s = tl["holder"].to_numpy(), tl["switches"].to_numpy()
    end = t + tl["dt_ns"].to_numpy()
    new = np.ones(len(tl), dtype=bool)
    new[1:] = (p[1:] != p[:-1]) | (h[1:] != h[:-1]) | (s[1:] != s[:-1])
    first = np.flatnonzero(new)
    last = np.r_[first[1:], len(tl)] - 1
    return pd.DataFrame(
        {"pid": p[first], "start_ns": t[first], "end_ns": end[last], "holder": h[first]}
    ).astype("int64")


def _ordered(threads: pd.DataFrame, period_ns: int) -> pd.DataFrame:
    """``threads`` sorted by (pid, tid, t_ns), with ``dt_ns`` (summary.with_durations)."""
    from .summary import with_durations

    if "dt_ns" not in threads.columns:
        return with_durations(threads, period_ns)
    key = _thread_key(threads)
    t = threads["t_ns"].to_numpy()
    if len(t) < 2 or bool(
        np.all((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (t[1:] >= t[:-1])))
    ):
        return threads
    return threads.sort_values(["pid", "tid", "t_ns"], kind="stable")


def _thread_key(df: pd.DataFrame) -> np.ndarray:
    return (df["pid"].to_numpy().astype(np.int64) << 32) | df["tid"].to_numpy().astype(np.int64)


def thread_figures(
    threads: pd.DataFrame, iv: pd.DataFrame, pids: set[int], period_ns: int
) -> pd.DataFrame:
    """Per thread of the ``pids`` processes (index pid, tid): ``time_ns``
    (sampled time), ``wait_ns`` (in ``gil``), ``held_ns`` (the interpreter
    named it the holder of a locked GIL; 0 without ``gil`` rows), ``cpu``
    (its CPU counter moved, or it was seen running) and ``ran_python``
    (held, waited or used CPU)."""
    mine = threads["pid"].isin(list(pids)).to_numpy() if len(threads) else np.zeros(0, bool)
    df = threads if mine.all() else threads[mine]
    return with_held(thread_base(df, period_ns), iv)


def thread_base(df: pd.DataFrame, period_ns: int) -> pd.DataFrame:
    """Per thread (index pid, tid): ``time_ns``, ``wait_ns``, ``cpu`` of
    :func:`thread_figures`, without what the ``gil`` table adds."""
    if df.empty:
        idx = pd.MultiIndex.from_arrays([[], []], names=["pid", "tid"])
        return pd.DataFrame(
            {c: pd.Series(dtype=float) for c in ("time_ns", "wait_ns", "cpu")}, index=idx
        )
    df = _ordered(df, period_ns)
    key = _thread_key(df)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    dt = df["dt_ns"].to_numpy().astype(np.int64)
    gil = eq(df["wait"], "gil")
    run = eq(df["wait"], "running")
    cpu = np.zeros(len(starts), dtype=bool)
    for counter in (
        df["cpu_ns"].to_numpy().astype(np.int64),
        df["user_ns"].to_numpy().astype(np.int64) + df["system_ns"].to_numpy().astype(np.int64),
    ):
        cpu |= np.maximum.reduceat(counter, starts) > np.minimum.reduceat(counter, starts)
    cpu |= np.add.reduceat(run.astype(np.int64), starts) > 0
    out = pd.DataFrame(
        {
            "time_ns": np.add.reduceat(dt, starts),
            # time queued for a CPU after the wake-up is never GIL wait
            "wait_ns": np.add.reduceat(np.where(gil, own_ns(df), 0), starts),
            "cpu": cpu,
        },
        index=pd.MultiIndex.from_arrays(
            [key[starts] >> 32, key[starts] & 0xFFFFFFFF], names=["pid", "tid"]
        ),
    )
    return out


def with_held(out: pd.DataFrame, iv: pd.DataFrame) -> pd.DataFrame:
    """:func:`thread_base`'s figures with ``held_ns`` (from the intervals of
    :func:`gil_intervals`) and ``ran_python``."""
    cols = ["time_ns", "wait_ns", "held_ns", "cpu", "ran_python"]
    out = out.copy()
    held = iv[(iv["locked"] != 0) & (iv["holder"] > 0)]
    by = held.groupby(["pid", "holder"])["dt_ns"].sum()
    by.index = by.index.set_names(["pid", "tid"])
    out["held_ns"] = by.reindex(out.index).fillna(0).to_numpy().astype(np.int64)
    out["ran_python"] = out["cpu"] | (out["wait_ns"] > 0) | (out["held_ns"] > 0)
    return out[cols]


def gil_metrics(
    threads: pd.DataFrame,
    gil: pd.DataFrame | None,
    maps: pd.DataFrame | None,
    period_ns: int,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The GIL figures of a run: the ``gil`` entry of ``circuit summary --json``.

    ``threads``: classified (:func:`classify_gil`), with or without ``dt_ns``
    (``analysis.summary.with_durations``); ``gil``: the run's ``gil`` table
    (None or empty: futex evidence only); ``notes``: ``meta.json``'s
    ``gil_sources`` (why a process has the source it has), optional.

    Per thread that ran Python (held the GIL at a sample, waited for it, or
    used CPU): ``time_s`` (its sampled time), ``wait_s``, ``held_s`` (None
    without the interpreter's state), ``contention`` = wait_s / time_s.  Per
    process: the sums over those threads, contention = Σ wait / Σ time, the
    time the GIL was locked, the interpreter's hand-offs; overall: see
    :func:`combine`.
    """
    pids = python_pids(maps, gil, threads)
    base = thread_base(
        threads[threads["pid"].isin(list(pids))] if len(threads) else threads, period_ns
    )
    waited = python_pids(None, None, threads)
    return gil_metrics_of(
        base, waited, _spans(threads), sample_times(threads), gil, maps, period_ns, notes
    )


def gil_metrics_of(
    base: pd.DataFrame,
    waited: set[int],
    spans_by_pid: dict[int, tuple[int, int]],
    times_by_pid: dict[int, np.ndarray],
    gil: pd.DataFrame | None,
    maps: pd.DataFrame | None,
    period_ns: int,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`gil_metrics` from per-thread parts, which a run read in
    batches of whole threads adds up (analysis/query.py): ``base``
    (:func:`thread_base` of at least the Python processes' threads),
    ``waited`` (processes with a thread seen waiting for the GIL),
    ``spans_by_pid`` (first and last sample time) and ``times_by_pid``
    (:func:`sample_times`)."""
    notes = notes if isinstance(notes, dict) else {}
    pids = python_pids(maps, gil, None) | waited
    sources = gil_sources(pids, gil)
    iv = (
        intervals_of(gil, times_by_pid, period_ns)
        if gil is not None
        else gil_intervals(None, None, period_ns)
    )
    keep = base.index.get_level_values(0).isin(list(pids)) if len(base) else np.zeros(0, bool)
    per = with_held(base[keep], iv)
    per = per[per["ran_python"].to_numpy(dtype=bool)]
    spans = {
        int(p): int(hi - lo) + int(period_ns) for p, (lo, hi) in spans_by_pid.items() if p in pids
    }
    by_pid = {int(p): g for p, g in iv.groupby("pid", sort=False)}
    tp = per.index.get_level_values(0).to_numpy()
    tt = per.index.get_level_values(1).to_numpy()
    time_s = np.round(per["time_ns"].to_numpy() / 1e9, 6)
    wait_s = np.round(per["wait_ns"].to_numpy() / 1e9, 6)
    held_s = np.round(per["held_ns"].to_numpy() / 1e9, 6)
    processes: list[dict[str, Any]] = []
    thread_list: list[dict[str, Any]] = []
    for pid in sorted(pids):
        inter = sources[pid] == INTERPRETER
        rows = [
            {
                "pid": int(pid),
                "tid": int(tid),
                "time_s": float(t),
                "wait_s": float(w),
                "held_s": float(h) if inter else None,
                "contention": _ratio(float(w), float(t)),
            }
            for tid, t, w, h in zip(
                tt[tp == pid], time_s[tp == pid], wait_s[tp == pid], held_s[tp == pid], strict=True
            )
        ]
        thread_list += rows
        entry: dict[str, Any] = {
            "pid": int(pid),
            "source": sources[pid],
            "source_note": notes.get(str(pid)),
            "threads": len(rows),
            "thread_s": round(sum(r["time_s"] for r in rows), 6),
            "wait_s": round(sum(r["wait_s"] for r in rows), 6),
            "sampled_s": _s(spans.get(pid, 0)),
        }
        entry["contention"] = _ratio(entry["wait_s"], entry["thread_s"])
        g = by_pid.get(int(pid))
        if inter and g is not None:
            locked = g["locked"].to_numpy() != 0
            dt = g["dt_ns"].to_numpy()
            sw = np.diff(g["switches"].to_numpy())
            entry["held_s"] = _s(int(dt[locked].sum()))
            entry["held_share"] = _ratio(entry["held_s"], _s(int(dt.sum())))
            # A counter that goes back is a new interpreter (an exec): its
            # count restarts, and skipping that one step loses nothing.
            entry["switches"] = int(np.clip(sw, 0, None).sum())
            entry["counted_s"] = _s(int(g["t_ns"].max() - g["t_ns"].min()))
            entry["switches_per_s"] = (
                round(entry["switches"] / entry["counted_s"], 3) if entry["counted_s"] else None
            )
        else:
            entry.update(
                held_s=None, held_share=None, switches=None, counted_s=None, switches_per_s=None
            )
        processes.append(entry)
    return {**combine(processes), "processes": processes, "threads": thread_list}


def combine(processes: list[dict[str, Any]], pids: Iterable[int] | None = None) -> dict[str, Any]:
    """Overall figures of some processes' entries (all by default), from the
    entries themselves, so that a subset (the bench leaves out its server)
    and the whole are computed alike: ``source`` (``interpreter``,
    ``futex``, ``mixed``; None without a Python process), ``contention`` =
    Σ wait_s / Σ thread_s (None when no thread ran Python) and
    ``switches_per_s`` over the processes whose interpreter was read (None
    when none was)."""
    keep = None if pids is None else {int(p) for p in pids}
    ps = [p for p in processes if keep is None or p["pid"] in keep]
    kinds = {p["source"] for p in ps}
    source = None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
    wait = sum(p["wait_s"] for p in ps)
    time = sum(p["thread_s"] for p in ps)
    read = [p for p in ps if p.get("switches") is not None]
    counted = sum(p["counted_s"] for p in read)
    return {
        "source": source,
        "contention": _ratio(wait, time),
        "switches_per_s": round(sum(p["switches"] for p in read) / counted, 3)
        if counted > 0
        else None,
    }


def _spans(threads: pd.DataFrame) -> dict[int, tuple[int, int]]:
    """Each process's first and last thread sample time."""
    if threads.empty:
        return {}
    g = threads.groupby("pid", observed=True)["t_ns"].agg(["min", "max"])
    return {int(p): (int(r["min"]), int(r["max"])) for p, r in g.iterrows()}


def run_gil(run: Any) -> dict[str, Any]:
    """:func:`gil_metrics` of a loaded run (``circuit.load``), as ``summary()`` has it."""
    from .summary import period_ns

    return gil_metrics(
        run.threads,
        getattr(run, "gil", None),
        getattr(run, "maps", None),
        period_ns(run.meta),
        run.meta.get("gil_sources"),
    )


def holder_note(meta: dict[str, Any], pid: int | None = None) -> str:
    """Why the GIL holder of ``pid`` (of every process: None) is not known."""
    notes = meta.get("gil_sources") or {}
    for p, note in sorted(notes.items()):
        if (pid is None or str(pid) == str(p)) and str(note).startswith(FUTEX + ":"):
            return str(note)[len(FUTEX) + 1 :].strip()
    return (
        "the interpreter's GIL state was not read (a run recorded without it, "
        "or a process whose memory circuit could not read)"
    )


def _s(ns: float) -> float:
    return round(float(ns) / 1e9, 6)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None
