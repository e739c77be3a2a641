"""circuit itself SIGKILLed at random moments: the run folder still loads,
holds every sample up to the last flush, and says it was not finalized."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import time

import numpy as np
import pytest

import circuit
from circuit.tracer.loop import FLUSH_INTERVAL_S
from circuit.tracer.parts import read_stream
from tests.support.helpers import CIRCUIT, PY, code, wait_for

pytestmark = pytest.mark.integration

TARGET = """
import sys, threading, time
def spin():
    while True:
        sum(range(1000))
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
time.sleep(float(sys.argv[1]))
"""


def _kill_circuit_at(
    out, delay: float, target_s: float, after: str = "meta.json"
) -> tuple[int, int]:
    """Start ``circuit run``, SIGKILL it ``delay`` s after ``after`` appears in ``out``.

    Returns (kill time on the monotonic clock the sampler uses, start_ns).
    """
    p = subprocess.Popen(
        [*CIRCUIT, "run", "-q", "-o", str(out), "--", PY, "-c", code(TARGET), str(target_s)],
        start_new_session=True,  # one group: circuit and target, for the cleanup
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: any(out.glob(after)), timeout=20)
        time.sleep(delay)
        killed = time.monotonic_ns()
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the orphaned target
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode in (-signal.SIGKILL, 0)  # 0: it had already finished
    return killed, json.loads((out / "meta.json").read_text())["start_ns"]


def _check_run(out, killed_ns: int, start_ns: int) -> None:
    run = circuit.load(out)  # never raises
    finished = run.meta["finalized"]
    if not finished:
        assert any("not finalized" in w for w in run.load_warnings)
    procs, threads = run.processes, run.threads
    assert not [w for w in run.load_warnings if "unreadable" in w]
    # Never a torn file under a real name: a kill inside the final merge can
    # leave a dot-named temp file (ignored by readers), never a bad *.parquet.
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f in out.rglob("*.parquet"):
        pq.read_metadata(f)
    # A kill inside a flush can cut the last batch of a part short, nothing
    # else: every part, of every table, is a stream of whole batches up to its
    # tail (or nothing yet).
    for f in out.rglob("*.arrows"):
        have, _batches, why = read_stream(pa, f)
        assert have is not None or why is None, (f, why)
    if len(procs) == 0:
        # nothing flushed yet: only possible in the first flush interval
        assert not finished
        assert (killed_ns - start_ns) / 1e9 < FLUSH_INTERVAL_S + 1.0
        return
    t = np.sort(procs["t_ns"].unique())
    # every sample up to the last flush is there: no hole in the sequence
    # longer than a stall of the loop (a flush while the target's three
    # spinning threads hold both CPUs of a small machine)
    if len(t) > 1:
        assert np.diff(t).max() < 1.5e9
    # each sample's thread rows came with it
    assert set(threads["t_ns"].unique()) == set(t)
    if not finished:
        # the last kept sample is at most one flush interval (plus a flush) old
        lag = (killed_ns - t[-1]) / 1e9
        assert lag < FLUSH_INTERVAL_S + 1.0, lag
        # the summary's rate comes from the samples (meta.json has none yet)
        if len(t) > 1:
            want = (len(t) - 1) / ((t[-1] - t[0]) / 1e9)
            assert run.summary()["rate_hz"] == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_mid_run(tmp_path, seed):
    delay = random.Random(seed).uniform(0.0, 2.5)
    out = tmp_path / "run"
    killed, start = _kill_circuit_at(out, delay, 30)
    _check_run(out, killed, start)
    assert circuit.load(out).meta["finalized"] is False


@pytest.mark.parametrize("seed", [5, 6])
def test_sigkill_around_the_end(tmp_path, seed):
    # the target ends after ~1 s: the kill may land while circuit finalises
    delay = random.Random(seed).uniform(0.7, 1.5)
    out = tmp_path / "run"
    killed, start = _kill_circuit_at(out, delay, 1.0)
    _check_run(out, killed, start)


def test_killed_run_is_owner_only(tmp_path):
    out = tmp_path / "run"
    _kill_circuit_at(out, 0.0, 30, after="threads.parts/*.arrows")
    assert any(out.glob("*.parts"))
    for p in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
