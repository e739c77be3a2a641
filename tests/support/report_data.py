"""Data for the analysis and report tests: hand-built frames and fake runs,
and real traced runs of a tiny workload under three models."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd

from tests.support.helpers import PY, trace_argv

# A tiny workload under three models.  It names its worker threads with a
# hostile string (Linux keeps the first 15 bytes: "<script>alert(1") so the
# report's escaping is tested on real thread names, and takes the full
# string as a command-line argument.
EVIL = "<script>alert(1)</script>"

WORKLOAD = textwrap.dedent(
    """
    import asyncio, ctypes, sys, threading, time
    import circuit

    model, workload, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    libc = ctypes.CDLL(None)

    def name_me():
        libc.prctl(15, ctypes.c_char_p(sys.argv[4].encode()[:15]), 0, 0, 0)  # PR_SET_NAME

    def job(i):
        circuit.mark("task-start", task=i)
        if workload == "io":
            time.sleep(0.15)
        else:
            n = 0
            for _ in range(400_000):
                n += 1
        circuit.mark("task-end", task=i)

    def threaded(i):
        name_me()
        job(i)

    if model == "sequential":
        for i in range(tasks):
            job(i)
    elif model == "threads":
        ts = [threading.Thread(target=threaded, args=(i,)) for i in range(tasks)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    else:
        async def one(i, port):
            circuit.mark("task-start", task=i)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"x")
            await w.drain()
            await r.read(1)
            w.close()
            circuit.mark("task-end", task=i)

        async def handle(r, w):
            await r.read(1)
            await asyncio.sleep(0.15)
            w.write(b"y")
            await w.drain()
            w.close()

        async def main():
            srv = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            await asyncio.gather(*(one(i, port) for i in range(tasks)))
            srv.close()

        asyncio.run(main())
    """
)


def trace_workload(out: Path, model: str, workload: str, tasks: int) -> dict:
    """Trace WORKLOAD into ``out``; return the run's meta."""
    out.parent.mkdir(parents=True, exist_ok=True)
    script = out.parent / "workload.py"
    if not script.exists():
        script.write_text(WORKLOAD)
    cmd = [PY, str(script), model, workload, str(tasks), EVIL]
    _status, run = trace_argv(cmd, out, rate=200.0, force=True)
    return run.meta


def build_bench(root: Path) -> Path:
    """A bench folder: bench.json + results.csv + one run folder per row."""
    from circuit.analysis.run import load
    from circuit.analysis.summary import summarize_frames

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    plan = [("io", m, n) for m in ("sequential", "threads", "asyncio") for n in (2, 4)]
    plan += [("cpu", m, 2) for m in ("sequential", "threads")]
    for workload, model, tasks in plan:
        rel = f"runs/{workload}-{model}-{tasks}"
        trace_workload(root / rel, model, workload, tasks)
        r = load(root / rel)
        s = summarize_frames(r.meta, r.threads, r.processes, r.procs)
        rows.append(
            {
                "workload": workload,
                "model": model,
                "tasks": tasks,
                "repeat": 0,
                "wall_s": s["wall_s"],
                "cpu_s": s["cpu_s"],
                "parallelism": s["parallelism"],
                "run": rel,
            }
        )
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    (root / "bench.json").write_text(json.dumps({"name": "test bench", "repeats": 1}))
    return root


# -- hand-built runs for unit tests ------------------------------------------------

MS = 1_000_000
T0 = 1_000 * MS


def thread_frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (t_ms, pid, tid, name, state, wait, syscall, cpu_ms, ctx_vol, ctx_invol)."""
    cols = ["t_ms", "pid", "tid", "name", "state", "wait", "syscall", "cpu_ms", "vol", "invol"]
    df = pd.DataFrame(rows, columns=cols)
    return pd.DataFrame(
        {
            "t_ns": T0 + df["t_ms"].astype("int64") * MS,
            "pid": df["pid"].astype("int32"),
            "tid": df["tid"].astype("int32"),
            "name": df["name"].astype("category"),
            "state": df["state"].astype("category"),
            "wait": df["wait"].astype("category"),
            "syscall": df["syscall"].astype("int16"),
            "arg0": 0,
            "wchan": "",
            "user_ns": (df["cpu_ms"] * MS).astype("int64"),
            "system_ns": 0,
            "cpu_ns": (df["cpu_ms"] * MS).astype("int64"),
            "run_delay_ns": 0,
            "ctx_vol": df["vol"].astype("int64"),
            "ctx_invol": df["invol"].astype("int64"),
            "cpu": 0,
        }
    )


def process_frame(rows: list[dict]) -> pd.DataFrame:
    """rows: dicts with t_ms, pid and any fds_<kind> / cpu_ms keys."""
    from circuit.tracer.schema import PROCESS_FIELDS

    out = []
    for r in rows:
        d = {c: 0 for c, _ in PROCESS_FIELDS}
        d.update({k: v for k, v in r.items() if k not in ("t_ms", "cpu_ms")})
        d["t_ns"] = T0 + r["t_ms"] * MS
        d["user_ns"] = int(r.get("cpu_ms", 0) * MS)
        d["fds"] = sum(v for k, v in r.items() if k.startswith("fds_"))
        out.append(d)
    return pd.DataFrame(out, columns=[c for c, _ in PROCESS_FIELDS])


def fake_run(threads: pd.DataFrame, processes=None, marks=None, rate=100.0, **meta):
    from types import SimpleNamespace

    from circuit.tracer.schema import FD_FIELDS, PROC_FIELDS

    m = {
        "format_version": 1,
        "mode": "run",
        "finalized": True,
        "start_ns": T0,
        "rate_hz_achieved": rate,
        "cpus": 2,
        "command": ["python", "app.py"],
        "machine": "x86_64",
        **meta,
    }
    if processes is None:
        processes = process_frame([])
    if marks is None:
        marks = pd.DataFrame({"t_ns": pd.Series(dtype="int64"), "pid": [], "tid": [], "name": []})
    return SimpleNamespace(
        path="hand-built",
        meta=m,
        threads=threads,
        processes=processes,
        fds=pd.DataFrame(columns=[c for c, _ in FD_FIELDS]),
        procs=pd.DataFrame(columns=[c for c, _ in PROC_FIELDS]),
        marks=marks,
        load_warnings=[],
    )


# Two threads of pid 1 taking turns with the GIL.
GIL_ROWS_FOR_BENCH = [
    (0, 1, 1, "t1", "R", "running", -1, 0, 0, 0),
    (0, 1, 2, "t2", "S", "gil", 202, 0, 0, 0),
    (10, 1, 1, "t1", "S", "gil", 202, 10, 0, 0),
    (10, 1, 2, "t2", "R", "running", -1, 0, 0, 0),
]


def gil_table(rows: list[tuple[int, int, int, int, int]]) -> pd.DataFrame:
    """rows: (t_ms, pid, locked, holder, switches) -> a ``gil`` table."""
    from circuit.tracer.schema import GIL_FIELDS

    df = pd.DataFrame(rows, columns=[c for c, _ in GIL_FIELDS])
    df["t_ns"] = T0 + df["t_ns"].astype("int64") * MS
    return df


# The interpreter's view of GIL_ROWS_FOR_BENCH: t1 holds, then t2.
GIL_TABLE_FOR_BENCH = [(0, 1, 1, 1, 1), (10, 1, 1, 2, 2)]
