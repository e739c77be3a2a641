"""The GIL from outside, pure parts: the interpreter's image in /proc maps text,
and GIL waits told from lock waits on hand-built frames."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from circuit.analysis.gil import classify_gil
from circuit.tracer.procfs import is_python_image, parse_python_maps
from circuit.tracer.schema import THREAD_FIELDS

MAPS = b"""\
55dcd1aa2000-55dcd1aa3000 r--p 00000000 fe:00 26723  /usr/bin/python3.11
55dcd1aa6000-55dcd1aa7000 rw-p 00003000 fe:00 26723  /usr/bin/python3.11
55dcd2000000-55dcd2100000 rw-p 00000000 00:00 0      [heap]
7f41b1c00000-7f41b1cf5000 r--p 00000000 fe:00 26933  /usr/lib/libpython3.11.so.1.0
7f41b2044000-7f41b2178000 rw-p 00443000 fe:00 26933  /usr/lib/libpython3.11.so.1.0
7f41b2178000-7f41b21a0000 rw-p 00000000 00:00 0
7f41b21a0000-7f41b21b0000 rw-p 00000000 00:00 0
7f41b3000000-7f41b3100000 r-xp 00000000 fe:00 11111  /usr/lib/libc.so.6
"""


def test_parse_python_maps_keeps_the_image_and_its_bss_only() -> None:
    rows = parse_python_maps(MAPS)
    paths = [r[2] for r in rows]
    assert paths == [
        "/usr/bin/python3.11",
        "/usr/bin/python3.11",
        "/usr/lib/libpython3.11.so.1.0",
        "/usr/lib/libpython3.11.so.1.0",
        "/usr/lib/libpython3.11.so.1.0 [bss]",
    ]
    # the bss is the anonymous mapping right after the image, not the next one
    assert rows[-1][:2] == (0x7F41B2178000, 0x7F41B21A0000)
    assert rows[1][3] == "rw-p"


def _maps_by_the_definition(data: bytes) -> list[tuple[int, int, str, str]]:
    """parse_python_maps as its docstring says it, line by line (it skips
    ahead to candidate lines instead: it is read while the target runs)."""
    out: list[tuple[int, int, str, str]] = []
    last_image, last_end = "", -1
    for line in data.decode("utf-8", "backslashreplace").split("\n"):
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition("-")
        try:
            start, end = int(lo, 16), int(hi, 16)
        except ValueError:
            continue
        path = parts[5].strip() if len(parts) == 6 else ""
        if path and is_python_image(path):
            out.append((start, end, path, parts[1]))
            last_image, last_end = path, end
            continue
        if not path and last_image and start == last_end and parts[1].startswith("rw"):
            out.append((start, end, f"{last_image} [bss]", parts[1]))
        last_image, last_end = "", -1
    return out


MAPS_LINES = [
    *MAPS.splitlines(),
    b"7f0-7f1 r--p 0 fe:00 1 /usr/lib/python3.11/site-packages/x.cpython-311-x86_64-linux-gnu.so",
    b"7f1-7f2 r--p 0 fe:00 1 /usr/bin/python3.11 (deleted)",
    b"7f2-7f3 r--p 0 fe:00 1 /opt/mypython/lib.so",
    b"7f3-7f4 r--p 0 fe:00 1 /a/python3 x/y",
    b"7f4-7f5 r--p 0 fe:00 1 /a/b/python3.13t  ",
    b"7f5-7f6 rw-p 0 00:00 0 ",
    b"not a mapping",
    b"zz-yy rw-p 0 0 0",
    b"",
]


def test_parse_python_maps_matches_its_definition_on_any_mix_of_lines() -> None:
    import random

    rnd = random.Random(7)
    for _ in range(20_000):
        lines = [rnd.choice(MAPS_LINES) for _ in range(rnd.randint(0, 10))]
        data = b"\n".join(lines) + rnd.choice([b"", b"\n"])
        assert parse_python_maps(data) == _maps_by_the_definition(data), data
    with open(f"/proc/{os.getpid()}/maps", "rb") as f:  # and a real one
        data = f.read()
    assert parse_python_maps(data) == _maps_by_the_definition(data) != []


@pytest.mark.parametrize(
    ("path", "yes"),
    [
        ("/usr/bin/python3.11", True),
        ("/opt/lib/libpython3.12.so.1.0", True),
        ("python3.13t", True),
        ("/usr/bin/python3.11-config", False),
        ("/usr/lib/libc.so.6", False),
        ("/x/_pythonish.so", False),
    ],
)
def test_is_python_image(path: str, yes: bool) -> None:
    assert is_python_image(path) is yes


def _maps(rows: list[tuple[int, int, int, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(t, pid, lo, hi, "/usr/bin/python3.11", perms) for t, pid, lo, hi, perms in rows],
        columns=["t_ns", "pid", "start", "end", "path", "perms"],
    )


def _threads(rows: list[tuple]) -> pd.DataFrame:
    """rows: (t_ns, pid, tid, wait, arg0, cpu_ns); the other columns get defaults."""
    cols = [c for c, _ in THREAD_FIELDS]
    full = []
    for t, pid, tid, wait, arg0, cpu in rows:
        state = "R" if wait == "running" else "S"
        full.append((t, pid, tid, "t", state, wait, 202, arg0, "", 0, 0, cpu, 0, 0, 0, 0))
    df = pd.DataFrame(full, columns=cols)
    df["wait"] = df["wait"].astype("category")
    return df


def test_classify_gil_by_address_pid_and_snapshot() -> None:
    maps = _maps(
        [
            (0, 1, 1000, 2000, "rw-p"),
            (0, 1, 5000, 6000, "r-xp"),  # not writable: never the GIL
            (100, 1, 3000, 4000, "rw-p"),  # after an exec: new addresses
        ]
    )
    th = _threads(
        [
            (10, 1, 11, "lock", 1500, 0),  # inside the first snapshot: gil
            (10, 1, 12, "lock", 9000, 0),  # heap: lock
            (10, 1, 13, "lock", 5500, 0),  # code mapping: lock
            (10, 2, 21, "lock", 1500, 0),  # another process without maps: lock
            (10, 1, 14, "running", 1500, 0),  # running stays running
            (50, 1, 11, "lock", 3500, 0),  # second snapshot not in effect yet: lock
            (150, 1, 11, "lock", 3500, 0),  # now it is: gil
            (150, 1, 12, "lock", 1500, 0),  # old range no longer valid: lock
        ]
    )
    out = classify_gil(th, maps)
    assert list(out["wait"].astype(str)) == [
        "gil",
        "lock",
        "lock",
        "lock",
        "running",
        "lock",
        "gil",
        "lock",
    ]
    assert list(th["wait"].astype(str)).count("gil") == 0  # input untouched


def test_classify_gil_on_plain_strings_and_on_frames_without_lock_waits() -> None:
    maps = _maps([(0, 1, 1000, 2000, "rw-p")])
    th = _threads([(10, 1, 11, "lock", 1500, 0), (10, 1, 12, "poll", 1500, 0)])
    plain = th.assign(wait=th["wait"].astype(str).astype(object))  # a frame built by hand
    out = classify_gil(plain, maps)
    assert list(out["wait"].astype(str)) == ["gil", "poll"]
    assert list(out["wait"].cat.categories) == ["lock", "poll", "gil"]
    assert list(plain["wait"]) == ["lock", "poll"]
    # No futex wait at all: nothing to classify, no `gil` category appears.
    idle = th[th["wait"] == "poll"].reset_index(drop=True)
    out = classify_gil(idle, maps)
    pd.testing.assert_frame_equal(out, idle)
    assert "gil" not in out["wait"].cat.categories
