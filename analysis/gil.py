"""GIL metrics from outside the process, at the kernel sampling rate.

Method (docs/pyspy.md has the long version and the validation):

* A thread waiting for the GIL sleeps in ``futex`` on an address inside the
  interpreter's static runtime state (``_PyRuntime``: the writable data/bss
  mapping of the python executable or libpython); a ``threading.Lock`` waiter
  sleeps on a heap address.  The sampler records the futex address (``arg0``)
  and the python image mappings of every process (table ``maps``), so a
  ``lock`` sample whose address falls inside those mappings becomes ``gil``.
* The holder of a process's GIL at a sample is one of its ``running`` threads.
  When exactly one runs, it is the holder.  When several run (a hand-off in
  progress, or a thread runnable but waiting for a CPU), the previous holder
  stays the holder while it still runs ("sticky"), else the lowest tid is
  picked.  Running threads other than the holder count neither as holding
  nor as waiting.
* held_s = the thread's samples as holder; wait_s = its samples in ``gil``;
  contention = wait / (wait + held), 0 when both are 0.
* Holder switches are holder changes between consecutive samples of the
  process (samples without any running thread keep the chain).  That counts
  every switch only when the sampling period is well below the time a holder
  keeps the GIL (5 ms by default): use ``--rate 1000`` for switch rates.

All functions are pure: DataFrames in, DataFrames or dicts out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def gil_ranges(maps: pd.DataFrame) -> pd.DataFrame:
    """The writable python image ranges per (pid, snapshot t_ns)."""
    cols = ["pid", "t_ns", "start", "end"]
    if maps is None or maps.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    w = maps[maps["perms"].astype(str).str[1] == "w"]
    return w[cols].sort_values(["pid", "t_ns", "start"]).reset_index(drop=True)


def python_pids(maps: pd.DataFrame) -> set[int]:
    """Processes that have a python executable or libpython mapped."""
    if maps is None or maps.empty:
        return set()
    return {int(p) for p in maps["pid"].unique()}


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
    gil = np.zeros(len(codes), dtype=bool)
    ranges = gil_ranges(maps)
    if len(ranges):
        addr = threads["arg0"].to_numpy().astype(np.int64).astype(np.uint64)
        pid = threads["pid"].to_numpy()
        t = threads["t_ns"].to_numpy()
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
    if "gil" not in cats:
        cats.append("gil")
    codes = codes.astype(np.int32)  # a copy, wide enough for one more category
    codes[gil] = cats.index("gil")
    out = threads.copy(deep=False)
    out["wait"] = pd.Categorical.from_codes(codes, categories=cats)
    return out


def interval_cpu(threads: pd.DataFrame) -> np.ndarray:
    """CPU ns each thread sample's thread used until its next sample (0 for the last)."""
    return interval_delta(threads, "cpu_ns")


def _by_thread(threads: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The rows' order by (pid, tid, t_ns), and for each row in that order
    whether the next row is of the same thread."""
    pid = threads["pid"].to_numpy().astype(np.int64)
    tid = threads["tid"].to_numpy().astype(np.int64)
    t = threads["t_ns"].to_numpy().astype(np.int64)
    order = np.lexsort((t, tid, pid))
    p, d = pid[order], tid[order]
    same = np.zeros(len(order), dtype=bool)
    same[:-1] = (p[1:] == p[:-1]) & (d[1:] == d[:-1])
    return order, same


def interval_delta(threads: pd.DataFrame, column: str) -> np.ndarray:
    """How much a cumulative counter of each thread sample's thread grew until
    its next sample (0 for the last)."""
    order, same = _by_thread(threads)
    c = threads[column].to_numpy().astype(np.int64)[order]
    out = np.zeros(len(order), dtype=np.int64)
    out[:-1] = np.where(same[:-1], c[1:] - c[:-1], 0)
    res = np.empty_like(out)
    res[order] = out
    return res


# schedstat's CPU time of a thread that stays on a CPU moves only at the
# scheduler's tick (4 ms at HZ=250): at 1 kHz, three intervals in four show
# no CPU for a thread that never stopped running, which read as a thread
# queued behind the GIL holder (two threads hashing GIL-free at 1 kHz came
# out at 0.42 contention).  The GIL accounting reads CPU as a rate over at
# least two ticks: 0.05 there; two threads taking turns 0.49-0.50 at 100 Hz
# and 1 kHz (measured 0.50 inside the target).
CPU_WINDOW_NS = 8_000_000


def interval_cpu_rate(threads: pd.DataFrame, window_ns: int | None = None) -> np.ndarray:
    """CPU ns each thread sample's thread used until its next sample, taken as
    its CPU rate over the ``window_ns`` (at least) from the sample on, times
    the interval (0 for the last).  Equal to :func:`interval_cpu` where
    samples are at least ``window_ns`` apart."""
    window_ns = CPU_WINDOW_NS if window_ns is None else window_ns
    order, same = _by_thread(threads)
    tt = threads["t_ns"].to_numpy().astype(np.int64)[order]
    c = threads["cpu_ns"].to_numpy().astype(np.int64)[order]
    out = np.zeros(len(order), dtype=float)
    starts = np.flatnonzero(np.r_[True, ~same[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        ts, cs = tt[a:b], c[a:b]
        if len(ts) < 2:
            continue
        # the first sample at least window_ns on (or the last), never itself
        j = np.minimum(np.searchsorted(ts, ts + window_ns), len(ts) - 1)
        j = np.maximum(j, np.minimum(np.arange(len(ts)) + 1, len(ts) - 1))
        span = (ts[j] - ts).astype(float)
        rate = np.divide(cs[j] - cs, span, out=np.zeros(len(ts)), where=span > 0)
        dt = np.zeros(len(ts))
        dt[:-1] = ts[1:] - ts[:-1]
        out[a:b] = rate * dt
    res = np.empty_like(out)
    res[order] = out
    return res


def holders(threads: pd.DataFrame, pids: set[int] | None = None) -> pd.DataFrame:
    """The holder timeline: one row per (pid, t_ns) sample of a python process.

    The sample at ``t_ns`` stands for the interval up to the process's next
    sample.  Its holder is the thread that used the most CPU in that interval
    (``cpu_ns`` of the next sample minus this one), if that is at least
    ``MIN_HOLD_SHARE`` of the interval: only the GIL holder executes Python,
    and kernel state ``R`` alone cannot tell the holder from a waiter that
    has just been woken and is queued for a CPU.  Runs without ``cpu_ns``
    (backends without schedstat) fall back to the running threads: a single
    running thread is the holder, among several the previous holder stays.

    Columns: pid, t_ns, holder (tid, -1: nobody ran), dt_ns, waiters
    (threads in ``gil``), resolved (the interval is no longer than
    ``RESOLVED_FACTOR`` x the process's median interval or ``RESOLVED_NS``:
    the sampler kept up;
    a longer one, e.g. a stalled sampler on a loaded machine, hides what
    happened inside it), active (tuple of the tids that used at least
    ``ACTIVE_NS`` of CPU in the interval, most CPU first: more than one means
    the GIL changed hands inside the interval).  ``threads`` must be classified (:func:`classify_gil`).
    """
    cols = ["pid", "t_ns", "holder", "dt_ns", "waiters", "resolved", "active"]
    empty = pd.DataFrame({c: pd.Series(dtype="int64") for c in cols[:-2]}).assign(
        resolved=pd.Series(dtype=bool), active=pd.Series(dtype=object)
    )
    if threads.empty:
        return empty
    df = threads
    if pids is not None:
        df = df[df["pid"].isin(list(pids))]
    if df.empty:
        return empty
    pid = df["pid"].to_numpy().astype(np.int64)
    tid = df["tid"].to_numpy().astype(np.int64)
    t = df["t_ns"].to_numpy().astype(np.int64)
    cpu = df["cpu_ns"].to_numpy().astype(np.int64)
    dcpu = interval_cpu(df)
    wait = df["wait"].astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "pid": pid,
            "tid": tid,
            "t_ns": t,
            "dcpu": dcpu,
            "gil": wait == "gil",
            "run": wait == "running",
        }
    )
    per = frame.groupby(["pid", "t_ns"], sort=True)
    out = per["gil"].sum().rename("waiters").reset_index()
    # a sample stands for the time until the process's next sample
    nxt = out.groupby("pid")["t_ns"].shift(-1)
    gap = (nxt - out["t_ns"]).to_numpy()
    med = np.nanmedian(gap) if np.isfinite(gap).any() else 0.0
    out["dt_ns"] = np.where(np.isfinite(gap), gap, med).astype(np.int64)
    pmed = out.groupby("pid")["dt_ns"].transform("median").to_numpy()
    out["resolved"] = out["dt_ns"].to_numpy() <= np.maximum(RESOLVED_FACTOR * pmed, RESOLVED_NS)
    if (cpu > 0).any():
        best = frame.loc[frame.groupby(["pid", "t_ns"], sort=True)["dcpu"].idxmax()]
        best = best.set_index(["pid", "t_ns"]).reindex(
            pd.MultiIndex.from_frame(out[["pid", "t_ns"]])
        )
        ok = best["dcpu"].to_numpy() >= MIN_HOLD_SHARE * out["dt_ns"].to_numpy()
        # A thread that never leaves the CPU shows CPU only at the scheduler
        # tick (CPU_WINDOW_NS): at 1 kHz, three intervals in four say nobody
        # ran while it ran Python all along.  Where the CPU names nobody, the
        # one thread `running` at the sample holds the GIL, as in runs
        # without cpu_ns (a quarter of a 1 kHz timeline was "nobody" before).
        lone = _lone_running(frame, out)
        holder = pd.Series(np.where(ok, best["tid"].to_numpy(), lone), dtype="float64")
        # Threads wait in `gil` yet nobody ran: the holder was preempted (or
        # blocked briefly) while holding it; the last known holder keeps it,
        # unless it is one of the waiters itself.
        fill = (holder < 0).to_numpy() & (out["waiters"].to_numpy() > 0)
        filled = holder.where(holder >= 0).groupby(out["pid"].to_numpy()).ffill()
        g = frame[frame["gil"]]
        waiting = set(zip(g["pid"], g["t_ns"], g["tid"], strict=True))
        ok_fill = np.array(
            [
                f and h == h and (p, ts, int(h)) not in waiting
                for f, p, ts, h in zip(fill, out["pid"], out["t_ns"], filled, strict=True)
            ],
            dtype=bool,
        )
        holder = holder.where(~ok_fill, filled)
        out["holder"] = holder.fillna(-1).astype(np.int64).to_numpy()
        act = frame[frame["dcpu"] >= ACTIVE_NS].sort_values("dcpu", ascending=False)
        lists = act.groupby(["pid", "t_ns"])["tid"].agg(tuple)
        out["active"] = lists.reindex(pd.MultiIndex.from_frame(out[["pid", "t_ns"]])).to_numpy()
        out["active"] = [a if isinstance(a, tuple) else () for a in out["active"]]
    else:
        out["holder"] = _sticky_running(frame, out)
        out["active"] = [(h,) if h >= 0 else () for h in out["holder"]]
    out["waiters"] = out["waiters"].astype(np.int64)
    return out[cols]


MIN_HOLD_SHARE = 0.1
# A GIL waiter that wakes (every switch interval) to post a drop request uses
# ~10 us of CPU; a thread that held the GIL for part of an interval ran
# Python for longer than this.
ACTIVE_NS = 200_000


def count_switches(active: list[tuple[int, ...]]) -> np.ndarray:
    """The fewest GIL hand-offs consistent with the per-interval active sets, per interval.

    An interval with k active threads had at least k - 1 hand-offs inside
    it; one more happens at its start when the previous interval's last
    holder is not among them.  The last holder of an interval with several
    is taken to be one that is not its first (the order inside an interval
    is unknown: this keeps the count a lower bound).
    """
    out = np.zeros(len(active), dtype=np.int64)
    cur = -1
    for i, s in enumerate(active):
        if not s:
            continue
        n = len(s) - 1
        if cur >= 0 and cur not in s:
            n += 1
        out[i] = n
        if len(s) == 1:
            cur = s[0]
        else:
            first = cur if cur in s else s[0]
            cur = next(x for x in s if x != first)
    return out


def switch_rate(timeline: pd.DataFrame) -> tuple[int, float]:
    """(switches counted, seconds they were counted over) for one process.

    Only intervals that the sampler kept up with count (no longer than
    ``RESOLVED_FACTOR`` x the median interval, and so was the one before):
    when the sampler is starved (a loaded machine) a long gap can hide
    several hand-offs, and the gaps do not depend on the GIL, so leaving
    them out of both the count and the time keeps the rate unbiased.
    """
    dt = timeline["dt_ns"].to_numpy()
    if not len(dt):
        return 0, 0.0
    per = count_switches(list(timeline["active"]))
    ok = timeline["resolved"].to_numpy(dtype=bool)
    ok_prev = np.r_[True, ok[:-1]]
    use = ok & ok_prev
    return int(per[use].sum()), float(dt[use].sum()) / 1e9


RESOLVED_FACTOR = 3.0
# ...or up to this long in any case: a busy sampler alternates bursts of
# short intervals with longer ones, and 10 ms still resolves hand-offs at
# the default 5 ms switch interval to within one per interval.
RESOLVED_NS = 10_000_000


def _lone_running(frame: pd.DataFrame, keys: pd.DataFrame) -> np.ndarray:
    """For each (pid, t_ns) of ``keys``: the tid of its only thread in
    ``running``, or -1 (none, or several)."""
    running = frame[frame["run"]]
    per = running.groupby(["pid", "t_ns"])["tid"].agg(["count", "first"])
    per = per.reindex(pd.MultiIndex.from_frame(keys[["pid", "t_ns"]]))
    lone = (per["count"] == 1).to_numpy()
    return np.where(lone, per["first"].fillna(-1).to_numpy(), -1).astype(np.int64)


def _sticky_running(frame: pd.DataFrame, keys: pd.DataFrame) -> np.ndarray:
    running = frame[frame["run"]].sort_values(["pid", "t_ns", "tid"])
    lists = running.groupby(["pid", "t_ns"])["tid"].agg(list)
    res = np.full(len(keys), -1, dtype=np.int64)
    prev: dict[int, int] = {}
    for i, (p, ts) in enumerate(zip(keys["pid"].to_numpy(), keys["t_ns"].to_numpy(), strict=True)):
        tids = lists.get((p, ts), [])
        if tids:
            h = prev.get(p, -1)
            h = h if h in tids else int(tids[0])
            res[i] = prev[p] = h
    return res


def held_wait(threads: pd.DataFrame, timeline: pd.DataFrame) -> pd.DataFrame:
    """ns holding and waiting for the GIL per (pid, tid): columns ``held``, ``wait``.

    Each thread sample stands for its process's interval to the next sample
    (``timeline``: :func:`holders`).  In an interval that has a holder:

    * held: the thread's share of the CPU used by the threads active in the
      interval (one active thread: all of it; none active: the carried-over
      holder gets it); in an interval without a holder, the CPU it used;
    * wait: the rest of the interval for a thread in ``gil`` at its start, or
      that ran, lost the GIL during it and is in ``gil`` at the next sample;
      the whole interval for a runnable thread that barely ran while another
      thread held the GIL (woken by a GIL release and not yet scheduled: on
      a busy machine a waiter can spend long stretches runnable);
    * a thread running at both ends of an interval in which other threads
      ran too took turns with them: it waited for the GIL for the part of
      the interval it neither ran nor sat in the run queue (schedstat's
      run delay).  Threads taking turns every 5 ms (the switch interval)
      are running at both ends of most 10 ms intervals, and counting that
      remainder as neither put contention ~30% low at 100 Hz.  A thread
      running GIL-free C code beside the holder runs for the whole interval:
      no remainder, no wait.
    """
    df = threads.reset_index(drop=True)
    if df.empty or timeline.empty:
        return pd.DataFrame({"held": pd.Series(dtype=float), "wait": pd.Series(dtype=float)})
    tl = timeline.set_index(["pid", "t_ns"])
    key = pd.MultiIndex.from_arrays(
        [df["pid"].astype("int64"), df["t_ns"].astype("int64")], names=["pid", "t_ns"]
    )
    dt = tl["dt_ns"].reindex(key).to_numpy(dtype=float)
    # Unresolved intervals (a stalled sampler) say nothing reliable; the
    # stalls do not depend on the GIL, so dropping them keeps ratios unbiased.
    dt = np.where(tl["resolved"].reindex(key).fillna(False).to_numpy(dtype=bool), dt, 0.0)
    holder = tl["holder"].reindex(key).fillna(-1).to_numpy().astype(np.int64)
    tid = df["tid"].to_numpy().astype(np.int64)
    dcpu = interval_cpu_rate(df)
    active = dcpu >= ACTIVE_NS
    act_sum = (
        pd.Series(np.where(active, dcpu, 0.0)).groupby([df["pid"], df["t_ns"]]).transform("sum")
    )
    n_act = pd.Series(active.astype(int)).groupby([df["pid"], df["t_ns"]]).transform("sum")
    n_act = n_act.to_numpy()
    share = np.where(active, dcpu / np.maximum(act_sum.to_numpy(), 1.0), 0.0)
    has = holder >= 0
    held = np.where(has & active, dt * share, 0.0)
    held = np.where(has & (n_act == 0) & (holder == tid), dt, held)
    # No clear holder (nobody used 10% of the interval): threads that run
    # Python briefly (woken from I/O) hold the GIL about as long as they use
    # the CPU.
    held = np.where(~has & (dt > 0), np.maximum(dcpu, 0.0), held)
    state = df["wait"].astype(str).to_numpy()
    order, same = _by_thread(df)
    s_o = state[order]
    nxt_o = np.full(len(order), "", dtype=object)
    prv_o = np.full(len(order), "", dtype=object)
    nxt_o[:-1] = np.where(same[:-1], s_o[1:], "")
    prv_o[1:] = np.where(same[:-1], s_o[:-1], "")
    nxt = np.empty(len(df), dtype=object)
    prv = np.empty(len(df), dtype=object)
    nxt[order] = nxt_o
    prv[order] = prv_o
    gil = state == "gil"
    running = state == "running"
    lost = running & active & (n_act >= 2) & (nxt == "gil")
    wait = np.where(has & (gil | lost), dt - held, 0.0)
    turns = running & active & (n_act >= 2) & (nxt == "running")
    if "run_delay_ns" in df.columns:
        queued_ns = np.maximum(interval_delta(df, "run_delay_ns").astype(float), 0.0)
    else:
        queued_ns = np.zeros(len(df))
    wait = np.where(has & turns, np.maximum(dt - dcpu - queued_ns, 0.0), wait)
    queued = running & ~active & (holder != tid)
    wait = np.where(has & queued, dt, wait)
    wait = np.where(~has & gil, dt, wait)
    out = pd.DataFrame({"pid": df["pid"].to_numpy(), "tid": tid, "held": held, "wait": wait})
    return out.groupby(["pid", "tid"])[["held", "wait"]].sum()


def gil_metrics(threads: pd.DataFrame, maps: pd.DataFrame, period_ns: int) -> dict[str, Any]:
    """The ``gil`` entry of ``circuit summary --json``.

    ``threads`` is classified (:func:`classify_gil`) and has ``dt_ns``
    (``analysis.summary.with_durations``).  Returns contention and
    switches_per_s over all python processes, plus per-process and
    per-thread entries.
    """
    pids = python_pids(maps)
    result: dict[str, Any] = {
        "contention": 0.0,
        "switches_per_s": 0.0,
        "processes": [],
        "threads": [],
    }
    if threads.empty or not pids:
        return result
    df = threads[threads["pid"].isin(list(pids))]
    tl = holders(df, pids)
    if tl.empty:
        return result
    per_thread = held_wait(df, tl)
    total_w = total_h = total_span = 0.0
    total_switches = 0
    for pid, ph in tl.groupby("pid", sort=True):
        switches, counted_s = switch_rate(ph)
        pt = per_thread.loc[per_thread.index.get_level_values(0) == pid]
        w_ns, h_ns = float(pt["wait"].sum()), float(pt["held"].sum())
        # the time this process was sampled with the sampler keeping up
        span_s = float(ph["dt_ns"][ph["resolved"]].sum()) / 1e9
        total_w += w_ns
        total_h += h_ns
        total_switches += switches
        total_span += counted_s
        result["processes"].append(
            {
                "pid": int(pid),
                "contention": _ratio(w_ns, h_ns),
                "switches": switches,
                "switches_per_s": round(switches / counted_s, 3) if counted_s > 0 else 0.0,
                "switches_counted_s": round(counted_s, 6),
                "held_s": round(h_ns / 1e9, 6),
                "wait_s": round(w_ns / 1e9, 6),
                "sampled_s": round(span_s, 6),
                "contended_share": round(float((ph["waiters"] > 0).mean()), 4),
            }
        )
    for (pid, tid), r in per_thread.sort_index().iterrows():
        result["threads"].append(
            {
                "pid": int(pid),
                "tid": int(tid),
                "held_s": round(r["held"] / 1e9, 6),
                "wait_s": round(r["wait"] / 1e9, 6),
                "contention": _ratio(r["wait"], r["held"]),
            }
        )
    result["contention"] = _ratio(total_w, total_h)
    result["switches_per_s"] = round(total_switches / total_span, 3) if total_span > 0 else 0.0
    return result


def holder_runs(timeline: pd.DataFrame) -> pd.DataFrame:
    """The holder timeline run-length encoded: one row per (pid, start_ns, end_ns, holder).

    ``timeline`` from :func:`holders`; holder -1: nobody held it.
    """
    rows = []
    for pid, ph in timeline.groupby("pid", sort=True):
        h = ph["holder"].to_numpy()
        t = ph["t_ns"].to_numpy()
        end = t + ph["dt_ns"].to_numpy()
        start = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
        stop = np.r_[start[1:], len(h)] - 1
        rows += [
            (int(pid), int(t[a]), int(end[b]), int(h[a])) for a, b in zip(start, stop, strict=True)
        ]
    return pd.DataFrame(rows, columns=["pid", "start_ns", "end_ns", "holder"])


def _ratio(wait: float, held: float) -> float:
    return round(wait / (wait + held), 4) if wait + held > 0 else 0.0
