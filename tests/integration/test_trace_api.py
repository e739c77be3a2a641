"""circuit.trace() / circuit.mark() from a real script."""

from __future__ import annotations

import subprocess

import pytest

import circuit
from tests.support.helpers import PY, code

pytestmark = pytest.mark.integration


def test_trace_context_manager_and_marks(tmp_path):
    out = tmp_path / "t"
    script = code(
        f"""
        import os, threading, time
        import circuit
        with circuit.trace({str(out)!r}, rate=200) as tr:
            circuit.mark("phase", step=1)
            t = threading.Thread(target=time.sleep, args=(0.4,)); t.start(); t.join()
            circuit.mark("done")
        print(os.getpid(), tr.meta["finalized"], flush=True)
        """
    )
    p = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid, finalized = p.stdout.split()
    assert finalized == "True"
    run = circuit.load(out)
    assert run.meta["mode"] == "trace"
    assert run.meta["root_pid"] == int(pid)
    # the helper process samples us but is not part of the traced tree
    assert set(run.processes.pid) == {int(pid)}
    assert list(run.marks.name) == ["phase", "done"]
    assert run.marks.field_step.iloc[0] == 1
    assert str(run.marks.field_step.dtype) == "Int64"  # not 1.0 beside the mark without it
    m0, m1 = run.marks.t_ns
    between = run.threads[(run.threads.t_ns > m0) & (run.threads.t_ns < m1)]
    assert "sleep" in set(between.wait)
    assert run.meta["rate_hz_requested"] == 200


def test_mark_outside_a_trace_is_a_no_op(monkeypatch):
    monkeypatch.delenv("CIRCUIT_RUN_DIR", raising=False)
    circuit.mark("nothing")  # must not raise or write anywhere


def test_marks_from_threads_and_children_under_circuit_run(tmp_path):
    from tests.support.helpers import trace

    _, run = trace(
        tmp_path,
        """
        import subprocess, sys, threading
        import circuit
        ts = [threading.Thread(target=circuit.mark, args=(f"t{i}",)) for i in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        subprocess.run([sys.executable, "-c", "import circuit; circuit.mark('child')"])
        """,
    )
    assert sorted(run.marks.name) == ["child", "t0", "t1", "t2", "t3"]
    assert run.marks.pid.nunique() == 2
    assert run.marks.tid.nunique() == 5


def test_trace_takes_pyspy_dumps_of_the_process_periodic_and_on_demand(tmp_path):
    out = tmp_path / "t"
    script = code(
        f"""
        import os, threading, time
        import circuit
        with circuit.trace({str(out)!r}, dump_interval=0.2):
            t = threading.Thread(target=time.sleep, args=(1.0,), name="napper"); t.start()
            time.sleep(0.3)
            circuit.dump()  # on demand, from the traced script itself
            t.join()
        print(os.getpid(), flush=True)
        """
    )
    p = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    run = circuit.load(out)
    st = run.stacks
    assert set(st.pid) == {int(p.stdout)}, st
    assert {"periodic", "demand"} <= set(st.trigger), st.trigger.value_counts()
    assert "napper" in set(st.thread_name)
    assert run.meta["pyspy"]["failures"] == []


def test_trace_without_pyspy(tmp_path):
    out = tmp_path / "t"
    script = code(
        f"""
        import time
        import circuit
        with circuit.trace({str(out)!r}, pyspy=False):
            time.sleep(0.3)
        """
    )
    p = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    run = circuit.load(out)
    assert run.stacks.empty and "pyspy" not in run.meta
    assert not (out / "pyspy").exists()


def test_a_terminal_ctrl_c_is_for_the_script_not_for_the_helper(tmp_path):
    # A terminal sends SIGINT to its whole foreground process group.  The
    # script catches it and carries on; the trace must carry on too, and a
    # KeyboardInterrupt that leaves the block must not be turned into another
    # exception.
    out = tmp_path / "t"
    script = code(
        f"""
        import os, signal, time
        import circuit
        try:
            with circuit.trace({str(out)!r}, pyspy=False):
                try:
                    os.killpg(0, signal.SIGINT)  # as a terminal's Ctrl-C
                    time.sleep(5)
                except KeyboardInterrupt:
                    print("caught", flush=True)
                t = time.monotonic()
                while time.monotonic() - t < 0.3:
                    pass
                circuit.mark("after")
                os.killpg(0, signal.SIGINT)
                time.sleep(5)
        except KeyboardInterrupt:
            print("left the block", flush=True)
        """
    )
    p = subprocess.run(
        [PY, "-c", script], capture_output=True, text=True, timeout=60, start_new_session=True
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["caught", "left", "the", "block"], p.stdout
    run = circuit.load(out)
    assert run.meta["finalized"] and run.meta["stop_reason"] == "trace() block ended"
    assert list(run.marks.name) == ["after"]
    assert (run.threads.t_ns > run.marks.t_ns.iloc[0]).any()
