"""``circuit top``'s pieces without a target: the drawing, the keys, the
live observer's hand-over, the command line's refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from circuit.analysis.top_render import Screen, order, plain_text, rich_view, sorted_threads
from circuit.cli import main
from circuit.top_terminal import keys as _keys
from circuit.tracer.live import LiveFeed, latest_rows
from circuit.tracer.sink import TickBuffers


def _row(tid: int, name: str, wait: str, cpu: float, **kw) -> dict:
    return {
        "pid": 7,
        "tid": tid,
        "name": name,
        "python_name": kw.get("python_name"),
        "state": "R" if wait == "running" else "S",
        "wait": wait,
        "shares": kw.get("shares", {wait: 1.0}),
        "cpu_pct": cpu,
        "csw_per_s": 1.0,
        "runq_pct": 0.5,
        "last_ns": 0,
    }


def _view(n_extra: int = 0) -> dict:
    rows = [
        _row(11, "python", "running", 99.0, python_name="spinner"),
        _row(12, "python", "sleep", 0.0, python_name="sleeper"),
        _row(13, "python", "lock", 0.0, python_name="locked", shares={"lock": 0.9, "gil": 0.1}),
        _row(14, "python", "poll", 0.2, python_name="poller"),
    ] + [_row(100 + i, f"w{i:03d}", "sleep", 0.0) for i in range(n_extra)]
    return {
        "window_s": 2.0,
        "rate_hz": 100.0,
        "processes": [
            {
                "pid": 7,
                "cmdline": "python app.py",
                "cpu_pct": 99.2,
                "threads": len(rows),
                "rss_bytes": 3 << 20,
                "fds": 4,
                "fds_by_kind": {"file": 2, "epoll": 1, "pipe": 1},
                "gil": {
                    "source": "interpreter",
                    "contention": 0.031,
                    "held_share": 0.97,
                    "switches_per_s": 12.0,
                    "holder": {"tid": 11, "locked": True, "name": "spinner"},
                },
                "loops": [
                    {
                        "pid": 7,
                        "tid": 14,
                        "name": "poller",
                        "stalls": 2,
                        "longest_stall_s": 0.5,
                        "busy_share": 0.4,
                        "culprit": "time.sleep",
                        "threshold_s": 0.1,
                    }
                ],
                "thread_rows": rows,
            }
        ],
    }


def test_plain_text_has_every_figure_and_no_escapes() -> None:
    text = plain_text(_view(), "circuit top: PID 7")
    assert "\x1b" not in text
    assert "pid 7  CPU 99.2%  threads 4  fds 4 (file 2, epoll 1, pipe 1)  RSS 3.0 MB" in text
    assert "holder now: spinner (11), contention 3.1%, held 97.0%, 12 hand-offs/s" in text
    assert "loop poller (14): 2 stalls >= 0.1 s, longest 0.50 s" in text
    lines = text.splitlines()
    locked = next(line for line in lines if " locked " in line).split()
    assert locked[:4] == ["13", "locked", "S", "lock"]
    assert locked[-4:] == ["lock", "90%,", "gil", "10%"]


def test_the_sorts() -> None:
    rows = _view()["processes"][0]["thread_rows"]
    assert [t["tid"] for t in sorted_threads(rows, "cpu")] == [11, 14, 12, 13]
    assert [t["tid"] for t in sorted_threads(rows, "wait")] == [11, 12, 13, 14]
    assert [t["tid"] for t in sorted_threads(rows, "name")] == [13, 14, 12, 11]
    assert order(_view(), "name")[0] == (7, 13)


def test_the_terminal_view_fits_the_height_and_keeps_the_selection_in_sight() -> None:
    from rich.console import Console

    view = _view(n_extra=60)
    screen = Screen(height=20, selected=(7, 150), stack=["stack of w050 (150):", "  f (a.py:1)"])
    con = Console(file=io.StringIO(), width=160, force_terminal=False)
    con.print(rich_view(view, "circuit top: PID 7", screen))
    out = con.file.getvalue().splitlines()
    assert len(out) <= 20
    assert any("w050" in line for line in out)
    assert out[-1].strip() == "f (a.py:1)"
    screen.selected, screen.stack = (7, 11), []
    con = Console(file=io.StringIO(), width=160, force_terminal=False)
    con.print(rich_view(view, "circuit top: PID 7", screen))
    text = con.file.getvalue()
    assert "spinner" in text and "w050" not in text
    assert "holder now: spinner" in text


def test_recomputes_slow_down_to_keep_within_their_cpu_budget() -> None:
    from circuit.top import FIGURES_CPU_SHARE, FIGURES_EVERY_S, LiveView
    from circuit.tracer.options import Options

    view = LiveView(LiveFeed(), 2.0, "t", {}, Options(out=Path(".")), False, False, False)
    view.figures = _view()
    view._pace(5.0)  # the first recompute pays for imports: not counted
    assert view.figures_every == FIGURES_EVERY_S
    view._pace(0.005)  # cheap: the nominal pace
    assert view.figures_every == FIGURES_EVERY_S and view.figures["figures_every_s"] is None
    for _ in range(20):
        view._pace(0.06)
    assert view.figures_every == pytest.approx(0.06 / FIGURES_CPU_SHARE, rel=0.01)
    text = plain_text(view.figures, "circuit top: PID 7")
    assert f"(figures every {0.06 / FIGURES_CPU_SHARE:.1f} s)" in text.splitlines()[0]


def test_keys_and_arrows() -> None:
    assert _keys(b"qS\x1b[A\x1b[Bjk") == ["q", "s", "up", "down", "j", "k"]


def test_the_live_feed_hands_over_batches_and_the_newest_rows() -> None:
    feed = LiveFeed(refresh_s=0.5)
    pending = TickBuffers([], [], [])
    taps: list = []
    feed.start(Path("."), 7)
    feed.watch_sink(pending, taps)
    assert len(taps) == 1
    old, new = ("old",), ("new",)
    pending.thread_batches.extend([(1, [(7, 11, *old)]), (2, [(8, 21)]), (3, [(7, 11, *new)])])
    pending.gil.extend([(1, 7, 1, 11, 5), (3, 7, 0, 11, 6)])
    feed.tick(10**18, [7, 8])
    taps[0]("threads", "batch-1")
    batches, latest, pids = feed.take()
    assert batches == [("threads", "batch-1")] and pids == [7, 8]
    assert latest.threads[7] == (3, [(7, 11, *new)]) and latest.threads[8][0] == 2
    assert latest.gil[7] == (3, 7, 0, 11, 6)
    assert feed.take()[0] == []  # taken once
    feed.tick(10**18 + 1, [8])  # too soon: nothing read
    assert 7 in feed.take()[1].threads
    feed.tick(10**18 + 10**9, [8])
    assert 7 not in feed.take()[1].threads  # gone


def test_latest_rows_reads_from_the_end() -> None:
    threads, gil = latest_rows([(1, [(5, 1)]), (2, []), (3, [(5, 2)])], [])
    assert threads == {5: (3, [(5, 2)])} and gil == {}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["top"], "nothing to watch"),
        (["top", "123", "extra"], "give a PID or a command, not both"),
        (["top", "--window", "0.1", "123"], "must be from 0.5 s"),
    ],
)
def test_user_mistakes_are_one_line(argv, says, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and says in err
    assert "Traceback" not in err


def test_a_many_line_command_is_one_header_line() -> None:
    from circuit.analysis.top_render import process_line

    p = {
        "pid": 7,
        "cpu_pct": 1.0,
        "threads": 1,
        "fds": 3,
        "fds_by_kind": {},
        "rss_bytes": 0,
        "cmdline": "python -c '\nimport time\n" + "x = 1\n" * 100 + "'",
    }
    line = process_line(p)
    assert "\n" not in line and line.endswith("…")
    assert "python -c ' import time x = 1" in line
