"""What every finding kind shares: the :class:`Finding` record, the run's
frames as the kinds read them (:class:`Evidence`), and the Python stacks of a
thread around a moment (:meth:`Evidence.stack_of`).

A kind is a module with ``KIND`` (its name) and ``find(ev) -> list[Finding]``,
a pure function of the frames; ``analysis/findings/__init__.py`` lists the
kinds and ranks what they find (docs/findings.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from ..cols import codes, eq

SEVERITIES = ("critical", "warning", "info")
# A wait this long is worth a stack (the "long wait"); also the least
# time a finding must cost before it is reported at all.
LONG_WAIT_S = 0.1


@dataclass
class Finding:
    """One diagnosis: what, how bad, when, who, the numbers and the code."""

    kind: str
    severity: str
    title: str  # one line, for a human
    start_s: float  # since the run's start (analysis.metrics.start_ns)
    duration_s: float
    pid: int
    tid: int | None
    thread_name: str  # the Python name when a dump has it, else the kernel's comm
    evidence: dict[str, float]  # numbers only
    stack: list[str] = field(default_factory=list)  # "func (file:line)", innermost first
    threads: list[int] = field(default_factory=list)  # the other tids involved
    stacks: dict[str, list[str]] = field(default_factory=dict)  # e.g. {"holder": [...]}
    resources: list[dict[str, Any]] = field(default_factory=list)  # paths, peers, counts
    lost_s: float = 0.0  # the time it cost: ranks findings of one severity
    culprit: str = ""  # the stack's innermost frame of the program's own code

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "start_s": round(float(self.start_s), 3),
            "duration_s": round(float(self.duration_s), 3),
            "pid": int(self.pid),
            "tid": None if self.tid is None else int(self.tid),
            "thread_name": self.thread_name,
            "evidence": {k: _num(v) for k, v in self.evidence.items()},
            "stack": list(self.stack),
            "threads": [int(t) for t in self.threads],
            "stacks": {k: list(v) for k, v in self.stacks.items()},
            "resources": list(self.resources),
            "lost_s": round(float(self.lost_s), 3),
            "culprit": self.culprit,
        }


def _num(v: float) -> float | int:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return round(float(v), 4)


def severity_of(share: float, warning: float, critical: float) -> str:
    """``critical`` at or above ``critical``, ``warning`` at or above ``warning``."""
    if share >= critical:
        return "critical"
    if share >= warning:
        return "warning"
    return "info"


def frame_str(f: dict[str, Any]) -> str:
    from pathlib import PurePath

    return f"{f.get('name')} ({PurePath(str(f.get('file') or '?')).name}:{f.get('line')})"


# Python frames that say a thread is waiting for work or for an event, not
# stuck behind someone else's lock: the standard library's pools and queues.
_IDLE_FILES = ("threading.py", "queue.py", "thread.py", "process.py", "queues.py", "pool.py")
_IDLE_DIRS = ("concurrent/futures", "multiprocessing", "asyncio", "selectors.py")


def culprit(frames: list[dict[str, Any]]) -> str | None:
    """The innermost frame of the program's own code (not the standard
    library's or an installed package's: under ``lib/pythonX.Y/``), else the
    innermost frame; None without frames."""
    for f in frames:
        path = str(f.get("file") or "")
        if "/lib/python" not in path and not path.startswith("<frozen"):
            return str(f.get("name"))
    return str(frames[0].get("name")) if frames else None


def culprit_line(frames: list[dict[str, Any]]) -> str:
    """:func:`culprit`'s frame as a stack line ("" without frames)."""
    name = culprit(frames)
    for f in frames:
        if str(f.get("name")) == name:
            return frame_str(f)
    return ""


def is_idle_stack(frames: list[dict[str, Any]]) -> bool:
    """The innermost frame is a standard library pool, queue or event wait."""
    if not frames:
        return False
    f = str(frames[0].get("file") or "")
    return f.endswith(_IDLE_FILES) or any(d in f for d in _IDLE_DIRS)


class Evidence:
    """A run's frames as the finding kinds read them, with what they share
    computed once: the sampling period, time zero, the samples with their
    durations, names."""

    def __init__(
        self,
        meta: dict[str, Any],
        threads: pd.DataFrame,
        processes: pd.DataFrame,
        fds: pd.DataFrame | None = None,
        stacks: pd.DataFrame | None = None,
        gil: pd.DataFrame | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        from .. import metrics as M

        self.meta = meta
        self.threads = threads  # classified: futex waits on the GIL say `gil`
        self.processes = processes
        self.fds = fds if fds is not None else pd.DataFrame()
        self.stacks = stacks if stacks is not None else pd.DataFrame()
        self.gil = gil
        self.summary = summary or {}
        self.period = M.run_period(meta)
        self.t0 = M.start_ns(meta, threads, processes)
        cpus = meta.get("cpus")
        self.cpus = int(cpus) if cpus else None

    @cached_property
    def span(self) -> tuple[int, int, int]:
        """The samples' first ``t_ns``, last end (``t_ns + dt_ns``) and last
        midpoint (``t_ns + dt_ns // 2``)."""
        s = self.samples
        if s.empty:
            return 0, 0, 0
        t = s["t_ns"].to_numpy().astype(np.int64)
        dt = s["dt_ns"].to_numpy().astype(np.int64)
        return int(t.min()), int((t + dt).max()), int((t + dt // 2).max())

    @cached_property
    def cpu_bins(self) -> dict[str, Any] | None:
        """CPU demand in the cpu finding's bins (findings/cpu.py, ``bins_of``)."""
        from .cpu import bins_of

        if self.samples.empty:
            return None
        bins, self.__dict__["queued"] = bins_of(self.samples, self.span[0])
        return bins

    @cached_property
    def queued(self) -> pd.DataFrame:
        """Queued ns per (pid, tid, bin) of :attr:`cpu_bins`."""
        from .cpu import bins_of

        return bins_of(self.samples, self.span[0])[1]

    def queued_rows(self, pid: int, tid: int) -> pd.DataFrame:
        """One thread's samples queued for a CPU (t_ns, dt_ns)."""
        s = self.samples
        mine = s[(s["pid"] == pid) & (s["tid"] == tid)]
        return mine[eq(mine["wait"], "runnable")][["t_ns", "dt_ns"]]

    @cached_property
    def lock_waits(self) -> Any:
        """The lock rows as the lock-contention finding reads them
        (findings/lock_waits.py)."""
        from .lock_waits import of_frame

        return of_frame(self.samples, self.stacks)

    @cached_property
    def time_of(self) -> pd.Series:
        """Each thread's sampled time, ns, by (pid, tid)."""
        return self.samples.groupby(["pid", "tid"])["dt_ns"].sum()

    def rows_near(self, pid: int, first: int, last: int) -> pd.DataFrame:
        """The samples of ``pid`` from ``first`` to ``last`` (all of its
        samples when none lies there), with their CPU counters."""
        s = self.samples
        mine = s[(s["pid"] == pid) & (s["t_ns"] >= first) & (s["t_ns"] <= last)]
        return mine if len(mine) else s[s["pid"] == pid]

    @cached_property
    def samples(self) -> pd.DataFrame:
        """Thread rows with ``dt_ns``, each row's runnable time a row of its
        own (wait ``runnable``: summary.with_durations, runnable.split_rows)."""
        from ..runnable import split_rows
        from ..summary import with_durations

        if self.threads.empty:
            return self.threads.assign(dt_ns=pd.Series(dtype="int64"))
        return split_rows(with_durations(self.threads, self.period))

    @cached_property
    def py_names(self) -> dict[tuple[int, int], str]:
        from ..pyspy import thread_names

        return thread_names(self.stacks) if len(self.stacks) else {}

    @cached_property
    def comms(self) -> dict[tuple[int, int], str]:
        if self.threads.empty:
            return {}
        last = self.threads.drop_duplicates(["pid", "tid"], keep="last")
        return {
            (int(p), int(t)): str(n)
            for p, t, n in zip(last["pid"], last["tid"], last["name"], strict=True)
        }

    def name(self, pid: int, tid: int | None) -> str:
        if tid is None:
            return ""
        key = (int(pid), int(tid))
        return self.py_names.get(key) or self.comms.get(key, "")

    def rel(self, t_ns: float) -> float:
        return (float(t_ns) - self.t0) / 1e9

    def stack_of(
        self,
        pid: int,
        tid: int,
        spans: list[tuple[int, int]],
        prefer: Any = None,
        nearest: bool = True,
    ) -> list[dict[str, Any]]:
        """The frames of ``tid`` in a dump taken during one of ``spans``
        ([start_ns, end_ns) pairs: the thread's waits), else in its dump
        nearest to them; [] when no dump of the thread has frames.

        A dump lies within a span when it started and was collected inside it.
        Among several, ``prefer(frames) -> bool`` picks the first that
        satisfies it, then the longest span's dump. ``nearest=False``: only a
        dump within a span."""
        s = self.stacks
        if s.empty or not spans:
            return []
        mine = s[(s["pid"] == pid) & (s["tid"] == tid)]
        mine = mine[mine["frames"].map(lambda f: bool(f))]
        if mine.empty:
            return []
        t, e = mine["t_ns"].to_numpy(), mine["end_ns"].to_numpy()
        inside: list[tuple[int, int]] = []  # (span length, row)
        for a, b in spans:
            hit = np.flatnonzero((t >= a) & (e <= b))
            inside += [(b - a, int(i)) for i in hit]
        if inside:
            inside.sort(key=lambda x: -x[0])
            rows = [mine.iloc[i]["frames"] for _, i in inside]
            if prefer is not None:
                for fr in rows:
                    if prefer(fr):
                        return list(fr)
            return list(rows[0])
        if not nearest:
            return []
        mid = np.array([(a + b) / 2 for a, b in spans])
        ta = (t + e) / 2
        dist = np.abs(ta[:, None] - mid[None, :]).min(axis=1)
        return list(mine.iloc[int(np.argmin(dist))]["frames"])

    def holder_stack(self, pid: int, spans: list[tuple[int, int]]) -> tuple[int | None, list]:
        """A dump of ``pid`` taken during ``spans`` in which a thread owned the
        GIL: (its tid, its frames); (None, []) when no dump shows one."""
        s = self.stacks
        if s.empty:
            return None, []
        own = s[(s["pid"] == pid) & s["owns_gil"].astype(bool)]
        own = own[own["frames"].map(lambda f: bool(f))]
        if own.empty:
            return None, []
        t, e = own["t_ns"].to_numpy(), own["end_ns"].to_numpy()
        for a, b in sorted(spans, key=lambda ab: ab[0] - ab[1]):
            hit = np.flatnonzero((t >= a) & (e <= b))
            if len(hit):
                r = own.iloc[int(hit[0])]
                return int(r["tid"]), list(r["frames"])
        return None, []


def stack_lines(frames: list[dict[str, Any]]) -> list[str]:
    return [frame_str(f) for f in frames]


def spans_of(rows: pd.DataFrame) -> list[tuple[int, int]]:
    return [
        (int(a), int(b))
        for a, b in zip(rows["start_ns"].to_numpy(), rows["end_ns"].to_numpy(), strict=True)
    ]


def wait_intervals(samples: pd.DataFrame, reasons: tuple[str, ...]) -> pd.DataFrame:
    """Each thread's uninterrupted waits for one of ``reasons`` on one first
    argument: pid, tid, wait, arg0, syscall (at its first sample), start_ns,
    end_ns, dur_ns.

    Like metrics.state_intervals, but split where the syscall's first
    argument changes (another fd, another futex) and only for ``reasons``.
    ``samples`` have ``dt_ns`` (Evidence.samples), sorted by thread and time."""
    cols = ["pid", "tid", "wait", "arg0", "syscall", "start_ns", "end_ns", "dur_ns"]
    if samples.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    wait, cats = codes(samples["wait"])
    # (columns as stored, not widened: this runs on millions of kept rows)
    pid = samples["pid"].to_numpy()
    tid = samples["tid"].to_numpy()
    arg0 = (
        samples["arg0"].to_numpy()
        if "arg0" in samples.columns
        else np.zeros(len(samples), np.int64)
    )
    t = samples["t_ns"].to_numpy().astype(np.int64, copy=False)
    dt = samples["dt_ns"].to_numpy().astype(np.int64, copy=False)
    n = len(wait)
    new = np.ones(n, dtype=bool)
    # A row that does not start where the one before it ended starts a wait
    # too: the samples tile each thread's time, and a frame that kept only
    # some rows (analysis/query.py) must not join waits across a gap.
    new[1:] = (
        (pid[1:] != pid[:-1])
        | (tid[1:] != tid[:-1])
        | (wait[1:] != wait[:-1])
        | (arg0[1:] != arg0[:-1])
        | (t[1:] != t[:-1] + dt[:-1])
    )
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, n - 1]
    keep = np.isin(wait[starts], [i for i, c in enumerate(cats) if c in reasons])
    starts, ends = starts[keep], ends[keep]
    out = pd.DataFrame(
        {
            "pid": pid[starts].astype(np.int64),
            "tid": tid[starts].astype(np.int64),
            # (object, not inferred to str: millions of rows for a long run)
            "wait": pd.Series(np.array(cats, dtype=object)[wait[starts]], dtype=object),
            "arg0": arg0[starts].astype(np.int64),
            "syscall": samples["syscall"].to_numpy()[starts]
            if "syscall" in samples.columns
            else np.full(len(starts), -1),
            "start_ns": t[starts],
            "end_ns": t[ends] + dt[ends],
        }
    )
    out["dur_ns"] = out["end_ns"] - out["start_ns"]
    return out
