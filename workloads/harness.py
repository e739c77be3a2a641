"""Run N tasks of a workload under one concurrency model, time it, report it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from circuit.marks import mark

from . import SERVER_MODULE
from .tasks import Params, run_all_async, run_task

BOOT_ENV = "CIRCUIT_WORKLOADS_BOOT"


class WorkloadError(Exception):
    """A failure to report as one line (exit status 1)."""


# ------------------------------------------------------------- interpreter


def interpreter_info() -> dict[str, Any]:
    """Which Python runs this, and whether its GIL is on right now."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return {
        "python": sys.executable,
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "implementation": sys.implementation.name,
        # Builds before 3.13 have no switch: the GIL is always on.
        "gil_enabled": bool(is_enabled()) if is_enabled is not None else True,
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    }


def module_cmd(module: str, args: list[str], python: str | None = None) -> list[str]:
    """Command line running ``module`` under ``python`` (default: this one).

    An interpreter circuit is not installed in gets the package from the
    source folders through ``_boot.py``; once booted that way, children are
    started the same way (the environment variable carries the folders).
    """
    python = python or sys.executable
    boot = os.environ.get(BOOT_ENV)
    if python == sys.executable and not boot:
        return [python, "-m", module, *args]
    if not boot:
        import circuit
        import circuit.workloads

        boot = os.pathsep.join(
            [
                os.path.dirname(os.path.abspath(circuit.__file__)),
                os.path.dirname(os.path.abspath(circuit.workloads.__file__)),
            ]
        )
    here = boot.split(os.pathsep)[1]
    return [python, os.path.join(here, "_boot.py"), boot, module, *args]


# ------------------------------------------------------------------ server


@contextlib.contextmanager
def http_server(latency: float = 0.0) -> Iterator[tuple[str, int]]:
    """Start the loopback server as a child process; yield (url, pid)."""
    try:
        import aiohttp  # noqa: F401
        import requests  # noqa: F401
    except ImportError as e:
        raise WorkloadError(
            f"io-http needs requests and aiohttp, which {sys.executable} cannot import ({e.name})"
        ) from None
    cmd = module_cmd(SERVER_MODULE, ["--port", "0", "--latency", str(latency)])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            raise WorkloadError("the io-http server did not start (see its error above)")
        yield f"http://127.0.0.1:{int(line)}", proc.pid
    finally:
        if proc.stdin:
            proc.stdin.close()  # the server's signal to stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


# ------------------------------------------------------------------ models


def _mp_context() -> Any:
    import multiprocessing as mp

    # fork: children inherit the imported task code. spawn/forkserver would
    # re-import it by name, which an interpreter booted via _boot.py cannot.
    if "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context()


def default_workers(model: str, tasks: int) -> int:
    """Pool size: the library default, capped at the number of tasks."""
    cpus = os.cpu_count() or 1
    if model == "thread-pool":
        return min(tasks, 32, cpus + 4)
    return min(tasks, cpus)


def run_model(model: str, p: Params, workers: int) -> None:
    task = functools.partial(run_task, p)
    n = p.tasks
    if model == "sequential":
        for i in range(n):
            task(i)
    elif model == "threads":
        errors: list[BaseException] = []

        def guarded(i: int) -> None:
            try:
                task(i)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=guarded, args=(i,), name=f"task-{i}") for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    elif model == "thread-pool":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pool") as ex:
            list(ex.map(task, range(n)))
    elif model == "processes":
        ctx = _mp_context()
        procs = [ctx.Process(target=task, args=(i,), name=f"task-{i}") for i in range(n)]
        for pr in procs:
            pr.start()
        for pr in procs:
            pr.join()
        bad = [pr.exitcode for pr in procs if pr.exitcode != 0]
        if bad:
            raise WorkloadError(f"{len(bad)} of {n} task processes failed (exit {bad[0]})")
    elif model == "process-pool":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as ex:
            list(ex.map(task, range(n)))
    elif model == "asyncio":
        import asyncio

        asyncio.run(run_all_async(p))
    elif model == "asyncio-uvloop":
        import asyncio

        import uvloop

        if hasattr(asyncio, "Runner"):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run_all_async(p))
        else:  # Python 3.10
            uvloop.install()
            asyncio.run(run_all_async(p))
    else:
        raise WorkloadError(f"unknown model {model!r}")


# -------------------------------------------------------------------- main


def run(
    workload: str,
    model: str,
    tasks: int,
    scale: float,
    workers: int | None = None,
    latency: float | None = None,
    disk_dir: str | None = None,
) -> dict[str, Any]:
    """Run the workload; return the result record (printed as one JSON line)."""
    workers = workers or default_workers(model, tasks)
    info = interpreter_info()
    mark("workload", workload=workload, model=model, tasks=tasks, scale=scale, **info)
    p = Params(workload=workload, tasks=tasks, scale=scale, latency=latency)
    server_pid: int | None = None
    with contextlib.ExitStack() as stack:
        if workload == "io-http":
            url, server_pid = stack.enter_context(http_server())
            p = Params(workload, tasks, scale, latency=latency, url=url)
        elif workload == "disk":
            d = tempfile.mkdtemp(prefix="circuit-disk-", dir=disk_dir)
            stack.callback(shutil.rmtree, d, ignore_errors=True)
            p = Params(workload, tasks, scale, dir=d)
        cpu0 = os.times()
        mark("tasks-start")
        t0 = time.perf_counter()
        run_model(model, p, workers)
        wall = time.perf_counter() - t0
        mark("tasks-end")
        cpu1 = os.times()
    cpu = sum(cpu1[:4]) - sum(cpu0[:4])  # self and reaped children, user + system
    return {
        "workload": workload,
        "model": model,
        "tasks": tasks,
        "scale": scale,
        "workers": workers if model in ("thread-pool", "process-pool") else None,
        "wall_s": round(wall, 6),
        "cpu_s": round(cpu, 6),
        "pid": os.getpid(),
        "server_pid": server_pid,
        **info,
    }


def emit(result: dict[str, Any], path: str | None) -> None:
    line = json.dumps(result)
    if path:
        with open(path, "w") as f:
            f.write(line + "\n")
    else:
        print(line, flush=True)
