"""The tables and quoted figures of benchmarks/results/sched_truth.json.

benchmarks/tables.py renders them (``sched_truth``) into
results/sched_truth.md and docs/accuracy.md; benchmarks/facts.py names the
figures the prose of docs/accuracy.md quotes.  Standard library only.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import median
from typing import Any

PHASES = ("sleepers", "io", "gil", "short", "pool", "main")
TIMED = ("cpu_ns", "ctx_vol", "ctx_invol")  # the last figures the tests assert


def _by_phase(d: dict[str, Any]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """(rate, phase) -> every thread check of every round."""
    out: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for run in d["runs"]:
        for c in run["threads"]:
            out[(run["rate"], c["phase"])].append(c)
    return out


def _inside(c: dict[str, Any], col: str) -> bool:
    lo, hi = c["bounds"][col]
    return lo <= c["circuit"][col] <= hi


def _missed(c: dict[str, Any]) -> int:
    """Switches the thread made after circuit's last row of it."""
    k, m = c["kernel"], c["circuit"]
    return max(0, k["ctx_vol"] + k["ctx_invol"] - m["ctx_vol"] - m["ctx_invol"])


def _sum(cs: list[dict[str, Any]], *keys: str) -> float:
    total = 0.0
    for c in cs:
        v: Any = c
        for k in keys:
            v = v[k]
        total += v
    return total


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _keys(d: dict[str, Any]) -> list[tuple[int, str]]:
    groups = _by_phase(d)
    return [
        (r, p)
        for r in sorted({run["rate"] for run in d["runs"]})
        for p in PHASES
        if (r, p) in groups
    ]


def stats(d: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    """Per (rate, phase), the figures the tables and the prose show."""
    groups = _by_phase(d)
    rows: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for run in d["runs"]:
        for phase, n in run.get("rows_by_phase", {}).items():
            rows[(run["rate"], phase)][0] += n
        for key, n in run.get("rows_outside_by_phase", {}).items():
            phase, _, col = key.partition(".")
            rows[(run["rate"], phase)][2 if col == "run_delay_ns" else 1] += n
    out = {}
    for key in _keys(d):
        cs = groups[key]
        blocked_c, blocked_k = _sum(cs, "blocked_ns", "circuit"), _sum(cs, "blocked_ns", "kernel")
        out[key] = {
            "threads": len(cs),
            "within": sum(all(_inside(c, col) for col in TIMED) for c in cs),
            "delay_within": sum(_inside(c, "run_delay_ns") for c in cs),
            "missed_median": median(_missed(c) for c in cs),
            "missed_max": max(_missed(c) for c in cs),
            "cpu_after_ms": max((c["kernel"]["cpu_ns"] - c["circuit"]["cpu_ns"]) / 1e6 for c in cs),
            "rows": rows[key],
            "running": (
                _sum(cs, "waits_ns", "running", "circuit") / 1e9,
                _sum(cs, "waits_ns", "running", "kernel") / 1e9,
            ),
            "runnable": (
                _sum(cs, "waits_ns", "runnable", "circuit") / 1e9,
                _sum(cs, "waits_ns", "runnable", "kernel") / 1e9,
            ),
            "blocked": (blocked_c / 1e9, blocked_k / 1e9),
            "blocked_diff": blocked_c / blocked_k - 1 if blocked_k else 0.0,
            "off_outside": sum(
                abs(c["blocked_ns"]["circuit"] - c["blocked_ns"]["kernel"])
                > c["blocked_ns"]["tolerance"]
                for c in cs
            ),
            "tolerance_share": _sum(cs, "blocked_ns", "tolerance") / blocked_k
            if blocked_k
            else 0.0,
        }
    return out


def render(d: dict[str, Any], machine: str) -> str:
    s = stats(d)
    hz: dict[int, list[float]] = defaultdict(list)
    for run in d["runs"]:
        hz[run["rate"]].append(run["achieved_hz"])
    rates = ", ".join(
        f"{r} Hz asked, {min(v):.0f}–{max(v):.0f} Hz achieved" for r, v in sorted(hz.items())
    )
    last = _table(
        [
            "rate",
            "phase",
            "threads",
            "CPU and switches within bounds",
            "run delay within (not asserted)",
            "switches after the last sample (median, max)",
            "kernel CPU total minus the last row's (max ms)",
        ],
        [
            [
                f"{r} Hz",
                p,
                x["threads"],
                f"{x['within']}/{x['threads']}",
                f"{x['delay_within']}/{x['threads']}",
                f"{x['missed_median']:g}, {x['missed_max']}",
                f"{x['cpu_after_ms']:.1f}",
            ]
            for (r, p), x in s.items()
        ],
    )
    rows = _table(
        ["rate", "phase", "rows", "CPU or switches outside", "run delay outside (not asserted)"],
        [[f"{r} Hz", p, *x["rows"]] for (r, p), x in s.items()],
    )
    waits = _table(
        [
            "rate",
            "phase",
            "running s (circuit / kernel CPU)",
            "runnable s (circuit / kernel queued)",
            "blocked s (circuit / kernel)",
            "blocked",
            "threads outside 4σ",
            "4σ + edges / blocked",
        ],
        [
            [
                f"{r} Hz",
                p,
                "{:.3f} / {:.3f}".format(*x["running"]),
                "{:.3f} / {:.3f}".format(*x["runnable"]),
                "{:.3f} / {:.3f}".format(*x["blocked"]),
                f"{x['blocked_diff'] * 100:+.1f}%",
                f"{x['off_outside']}/{x['threads']}",
                f"{x['tolerance_share'] * 100:.0f}%",
            ]
            for (r, p), x in s.items()
        ],
    )
    return "\n".join(
        [
            "# Per-thread figures against perf sched (benchmarks/sched_truth.py)",
            "",
            machine,
            "",
            f"{len(d['runs'])} runs ({rates}), phases of {d['seconds']:g} s; sums over every round.",
            "",
            "## Last figures against the kernel's bounds",
            "",
            last,
            "",
            "## Rows over time",
            "",
            rows,
            "",
            "## Time by wait over the sampled span",
            "",
            waits,
        ]
    )


def facts(d: dict[str, Any], f: dict[str, str]) -> None:
    """The figures docs/accuracy.md quotes, as ``sched_truth.*``."""
    s = stats(d)
    for (r, p), x in s.items():
        k = f"sched_truth.{r}.{p}"
        f[f"{k}.blocked_diff"] = f"{x['blocked_diff'] * 100:+.1f}%"
        f[f"{k}.running_ratio"] = (
            f"{x['running'][0] / x['running'][1]:.1f}x" if x["running"][1] else "-"
        )
        f[f"{k}.missed_max"] = str(x["missed_max"])
        f[f"{k}.tolerance_share"] = f"{x['tolerance_share'] * 100:.0f}%"
    for r in sorted({run["rate"] for run in d["runs"]}):
        hz = [run["achieved_hz"] for run in d["runs"] if run["rate"] == r]
        f[f"sched_truth.{r}.achieved"] = f"{min(hz):.0f}–{max(hz):.0f} Hz"
        xs = [x for (rr, _), x in s.items() if rr == r]
        f[f"sched_truth.{r}.threads"] = str(sum(x["threads"] for x in xs))
        f[f"sched_truth.{r}.off_outside"] = str(sum(x["off_outside"] for x in xs))
        f[f"sched_truth.{r}.within"] = str(sum(x["within"] for x in xs))
        f[f"sched_truth.{r}.rows_outside"] = str(
            sum(x["rows"][1] for (rr, p), x in s.items() if rr == r and p != "pool")
        )
    f["sched_truth.runs"] = str(len(d["runs"]))
