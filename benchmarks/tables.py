"""The results tables, rendered from benchmarks/results/*.json, and the docs that show them.

Each benchmark writes ``results/NAME.json`` (every run, every pair) and
``results/NAME.md``, its tables rendered here from that JSON.  The same
rendering sits in docs/performance.md between two markers::

    <!-- results: NAME -->
    ...
    <!-- /results -->

The figures the prose around them quotes come from the same files
(benchmarks/facts.py); tests/unit/test_docs_numbers.py checks both.

Usage:
    python benchmarks/tables.py           # rewrite results/*.md and the tables in the docs
    python benchmarks/tables.py --check   # exit 1 if any of them is not what its JSON gives

Standard library only, so tests and the benchmarks can load it alike.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = (ROOT / "docs" / "performance.md", ROOT / "docs" / "accuracy.md")
BLOCK = re.compile(r"(<!-- results: (\w+) -->\n)(.*?)(<!-- /results -->)", re.S)


# -- formatting, shared with the benchmarks (_common re-exports these) ----------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> tuple[float, float]:
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


def pct(r: float) -> str:
    """A ratio as a signed percentage: 1.013 -> +1.3%."""
    return f"{(r - 1) * 100:+.1f}%"


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cores']} cores ({m['cpu_model'] or 'unknown CPU'}), "
        f"{m['mem_bytes'] / 2**30:.1f} GiB, Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}, load average at start "
        f"{m['loadavg_at_start'][0]:.2f}"
    )


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# -- one renderer per benchmark ---------------------------------------------------

OVERHEAD_HEADERS = [
    "side",
    "job wall s",
    "job wall",
    "job wall min..max",
    "end-to-end wall",
    "job CPU",
    "tool CPU s",
    "start-up ms",
    "circuit sampler CPU (of one core) @ rate",
    "py-spy dumps CPU (of one core)",
    "CPU bound on slowdown",
]


def cpu_bound(s: dict[str, Any], cores: int) -> float:
    """The slowdown circuit can cause at most on busy cores: every CPU-second
    it uses while the job runs is taken from the job, spread over the cores."""
    return 1 + (s["sampler_cpu_share_median"] + s["dump_share_median"]) / cores


def overhead(d: dict[str, Any]) -> str:
    parts = []
    for res in d["results"]:
        rows = []
        for name, s in res["summary"].items():
            lo, hi = s["work_wall_ratio_spread"]
            ours = name.startswith("circuit")
            rows.append(
                [
                    name,
                    f"{s['work_wall_s_median']:.3f}",
                    pct(s["work_wall_ratio_median"]),
                    f"{pct(lo)} .. {pct(hi)}",
                    pct(s["e2e_wall_ratio_median"]),
                    pct(s["job_cpu_ratio_median"]),
                    f"{s['tool_cpu_s_median']:.3f}",
                    f"{s['startup_s_median'] * 1000:.0f}",
                    f"{s['sampler_cpu_share_median'] * 100:.1f}% @ {s['achieved_hz_median']:.0f} Hz"
                    if ours
                    else "",
                    f"{s['dump_share_median'] * 100:.2f}%" if ours else "",
                    pct(cpu_bound(s, res["cores"])) if ours else "",
                ]
            )
        parts.append(
            f"**{res['model']} model** ({d['pairs']} interleaved rounds, medians; ratios are "
            "per round against that round's untraced run)\n\n" + md_table(OVERHEAD_HEADERS, rows)
        )
    return f"Machine: {machine_line(d['machine'])}\n\n" + "\n\n".join(parts)


def sampler_cost(d: dict[str, Any]) -> str:
    a = d["args"]
    rows = [
        [
            c["mode"],
            c["threads"],
            c["backend"],
            f"{c['us_per_thread_sample_median']:.2f}",
            f"{c['us_per_thread_sample_spread'][0]:.2f} .. {c['us_per_thread_sample_spread'][1]:.2f}",
            f"{c['flush_us_per_thread_sample_median']:.2f}",
            f"{c['ms_per_tick_median']:.3f}",
            f"{c['psutil_over_proc_median']:.1f}x" if "psutil_over_proc_median" in c else "",
        ]
        for c in d["cost"]
    ]
    t1 = md_table(
        [
            "target threads",
            "N",
            "backend",
            "µs/thread-sample (tick)",
            "min..max",
            "flush µs/thread-sample",
            "ms/tick",
            "psutil/proc-nots",
        ],
        rows,
    )
    rrows = [
        [
            r["mode"],
            r["threads"],
            r["backend"],
            f"{r['requested_hz']:g}",
            f"{r['achieved_hz_median']:.1f}",
            f"{r['achieved_share_median'] * 100:.1f}%",
            f"{r['missed_median']:g}",
            f"{r['cpu_share_median'] * 100:.1f}%",
            f"{r['cpu_share_spread'][0] * 100:.1f} .. {r['cpu_share_spread'][1] * 100:.1f}%",
        ]
        for r in d["rates"]
    ]
    t2 = md_table(
        [
            "target threads",
            "N",
            "backend",
            "requested Hz",
            "achieved Hz",
            "achieved/requested",
            "missed deadlines",
            "sampler CPU (of one core)",
            "min..max",
        ],
        rrows,
    )
    return (
        f"Machine: {machine_line(d['machine'])}\n\n"
        f"**Cost per thread-sample** ({d['pairs']} interleaved rounds per backend; CPU time of "
        f"the ticks, spaced as at {a['cost_rate']:g} Hz; N target threads + the main thread)"
        "\n\n" + t1 + "\n\n"
        "Backends: *proc* is the /proc path as `circuit run` uses it (as root: idle "
        "processes of 8+ threads checked with one taskstats request); *proc-nots* the same "
        "without taskstats (any user: a batched schedstat read per thread); *-py*: the same "
        "with the Python tick instead of the C one.\n\n"
        f"**Achieved rate and CPU share** (run_loop for {a['rate_seconds']:g} s, "
        f"median of {max(1, d['pairs'] // 2)} runs)\n\n" + t2
    )


def floor(d: dict[str, Any]) -> str:
    runs: dict[str, list[float]] = d["rounds"]
    rows = []
    for key, vals in runs.items():
        if key.startswith("cold|"):
            continue
        what, who, rate = key.split("|")
        us = [v * 1e6 for v in vals]
        lo, hi = spread(us)
        rows.append(
            [
                "waking up only" if what == "sleep" else "a sampling tick",
                who,
                rate,
                f"{median(us):.1f}",
                f"{lo:.1f} .. {hi:.1f}",
                f"{median(us) * int(rate) / 1e4:.2f}%",
            ]
        )
    t1 = md_table(["what", "who", "Hz", "µs CPU per tick", "min..max", "of one core"], rows)
    cold = []
    for gap in ("0.0", "0.001", "0.01"):
        label = "back to back" if not float(gap) else f"after {float(gap) * 1e3:g} ms of sleep"
        row = [label]
        for python in ("True", "False"):
            us = [v * 1e6 for v in runs[f"cold|{gap}|{python}"]]
            lo, hi = spread(us)
            row += [f"{median(us):.1f}", f"{lo:.1f} .. {hi:.1f}"]
        cold.append(row)
    t2 = md_table(
        ["Sampler.tick", "Python tick µs CPU", "min..max", "C tick µs CPU", "min..max"], cold
    )
    prow = [
        [mode, name, f"{c['back to back']:.2f}", f"{c['after 10 ms']:.2f}"]
        for mode, by_name in d["per_file_us"].items()
        for name, c in by_name.items()
    ]
    t3 = md_table(["threads", "file", "µs per pread, back to back", "after 10 ms of sleep"], prow)
    rounds = len(next(iter(runs.values())))
    return (
        f"**Waking up and ticking** ({rounds} interleaved rounds, medians; the "
        "processes-model CPU job keeps both cores busy)\n\n"
        + t1
        + "\n\n**Cold vs hot**: the same tick, CPU of the tick only\n\n"
        + t2
        + "\n\n**Per-file kernel cost** (10 threads; Python's call adds ~0.3 µs)\n\n"
        + t3
        + f"\n\n({machine_line(d['machine'])})"
    )


def merge_cost(d: dict[str, Any]) -> str:
    rows = []
    rounds = 0
    for res in d["results"]:
        n = res["thread_samples"]
        for side, rs in res["runs"].items():
            rounds = max(rounds, len(rs))
            wall = [x["wall_s"] for x in rs]
            rss = [x["peak_rss_mib"] for x in rs]
            lo, hi = spread(wall)
            rows.append(
                [
                    f"{n:,}",
                    side,
                    f"{median(wall):.2f} ({lo:.2f} .. {hi:.2f})",
                    f"{median([x['cpu_s'] for x in rs]):.2f}",
                    f"{median(rss):.0f} ({min(rss):.0f} .. {max(rss):.0f})",
                    f"{median([x['bytes'] for x in rs]) / n:.2f}",
                ]
            )
    table = md_table(
        [
            "thread-samples",
            "merge",
            "wall s (min .. max)",
            "CPU s",
            "peak RSS MiB (min .. max)",
            "bytes/thread-sample",
        ],
        rows,
    )
    return (
        f"**The final merge, at once vs in buckets** ({rounds} interleaved rounds, "
        f"medians; {machine_line(d['machine'])})\n\n" + table
    )


def analysis_cost(d: dict[str, Any]) -> str:
    a, med, report = d["args"], d["median"], d["report"]
    lo, hi = spread([r["load_summary_s"] for r in d["runs"]])
    rows = [
        ["import circuit.analysis (pandas, pyarrow)", f"{med['import_s']:.3f} s", ""],
        ["circuit.load + .threads/.processes", f"{med['load_s']:.3f} s", ""],
        [".summary()", f"{med['summary_s']:.3f} s", ""],
        ["load + summary", f"{med['load_summary_s']:.3f} s ({lo:.3f} .. {hi:.3f})", "< 2 s"],
        [
            "bytes per thread-sample, threads.parquet",
            f"{d['bytes_per_thread_sample']:.2f}",
            "<= 16",
        ],
        [
            "bytes per thread-sample, whole run folder",
            f"{d['run_bytes_per_thread_sample']:.2f}",
            "",
        ],
    ]
    if report is None:
        measured = "not measured (`circuit report` unavailable)"
    elif "median_s" in report:
        measured = f"{report['median_s']:.2f} s"
    else:
        measured = report["error"]
    rows.append(["circuit report (full)", measured, "< 10 s"])
    return (
        f"Machine: {machine_line(d['machine'])}\n\n{d['thread_samples']:,} thread-samples "
        f"({a['procs']} processes x {a['threads']} threads x {a['samples']:,} samples), "
        f"medians of {len(d['runs'])} fresh interpreters\n\n"
        + md_table(["step", "measured", "target"], rows)
    )


def bench_e2e(d: dict[str, Any]) -> str:
    rows = []
    for label, key, target in (
        ("circuit bench (defaults)", "walls_s", "< 120 s"),
        ("circuit demo (bench + sweep + report)", "demo_walls_s", "< 90 s"),
    ):
        walls = d.get(key)
        if walls:
            lo, hi = spread(walls)
            rows.append(
                [label, f"{median(walls):.1f}", f"{lo:.1f} .. {hi:.1f}", len(walls), target]
            )
    return f"Machine: {machine_line(d['machine'])}\n\n" + md_table(
        ["command", "wall s (median)", "min..max", "repeats", "target"], rows
    )


def scale(d: dict[str, Any]) -> str:
    a, s, sp = d["args"], d["median"], d["spread"]
    return f"Machine: {machine_line(d['machine'])}\n\n" + md_table(
        [
            "target",
            "requested Hz",
            "achieved Hz, target up",
            "achieved/requested, target up",
            "missed, target up",
            "achieved Hz, whole run",
            "achieved/requested, whole run",
            "missed, whole run",
            "sampler CPU (of one core)",
            "sampler RSS while sampling MiB",
            "sampler peak RSS (finalising) MiB",
            "runs",
        ],
        [
            [
                f"{a['threads']} idle threads + {a['fds']:,} fds, {a['seconds']:g} s",
                f"{a['rate']:g}",
                f"{s['steady_hz']:.1f} ({sp['steady_hz'][0]:.1f} .. {sp['steady_hz'][1]:.1f})",
                f"{s['steady_share'] * 100:.1f}%",
                f"{s['steady_missed']:g}",
                f"{s['achieved_hz']:.1f} ({sp['achieved_hz'][0]:.1f} .. {sp['achieved_hz'][1]:.1f})",
                f"{s['achieved_share'] * 100:.1f}%",
                f"{s['missed']:g}",
                f"{s['sampler_cpu_share'] * 100:.1f}% ({sp['sampler_cpu_share'][0] * 100:.1f} .. "
                f"{sp['sampler_cpu_share'][1] * 100:.1f})",
                f"{s['sampling_rss_mib']:.0f}",
                f"{s['sampler_peak_rss_mib']:.0f}",
                len(d["runs"]),
            ]
        ],
    )


def gilstate_cost(d: dict[str, Any]) -> str:
    cols = ["interpreter", "locate", "locate ms", "read µs (cached)", "read µs (uncached)"]
    keys = ["exe", "locate", "locate_ms", "read_us_cached", "read_us_uncached"]
    rows = [[str(r.get(k, "")) for k in keys] for r in d["rows"]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(
        ["# GIL state reads (circuit.tracer.gilstate)", "", machine_line(d["machine"]), "", *lines]
    )


def pyspy_triggers(d: dict[str, Any]) -> str:
    names = {
        "no-pyspy": "--no-pyspy",
        "off": "--dump-interval 0 (no automatic dumps)",
        "auto": "default (early, long-wait, exit dumps)",
    }

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    rows = [
        [
            names.get(side, side),
            f"{s['dumps']:g}",
            f"{s['dump_cpu_s']:.3f}",
            f"{s['sampler_cpu_s']:.3f}",
            ms(s["first_dump_ms"]),
            ms(s["latency_ms"]),
            f"{s['waits_covered']} of {s['waits']}",
        ]
        for side, s in d["sides"].items()
    ]
    return (
        f"{d['rounds']} rounds, sides interleaved, medians; each run blocks three named "
        f"threads once for {d['wait_s']:g} s.\n\n"
        + md_table(
            [
                "side",
                "dumps per run",
                "py-spy CPU s",
                "circuit CPU s",
                "first dump ms",
                "dump latency ms",
                "waits with a dump inside",
            ],
            rows,
        )
    )


def exits_cost(d: dict[str, Any]) -> str:
    sides = d["sides"]
    rows = []
    for name in ("listening", "off"):
        s = sides[name]
        lo, hi = s["sampler_cpu_s_spread"]
        rows.append(
            [
                name,
                f"{s['sampler_cpu_s']:.3f} ({lo:.3f} .. {hi:.3f})",
                f"{s['drain_cpu_ms']:.1f}",
                f"{s['records_read']:.0f}",
                f"{s['records_kept']:.0f}",
                f"{s['overflows']:.0f}",
                f"{s['threads_with_cpu']:.0f} of {d['threads']}",
            ]
        )
    lo, hi = d["cpu_ratio_spread"]
    return "\n".join(
        [
            f"**Exit records** ({d['threads']} threads of ~2 ms at 100 Hz; "
            f"{d['pairs']} interleaved pairs, medians)",
            "",
            machine_line(d["machine"]),
            "",
            md_table(
                [
                    "exit records",
                    "circuit CPU s (min .. max)",
                    "drain CPU ms",
                    "records read",
                    "kept",
                    "overflows",
                    "threads with CPU",
                ],
                rows,
            ),
            "",
            f"Listening costs {pct(d['cpu_ratio'])} of circuit's CPU pair by pair "
            f"({pct(lo)} .. {pct(hi)}); {d['drain_us_per_record']:.2f} µs per record read; "
            f"opening the listener (register, then a test thread's record) "
            f"{d['open_ms']:.1f} ms.",
        ]
    )


def sched_truth(d: dict[str, Any]) -> str:
    from sched_tables import render as render_sched  # (its own module: three tables)

    return render_sched(d, machine_line(d["machine"]))


def mutants(d: dict[str, Any]) -> str:
    rows = []
    for m in d["mutants"]:
        caught = [r["tests"] for r in m.get("runs", []) if r["failed"]]
        missed = [r["tests"] for r in m.get("runs", []) if not r["failed"]]
        verdict = (
            "error: " + m["error"] if "error" in m else "killed" if m["killed"] else "SURVIVED"
        )
        rows.append([m["mutant"], m["what"], verdict, ", ".join(caught), ", ".join(missed)])
    table = md_table(["mutant", "what it breaks", "verdict", "failed", "passed"], rows)
    return "\n".join(["# Mutants (benchmarks/mutants.py)", "", table])


CHURN_HEADERS = [
    "side",
    "crawl wall s",
    "connections/s",
    "target wall",
    "target CPU",
    "achieved rate",
    "sampler CPU (of one core)",
]


def churn_cost(d: dict[str, Any]) -> str:
    rows = []
    for name, s in d["summary"].items():
        ours = name != "untraced"
        rows.append(
            [
                name,
                f"{s['work_wall_s_median']:.3f}",
                f"{s['conns_per_s_median']:.0f}",
                pct(s["work_wall_ratio_median"]) if ours else "",
                pct(s["work_cpu_ratio_median"]) if ours else "",
                f"{s['achieved_hz_median']:.1f} Hz ({s['rate_share_median'] * 100:.0f}%)"
                if ours
                else "",
                f"{s['sampler_cpu_share_median'] * 100:.1f}%" if ours else "",
            ]
        )
    bar = d["bar"]
    met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in d["meets_bar"].items())
    scans = [
        [
            name,
            f"{s['fd_scans_per_s_median']:.0f}",
            f"{s['us_per_fd_scan_median']:.0f}",
            f"{s['fd_scan_core_share_median'] * 100:.1f}%",
            f"{s['c_loop_sample_share_median'] * 100:.0f}%",
        ]
        for name, s in d["summary"].items()
        if "fd_scans_per_s_median" in s
    ]
    load = d.get("loadavg_1m")
    load_line = (
        f"; 1-minute load average before each run: median {load['median']:.2f} "
        f"({load['min']:.2f}..{load['max']:.2f})"
        if load
        else ""
    )
    scan_table = (
        "\n\n**fd scans** (medians)\n\n"
        + md_table(
            ["side", "scans/s", "µs CPU per scan", "of one core", "samples in the C loop"],
            scans,
        )
        if scans
        else ""
    )
    return (
        f"Machine: {machine_line(d['machine'])}{load_line}\n\n"
        f"**crawler, {d['threads']} threads, {d['pages']} pages, {d['rate_hz']} Hz, fds scanned** "
        f"({d['pairs']} interleaved rounds, medians; target ratios are per round against "
        "that round's untraced run)\n\n"
        + md_table(CHURN_HEADERS, rows)
        + f"\n\nBar: rate >= {bar['rate_share'] * 100:.0f}%, sampler <= "
        f"{bar['sampler_core_share'] * 100:.0f}% of a core, target within "
        f"{pct(bar['target_ratio'])}. Met: {met}." + scan_table + _churn_baseline(d)
    )


def _churn_baseline(d: dict[str, Any]) -> str:
    c = d["summary"]["circuit"]
    if "sampler_cpu_per_sample_vs_baseline_median" not in c:
        return ""
    lo, hi = c["sampler_cpu_per_sample_vs_baseline_spread"]
    return (
        f"\n\nAgainst `{d['commands']['circuit-baseline'][0]}` (side `circuit-baseline`), "
        "sampler CPU per sample, round by round: median ratio "
        f"{c['sampler_cpu_per_sample_vs_baseline_median']:.2f} ({lo:.2f}..{hi:.2f})."
    )


def socket_copy(d: dict[str, Any]) -> str:
    rows = [
        [name, f"{s['us_per_lookup']:.0f}", f"{s['us_per_socket']:.1f}"]
        for name, s in d["summary"].items()
    ]
    w = d["window"]
    held = (
        f"A copy is held (pidfd_getfd's return to close()'s, perf tracepoints, "
        f"{w['copies']} copies): median {w['median_us']:.1f} µs, 99th percentile "
        f"{w['p99_us']:.1f} µs, longest {w['max_us']:.0f} µs."
        if w
        else "perf was not there: the window was not measured."
    )
    return (
        f"Machine: {machine_line(d['machine'])}; TCP established hash: "
        f"{d['tcp_ehash_buckets']:,} buckets\n\n"
        f"**{d['sockets']} TCP sockets of one process, resolved {d['reps']} times a round** "
        f"({d['rounds']} interleaved rounds, medians)\n\n"
        + md_table(["lookup", "µs per lookup", "µs per socket"], rows)
        + f"\n\n{held}"
    )


def top_cost(d: dict[str, Any]) -> str:
    rows = []
    for r in d["results"]:
        lo, hi = r["view_share_spread"]
        rows.append(
            [
                f"{r['threads']} {r['mode']} threads",
                f"{r['rate_hz']:g} Hz",
                f"{r['view_share_median'] * 100:.2f}%",
                f"{lo * 100:.2f}%..{hi * 100:.2f}%",
                f"{r['top_sampler_share_median'] * 100:.1f}% @ {r['top_hz_median']:.1f} Hz",
                f"{r['attach_sampler_share_median'] * 100:.1f}% @ {r['attach_hz_median']:.1f} Hz",
            ]
        )
    return (
        f"Machine: {machine_line(d['machine'])}\n\n"
        f"**`circuit top PID -o DIR` in a 200x50 terminal, {d['refreshes_per_s']} refreshes a "
        f"second, against `circuit attach PID -o DIR`** ({len(d['results'][0]['rounds']['top'])} "
        f"interleaved rounds of {d['seconds']:g} s after {d['warm_s']:g} s of warm-up, medians; "
        "CPU of one core)\n\n"
        + md_table(
            [
                "target",
                "rate",
                "view CPU",
                "view CPU min..max",
                "top's sampler CPU @ rate held",
                "attach's sampler CPU @ rate held",
            ],
            rows,
        )
    )


def long_runs(d: dict[str, Any]) -> str:
    def wall(r: dict[str, Any]) -> str:
        w = r.get("walls_s")
        span = f" ({min(w):.1f}–{max(w):.1f})" if w and len(w) > 1 else ""
        return f"{r['wall_s']:.1f}{span}"

    rows = [
        [
            f"{d['many']['runs']:,} small run folders: load_many(...).summary()",
            wall(d["many"]),
            f"{max(d['many']['peak_rss_mib'], d['many'].get('children_peak_rss_mib', 0)):.0f}",
            "< 30 s",
        ],
        [
            f"{d['thread_samples']:,} thread-samples: load + summary (batched)",
            wall(d["summary"]),
            f"{d['summary']['peak_rss_mib']:.0f}",
            "< 10 s, < 1 GiB",
        ],
        [
            f"{d['thread_samples']:,} thread-samples: circuit report",
            wall(d["report"]),
            f"{d['report']['peak_rss_mib']:.0f}",
            "< 30 s",
        ],
    ]
    h = d.get("huge")
    if h:
        rows.append(
            [
                f"{h['thread_samples']:,} thread-samples (1 kHz): load + summary (batched)",
                f"{h['wall_s']:.1f}",
                f"{h['peak_rss_mib']:.0f}",
                "< 2 GiB, time reported",
            ]
        )
    return f"Machine: {machine_line(d['machine'])}\n\n" + md_table(
        ["step", "wall s (median, range)", "peak RSS MiB (highest)", "target"], rows
    )


def attach_long(d: dict[str, Any]) -> str:
    a = d["args"]
    rows = [
        ["RSS after the first minute", f"{d['rss_after_1min_mib']:.0f} MiB"],
        ["RSS at the end of sampling", f"{d['rss_end_sampling_mib']:.0f} MiB"],
        ["peak RSS while sampling", f"{d['sampling_peak_mib']:.0f} MiB"],
        ["RSS slope while sampling", f"{d['slope_mib_per_hour']:+.1f} MiB/hour"],
        ["peak RSS of the final merge (polled)", f"{d['merge_rss_peak_polled_mib']:.0f} MiB"],
        ["peak RSS over the whole attach", f"{d['lifetime_peak_mib']:.0f} MiB"],
        ["final merge wall time", f"{d['merge_wall_s']:.1f} s"],
        ["thread-samples written", f"{d['thread_samples']:,}"],
        ["rate achieved (under nice, on a shared machine)", f"{d['achieved_hz']:.1f} Hz"],
    ]
    return (
        f"Machine: {machine_line(d['machine'])}\n\n`circuit attach` for {a['seconds']:.0f} s at "
        f"{a['rate']:.0f} Hz on {a['threads']} threads\n\n" + md_table(["what", "measured"], rows)
    )


def query_engines(d: dict[str, Any]) -> str:
    rows = []
    for side, rs in d["runs"].items():
        wall = [r["wall_s"] for r in rs]
        lo, hi = spread(wall)
        rows.append(
            [
                side,
                f"{median(wall):.2f} ({lo:.2f} .. {hi:.2f})",
                f"{median([r['peak_rss_mib'] for r in rs]):.0f}",
            ]
        )
    dk = d["duckdb"]
    return (
        f"Machine: {machine_line(d['machine'])}\n\n{d['thread_samples']:,} thread-samples, "
        f"each side in a fresh process, {len(next(iter(d['runs'].values())))} interleaved rounds, "
        "medians\n\n"
        + md_table(["side", "wall s (min .. max)", "peak RSS MiB"], rows)
        + f"\n\nduckdb: import {dk['import_s']:.3f} s, installed {dk['installed_mib']:.0f} MiB"
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "top_cost": top_cost,
    "query_engines": query_engines,
    "long_runs": long_runs,
    "attach_long": attach_long,
    "pyspy_triggers": pyspy_triggers,
    "churn_cost": churn_cost,
    "socket_copy": socket_copy,
    "gilstate_cost": gilstate_cost,
    "exits_cost": exits_cost,
    "mutants": mutants,
    "sched_truth": sched_truth,
    "overhead": overhead,
    "sampler_cost": sampler_cost,
    "floor": floor,
    "merge_cost": merge_cost,
    "analysis_cost": analysis_cost,
    "bench_e2e": bench_e2e,
    "scale": scale,
}


def render(data: dict[str, Any]) -> str:
    """The Markdown of one results file (``data["benchmark"]`` names its renderer)."""
    return RENDERERS[data["benchmark"]](data)


def load_results(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """NAME -> the parsed results/NAME.json, for every results file."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


# -- keeping results/*.md and the docs in step with the JSON --------------------------


def fill_tables(text: str, rendered: dict[str, str], where: str) -> str:
    """``text`` with every marked table replaced by its rendering."""

    def block(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in rendered:
            raise SystemExit(f"{where}: no results file for the table {name!r}")
        return m.group(1) + rendered[name] + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def stale(write: bool) -> list[str]:
    """Every results/NAME.md and docs table that differs from its JSON (rewritten if ``write``)."""
    results = load_results()
    rendered = {name: render(d) for name, d in results.items()}
    out = []
    for name, md in rendered.items():
        path = RESULTS / f"{name}.md"
        if not path.exists() or path.read_text() != md + "\n":
            out.append(str(path.relative_to(ROOT)))
            if write:
                path.write_text(md + "\n")
    for doc in DOCS:
        text = doc.read_text()
        new = fill_tables(text, rendered, doc.name)
        if new != text:
            out.append(str(doc.relative_to(ROOT)))
            if write:
                doc.write_text(new)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    a = ap.parse_args()
    changed = stale(write=not a.check)
    for path in changed:
        print(f"{'stale' if a.check else 'rewrote'}: {path}")
    return 1 if a.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
