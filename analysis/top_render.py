"""Draws a live view's model (analysis/live.py): plain text for scripts and
pipes, and a styled rich Text for the terminal (``circuit top``).

Both lay the same columns out at fixed widths.  The terminal view is one
rich Text, not a rich Table: a 45-row table costs ~25 ms to lay out, the
Text ~3 ms, and the view is redrawn twice a second (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from circuit.tracer.waits import WAIT_REASONS

from .style import WAIT_COLORS

SORTS = ("cpu", "wait", "name")
NAME_W = 24
BAR_W = 20
HEAD = f"{'TID':>8}  {'NAME':<{NAME_W}}  {'STATE':<5}  {'WAIT':<8}  {'CPU%':>6}  {'CSW/S':>7}  {'RUNQ%':>6}"
KEYS_HELP = "q quit  s sort  p pause  d dump  ↑↓/jk select"


@dataclass
class Screen:
    """What the terminal view shows beside the model: the sort, the
    selected thread, pause, a message, the stack panel, the height."""

    sort: str = "cpu"
    selected: tuple[int, int] | None = None
    paused: bool = False
    message: str = ""
    stack: list[str] = field(default_factory=list)  # the panel's lines (title first)
    height: int = 50


def thread_name(t: dict[str, Any]) -> str:
    return t.get("python_name") or t.get("name") or ""


def sorted_threads(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """A process's thread rows in the view's order."""
    if sort == "name":
        return sorted(rows, key=lambda t: (thread_name(t).lower(), t["tid"]))
    if sort == "wait":
        order = {w: i for i, w in enumerate(WAIT_REASONS)}
        return sorted(rows, key=lambda t: (order.get(t["wait"], 99), -t["cpu_pct"], t["tid"]))
    return sorted(rows, key=lambda t: (-t["cpu_pct"], t["tid"]))


def order(view: dict[str, Any], sort: str) -> list[tuple[int, int]]:
    """(pid, tid) of every thread row, top to bottom."""
    return [
        (p["pid"], t["tid"])
        for p in view["processes"]
        for t in sorted_threads(p["thread_rows"], sort)
    ]


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def process_line(p: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in p["fds_by_kind"].items())
    return (
        f"pid {p['pid']}  CPU {p['cpu_pct']:.1f}%  threads {p['threads']}  "
        f"fds {p['fds']}{f' ({kinds})' if kinds else ''}  RSS {_mb(p['rss_bytes'])}  "
        f"{_one_line(p['cmdline'])}"
    )


def _one_line(cmd: str, most: int = 120) -> str:
    """A command as one line of the header (a `python -c` script has many)."""
    flat = " ".join(cmd.split())
    return flat if len(flat) <= most else flat[: most - 1] + "…"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def gil_line(g: dict[str, Any] | None) -> str | None:
    if g is None:
        return None
    h = g.get("holder")
    if h is None:
        now = "holder now: unknown (futex evidence only)"
    elif not h["locked"]:
        now = "free now"
    else:
        who = h.get("name")
        now = f"holder now: {who} ({h['tid']})" if who else f"holder now: tid {h['tid']}"
    parts = [now, f"contention {_pct(g.get('contention'))}"]
    if g.get("held_share") is not None:
        parts.append(f"held {_pct(g['held_share'])}")
    if g.get("switches_per_s") is not None:
        parts.append(f"{g['switches_per_s']:.0f} hand-offs/s")
    return "GIL: " + ", ".join(parts) + f" [{g.get('source')}]"


def loop_lines(p: dict[str, Any]) -> list[str]:
    out = []
    for lp in p["loops"]:
        culprit = f"; last culprit {lp['culprit']}" if lp.get("culprit") else ""
        out.append(
            f"loop {lp['name']} ({lp['tid']}): {lp['stalls']} stalls >= {lp['threshold_s']:g} s, "
            f"longest {lp['longest_stall_s']:.2f} s, busy {100 * lp['busy_share']:.0f}%{culprit}"
        )
    return out


def _cells(t: dict[str, Any]) -> str:
    name = thread_name(t)[:NAME_W]
    return (
        f"{t['tid']:>8}  {name:<{NAME_W}}  {t['state']:<5}  {t['wait']:<8}  "
        f"{t['cpu_pct']:>6.1f}  {t['csw_per_s']:>7.1f}  {t['runq_pct']:>6.1f}"
    )


def share_text(shares: dict[str, float], most: int = 4) -> str:
    top = [kv for kv in sorted(shares.items(), key=lambda kv: -kv[1]) if kv[1] >= 0.005][:most]
    return ", ".join(f"{w} {100 * v:.0f}%" for w, v in top)


def header(view: dict[str, Any], title: str) -> str:
    every = view.get("figures_every_s")
    slower = f" (figures every {every:.1f} s)" if every else ""
    return f"{title}: window {view['window_s']:.2f} s at {view['rate_hz']:g} Hz{slower}"


def plain_text(view: dict[str, Any], title: str, sort: str = "cpu") -> str:
    """One snapshot as plain text: every process and every thread."""
    lines = [header(view, title)]
    for p in view["processes"]:
        lines.append(process_line(p))
        g = gil_line(p["gil"])
        if g:
            lines.append("  " + g)
        lines += ["  " + s for s in loop_lines(p)]
        lines.append(f"{HEAD}  SHARE (last {view['window_s']:.1f} s)")
        for t in sorted_threads(p["thread_rows"], sort):
            lines.append(f"{_cells(t)}  {share_text(t['shares'])}")
    if not view["processes"]:
        lines.append("(no traced process in this window)")
    return "\n".join(lines) + "\n"


def _bar(text: Any, shares: dict[str, float]) -> None:
    """A BAR_W-cell bar: one run of cells per wait reason, in its colour."""
    cells = 0
    items = [(w, v) for w, v in shares.items() if v > 0]
    for i, (w, v) in enumerate(items):
        n = BAR_W - cells if i == len(items) - 1 else min(round(v * BAR_W), BAR_W - cells)
        if n > 0:
            text.append("█" * n, style=WAIT_COLORS.get(w, "white"))
            cells += n
    if cells < BAR_W:
        text.append(" " * (BAR_W - cells))


def rich_view(view: dict[str, Any] | None, title: str, screen: Screen) -> Any:
    """The terminal view: as many thread rows as the height leaves room for
    (the selected one kept in sight), the stack panel under them."""
    from rich.text import Text

    text = Text(no_wrap=True, overflow="ellipsis")
    status = f"sort {screen.sort}" + ("  PAUSED" if screen.paused else "")
    if view is None:
        text.append(f"{title}: waiting for the first samples…   {KEYS_HELP}", style="bold")
        return text
    text.append(f"{header(view, title)}  ·  {status}  ·  {KEYS_HELP}\n", style="bold")
    if screen.message:
        text.append(screen.message + "\n", style="bold yellow")
    panel = screen.stack
    room = max(screen.height - 2 - len(panel) - (1 if screen.message else 0), 4)
    lines: list[tuple[str, Any]] = []  # (kind, payload)
    for p in view["processes"]:
        lines.append(("proc", process_line(p)))
        g = gil_line(p["gil"])
        if g:
            lines.append(("info", "  " + g))
        lines += [("loop", "  " + s) for s in loop_lines(p)]
        lines.append(("head", f"{HEAD}  SHARE (last {view['window_s']:.1f} s)"))
        lines += [("row", t) for t in sorted_threads(p["thread_rows"], screen.sort)]
    if len(lines) > room:
        lines = _keep_selected(lines, room, screen.selected)
    legend_room = True
    for kind, payload in lines:
        if kind == "row":
            t = payload
            sel = screen.selected == (t["pid"], t["tid"])
            text.append(_cells(t) + "  ", style="reverse" if sel else "")
            _bar(text, t["shares"])
            text.append(f"  {share_text(t['shares'], most=2)}\n")
        else:
            style = {"proc": "bold cyan", "head": "dim", "loop": "magenta"}.get(kind, "")
            text.append(payload + "\n", style=style)
    if legend_room and screen.height > len(lines) + len(panel) + 3:
        for w in WAIT_REASONS:
            text.append("█", style=WAIT_COLORS[w])
            text.append(f" {w}  ")
        text.append("\n")
    for i, line in enumerate(panel):
        text.append(line + "\n", style="bold" if i == 0 else "")
    text.rstrip()  # no empty last line: a full screen would scroll by one
    return text


def _keep_selected(
    lines: list[tuple[str, Any]], room: int, selected: tuple[int, int] | None
) -> list[tuple[str, Any]]:
    """``room`` of ``lines``, from the top unless the selected row would
    fall off the bottom; then scrolled so that it is the last shown."""
    at = next(
        (i for i, (k, p) in enumerate(lines) if k == "row" and selected == (p["pid"], p["tid"])),
        0,
    )
    start = max(0, at - room + 1)
    return lines[start : start + room]
