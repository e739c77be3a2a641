"""What changed most between a baseline run and another, in words.

Every candidate change gets a score between 0 and 1, so that unlike figures
can be ranked against each other (docs/compare.md, "What changed most"):

* **time by wait reason** (running and runnable included): the change in
  thread-seconds in that reason over the larger of the two runs' total
  thread time, ``|b - a| / max(T_a, T_b)``: a move of the whole run's
  thread time from one reason to another scores 1 for each;
* **shares** (GIL contention, the busiest event loop's busy share): the
  absolute difference, ``|b - a|``;
* **quantities** (wall time, CPU time, threads, processes, peak RSS, peak
  fds, context switches per second, run-queue delay, the longest loop
  stall): ``1 - smaller / larger``, so twice as long and half as long both
  score 0.5, and a quantity that appears from zero scores 1;
* **findings**: a kind that appeared or disappeared scores its worst
  severity's weight (critical 0.9, warning 0.5, info 0.1); one whose
  severity changed, half that.

When the wait reason that lost the most thread time and the one that gained
the most (running and runnable aside) are both notable, they are said as one
change, "its waiting moved from A to B", scored as the larger of the two.

Changes below :data:`NOTABLE` (0.05) are not called out: a run compared with
itself scores 0 everywhere.  Quantities also need an absolute floor
(:data:`FLOORS`) so that 2 ms against 1 ms of CPU is not "twice as much".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from circuit.tracer.waits import WAIT_REASONS

NOTABLE = 0.05
# quantity key -> (words, unit, floor: the larger value must reach it)
QUANTITIES: dict[str, tuple[str, str, float]] = {
    "wall_s": ("wall time", "s", 0.01),
    "cpu_s": ("CPU time", "s", 0.01),
    "threads": ("threads", "", 1),
    "processes": ("processes", "", 1),
    "rss_peak_mib": ("peak RSS", "MiB", 1.0),
    "fds_peak": ("peak open fds", "", 1),
    "ctx_per_s": ("context switches per second", "", 10.0),
    "run_delay_s": ("run-queue delay", "thread-s", 0.01),
    "loop_longest_stall_s": ("the longest event-loop stall", "s", 0.001),
}
SHARES: dict[str, str] = {
    "gil_contention": "GIL contention",
    "loop_busy_share": "the busiest event loop's busy share",
}
SEVERITY_WEIGHT = {"critical": 0.9, "warning": 0.5, "info": 0.1}
# Wait reasons under this many thread-seconds in both runs are not compared
# (one sample at 100 Hz is 0.01 s).
WAIT_FLOOR_S = 0.01


@dataclass(frozen=True)
class Change:
    score: float
    metric: str
    text: str  # what the other run does differently, as a phrase


def _fmt(x: float, unit: str) -> str:
    if unit in ("", "count"):
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    digits = 3 if abs(x) < 10 else 1
    return f"{x:.{digits}f} {unit}".rstrip()


def quantity_score(a: float, b: float) -> float:
    """1 - smaller / larger: 0 for equal values, 0.5 for twice, 1 from zero."""
    if math.isnan(a) or math.isnan(b):
        return 0.0
    hi, lo = max(abs(a), abs(b)), min(abs(a), abs(b))
    return 0.0 if hi == 0 else 1.0 - lo / hi


def wait_score(a: float, b: float, total_a: float, total_b: float) -> float:
    """|b - a| over the larger run's total thread time."""
    t = max(total_a, total_b)
    return abs(b - a) / t if t > 0 else 0.0


def _verb(w: str) -> str:
    return {"running": "runs", "runnable": "waits for a CPU"}.get(w, f"waits in `{w}`")


def _wait_phrase(w: str, a: float, b: float) -> str:
    v = _verb(w)
    span = f"({a:.3f} -> {b:.3f} thread-s)"
    if a == 0:
        return f"{v} {b:.3f} thread-s where the baseline did not"
    if b == 0:
        return f"no longer {v} {span}"
    if b < a:
        return f"{v} {100 * (1 - b / a):.0f}% less {span}"
    return f"{v} {b / a:.1f}x as long {span}"


def _quantity_phrase(words: str, unit: str, a: float, b: float) -> str:
    span = f"({_fmt(a, unit)} -> {_fmt(b, unit)})"
    if unit == "" and a != b:
        return f"{words} {'rose' if b > a else 'fell'} from {_fmt(a, unit)} to {_fmt(b, unit)}"
    if a == 0:
        return f"{words} {_fmt(b, unit)} where the baseline had none"
    if b < a:
        return f"{words} {100 * (1 - b / a):.0f}% lower {span}"
    return f"{words} {b / a:.1f}x {span}"


def changes(
    base: dict[str, float],
    other: dict[str, float],
    base_findings: list[dict[str, Any]] | None = None,
    other_findings: list[dict[str, Any]] | None = None,
) -> list[Change]:
    """Every scored change from ``base`` to ``other`` (figures from
    :func:`circuit.analysis.compare.figures`), largest first; ties keep the
    order of the rule list above."""
    out: list[Change] = []
    ta, tb = base.get("thread_s", 0.0), other.get("thread_s", 0.0)
    waits: list[tuple[str, float, float, float]] = []
    for w in WAIT_REASONS:
        a, b = base.get(f"wait_{w}_s", 0.0), other.get(f"wait_{w}_s", 0.0)
        if max(a, b) < WAIT_FLOOR_S:
            continue
        waits.append((w, a, b, wait_score(a, b, ta, tb)))
    out += _wait_changes(waits)
    for key, words in SHARES.items():
        a, b = base.get(key, math.nan), other.get(key, math.nan)
        if math.isnan(a) or math.isnan(b):
            continue
        verb = "rose" if b > a else "fell"
        out.append(Change(abs(b - a), key, f"{words} {verb} from {a:.2f} to {b:.2f}"))
    for key, (words, unit, floor) in QUANTITIES.items():
        a, b = base.get(key, math.nan), other.get(key, math.nan)
        if math.isnan(a) or math.isnan(b) or max(abs(a), abs(b)) < floor:
            continue
        out.append(Change(quantity_score(a, b), key, _quantity_phrase(words, unit, a, b)))
    if base_findings is not None and other_findings is not None:
        out += _finding_changes(base_findings, other_findings)
    out = [c for c in out if c.score >= NOTABLE]
    return sorted(out, key=lambda c: -c.score)  # sorted() is stable: ties keep rule order


def _wait_changes(waits: list[tuple[str, float, float, float]]) -> list[Change]:
    """One change per wait reason, the largest fall and rise made one move."""
    blocked = [x for x in waits if x[0] not in ("running", "runnable") and x[3] >= NOTABLE]
    fell = max((x for x in blocked if x[2] < x[1]), key=lambda x: x[3], default=None)
    rose = max((x for x in blocked if x[2] > x[1]), key=lambda x: x[3], default=None)
    out = []
    for w, a, b, score in waits:
        if fell and rose and w in (fell[0], rose[0]):
            continue
        out.append(Change(score, f"wait_{w}_s", _wait_phrase(w, a, b)))
    if fell and rose:
        text = (
            f"its waiting moved from `{fell[0]}` ({fell[1]:.3f} -> {fell[2]:.3f} thread-s) "
            f"to `{rose[0]}` ({rose[1]:.3f} -> {rose[2]:.3f} thread-s)"
        )
        out.insert(0, Change(max(fell[3], rose[3]), f"wait_{fell[0]}_s>wait_{rose[0]}_s", text))
    return out


def _finding_changes(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[Change]:
    from .compare import _by_kind, finding_status

    ka, kb = _by_kind(a), _by_kind(b)
    out = []
    for kind in sorted(set(ka) | set(kb)):
        st = finding_status(ka.get(kind), kb.get(kind))
        if st == "unchanged":
            continue
        e = kb.get(kind) or ka[kind]
        w = SEVERITY_WEIGHT.get(e["severity"], 0.1)
        if st.startswith("severity"):
            w = w / 2
            text = f"finding `{kind}` {st[9:]} to {kb[kind]['severity']}"
        else:
            text = f"finding `{kind}` ({e['severity']}) {st}"
        out.append(Change(w, f"finding_{kind}", text))
    return out


def headline(label: str, base_label: str, ranked: list[Change], top: int = 3) -> str:
    """One sentence: the ``top`` largest changes of ``label`` against the baseline."""
    if not ranked:
        return (
            f"{label}: no change scores {NOTABLE:.2f} or more against {base_label} "
            "(docs/compare.md, 'What changed most')"
        )
    parts = [c.text for c in ranked[:top]]
    return f"{label} against {base_label}: " + "; ".join(parts) + "."
