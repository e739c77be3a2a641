"""circuit summary RUN [--json]"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="where the time went: CPU, parallelism, states and wait reasons per thread",
        description=(
            "Summarise a run folder: wall vs CPU time, parallelism (CPU seconds per wall "
            "second), per-process peaks (RSS, threads, fds by kind) and per-thread time in "
            "each kernel state and wait reason. Threads are named by their Python name where "
            "a py-spy dump gave one. --json prints the public JSON form. On a terminal the "
            "tables take its full width; piped, lines are as long as their content (nothing "
            "is cut)."
        ),
        epilog=(
            "examples:\n"
            "  circuit summary runs/app                  the tables, on the terminal\n"
            "  circuit summary runs/app | less -S        piped: whole names, one row per line\n"
            "  circuit summary runs/app --json | jq '.threads[] | {tid, python_name, cpu_s}'\n"
            "  circuit report runs/app                   the same figures, explained, as HTML\n"
            "\n"
            "A bench folder (circuit bench) has no single summary: see circuit report BENCH."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder written by circuit run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--loop-threshold",
        type=float,
        default=None,
        metavar="S",
        help="event loop stalls: at least S seconds out of the selector (default: the "
        "run's own --loop-threshold, 0.1 s unless it was set; docs/loops.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuit.commands import load_run

    r = load_run(args.run)
    s = r.summary()
    s["run"] = str(args.run)
    if args.loop_threshold is not None:
        from circuit.analysis.loops import loop_figures
        from circuit.errors import CircuitError

        if not 0 < args.loop_threshold < 3600:
            raise CircuitError(f"--loop-threshold must be positive, got {args.loop_threshold:g}")
        s["loops"] = loop_figures(r.meta, r.threads, r.stacks, args.loop_threshold)
    s["warnings"] = s["warnings"] + r.load_warnings
    if args.json:
        json.dump(s, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(s)
    return 0


def _fmt_waits(d: dict[str, float], total: float) -> str:
    parts = [(k, v) for k, v in d.items() if v > 0]
    parts.sort(key=lambda kv: -kv[1])
    return ", ".join(f"{k} {_pct(v / total)}" for k, v in parts[:3]) if total else ""


def _pct(share: float) -> str:
    # Some time, however little, is not "0%".
    return "<1%" if 0 < share < 0.005 else f"{100 * share:.0f}%"


# Piped output is not cut to a width: long enough for any row we print.
PIPE_WIDTH = 100_000


def _console() -> Any:
    """On a terminal, its full width (cells fold onto more lines, never cut);
    piped, lines as long as their content, so names reach grep and files whole."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, soft_wrap=True)


def _table(title: str, columns: tuple[str, ...]) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def render(s: dict[str, Any]) -> None:
    from rich.markup import escape

    from circuit.analysis.names import display_name

    con = _console()
    cmd = shlex.join(s.get("command") or [])
    ended = f"exit {s['exit_code']}" if s.get("exit_code") is not None else s.get("stop_reason")
    if s.get("exit_signal"):
        ended = f"killed by {s['exit_signal']} (exit {s['exit_code']})"
    con.print(f"[bold]{escape(cmd)}[/bold]  ({s['mode']}, {ended or 'not finalized'})")
    render_findings(con, s.get("findings") or [])
    for p in s.get("profiles") or []:
        files = ", ".join(f"{k} {escape(v)}" for k, v in p.items() if k != "pid")
        con.print(f"py-spy profile of PID {p.get('pid')}: {files}")
    con.print(
        f"wall {s['wall_s']:.3f} s   CPU user {s['cpu_user_s']:.3f} s + system "
        f"{s['cpu_system_s']:.3f} s   parallelism {s['parallelism']:.2f}   "
        f"{s['samples']} samples at {s['rate_hz']:.1f} Hz"
    )
    pt = _table(
        "processes",
        ("pid", "ppid", "CPU s", "RSS peak", "threads", "fds peak", "by kind", "command"),
    )
    for p in s["processes"]:
        kinds = ", ".join(f"{k} {v}" for k, v in p["fds_peak_by_kind"].items() if v)
        pt.add_row(
            str(p["pid"]),
            str(p["ppid"]),
            f"{p['cpu_s']:.3f}",
            f"{p['rss_peak_bytes'] / 2**20:.1f} MiB",
            str(p["threads_peak"]),
            str(p["fds_peak"]),
            escape(kinds),
            escape(p["cmdline"]),
        )
    con.print(pt)
    tt = _table(
        "threads", ("pid", "tid", "name", "CPU s", "ctx vol/invol", "run delay s", "time went to")
    )
    for t in s["threads"]:
        total = sum(t["time_by_wait"].values())
        tt.add_row(
            str(t["pid"]),
            str(t["tid"]),
            escape(display_name(t["name"], t.get("python_name"))),
            f"{t['cpu_s']:.3f}",
            f"{t['ctx_voluntary']}/{t['ctx_involuntary']}",
            f"{t['run_delay_s']:.3f}",
            _fmt_waits(t["time_by_wait"], total),
        )
    con.print(tt)
    line = _exits_line(s)
    if line:
        con.print(escape(line))
    gil = s.get("gil") or {}
    if gil.get("source"):
        con.print(f"GIL (source: {gil['source']}; docs/pyspy.md):")
    for g in gil.get("processes") or []:
        if g["threads"]:
            con.print("  " + escape(_gil_line(g)))
    for line in loop_lines(s.get("loops") or []):
        con.print(escape(line))
    for w in s["warnings"]:
        con.print(f"[yellow]warning:[/yellow] {escape(w)}")


def loop_lines(loops: list[dict[str, Any]]) -> list[str]:
    """The event loops and their stalls, a few lines (docs/loops.md)."""
    if not loops:
        return []
    out = ["event loops (docs/loops.md):"]
    for lp in loops:
        name = f" ({lp['thread_name']})" if lp.get("thread_name") else ""
        n = len(lp["stalls"])
        sat = ", SATURATED" if lp["saturated"] else ""
        out.append(
            f"  PID {lp['pid']} thread {lp['tid']}{name}: busy {100 * lp['busy_share']:.0f}% "
            f"of {lp['observed_s']:.2f} s{sat}; {n} stall{'s' * (n != 1)} of "
            f"{lp['threshold_s']:g} s or more, longest busy stretch {lp['longest_stall_s']:.3f} s"
        )
        for st in lp["stalls"][:10]:
            where = f" in {st['culprit']}" if st.get("culprit") else " (no stack taken during it)"
            out.append(
                f"    at {st['start_s']:.2f} s: blocked {st['duration_s']:.3f} s, "
                f"{st['state']}{where}"
            )
        if n > 10:
            out.append(f"    ... {n - 10} more (circuit summary --json)")
    out.append(f"  asyncio tasks: {loops[0]['tasks']}")
    return out


def _exits_line(s: dict[str, Any]) -> str:
    """What died between samples: seen from its exit records, or missed."""
    source = s.get("exits_source")
    if source is None:
        return ""  # a run from before exit records
    if source == "taskstats":
        line = (
            f"exit records: {s['threads_seen_only_at_exit']} threads and "
            f"{s['processes_seen_only_at_exit']} processes seen only at exit"
        )
        lost = s.get("exit_records_lost")
        if lost:
            line += f"; the kernel dropped records {lost} times (some exits are missing)"
        return line
    missed = s.get("threads_missed_at_most")
    bound = "" if missed is None else f"; at most {missed} threads and processes never seen"
    return f"exit records {source}{bound} (docs/format.md, exits.parquet)"


def _gil_line(g: dict[str, Any]) -> str:
    """One process's GIL figures, and what they rest on."""
    c = "n/a" if g["contention"] is None else f"{g['contention']:.2f}"
    line = (
        f"PID {g['pid']}: contention {c} ({g['threads']} threads ran Python, waited "
        f"{g['wait_s']:.3f} s of {g['thread_s']:.3f} s)"
    )
    if g["source"] == "interpreter":
        line += f", held {g['held_s']:.3f} s ({100 * (g['held_share'] or 0):.0f}% of the time)"
        if g["switches_per_s"] is not None:
            line += f", {g['switches_per_s']:.0f} hand-offs/s"
        note = g.get("source_note")
        return line + (f" [{note}]" if note else " [interpreter]")
    note = g.get("source_note") or "futex: the interpreter's GIL state was not read"
    return line + f"; holder and hand-offs not measured [{note}]"


_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}


def render_findings(con: Any, findings: list[dict[str, Any]], frames: int = 2) -> None:
    """The findings first, one short block each: severity, title, who, the
    numbers, the innermost frames of the stack (docs/findings.md)."""
    from rich.markup import escape

    if not findings:
        con.print("findings: none (docs/findings.md lists what is looked for)")
        return
    con.print(f"[bold]findings[/bold] ({len(findings)}, most severe first):")
    for f in findings:
        style = _SEVERITY_STYLE.get(f["severity"], "")
        who = f"PID {f['pid']}" + (
            f" TID {f['tid']} ({f['thread_name']})" if f.get("tid") is not None else ""
        )
        con.print(
            f"  [{style}]{f['severity'].upper()}[/{style}] {escape(f['title'])}"
            f"\n    {escape(who)}, {f['start_s']:.2f}-{f['start_s'] + f['duration_s']:.2f} s; "
            + escape(", ".join(f"{k} {_short(v)}" for k, v in f["evidence"].items()))
        )
        for r in (f.get("resources") or [])[:3]:
            n = r.get("count", r.get("runnable_s"))
            con.print(f"    {escape(str(r.get('what')))}: {n}")
        for line in f["stack"][:frames]:
            con.print(f"    at {escape(line)}")
        own = f.get("culprit")
        if own and own not in f["stack"][:frames]:
            con.print(f"    ... {escape(own)}")


def _short(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.3g}"
