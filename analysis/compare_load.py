"""Runs and bench folders read for a comparison (analysis/compare.py).

A run folder is one side; a bench folder is one side per cell (workload,
model, task count), its figures the median over the cell's repeats, and two
benches are compared cell by cell.  Everything the comparison states comes
from each run's own summary (:func:`circuit.analysis.summary.summarize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from circuit.errors import CircuitError

from . import bench as B
from . import compare as C
from . import compare_rank as R

CELL_KEYS = ("workload", "model", "tasks")
# Waits a Python function is charged with: every sampled reason but these.
NOT_WAITING = ("running", "runnable")
TOP_FUNCTIONS = 10


@dataclass
class Side:
    """One column of a comparison: a run, or a bench cell's repeats."""

    label: str
    path: Path
    summaries: list[dict[str, Any]]
    metas: list[dict[str, Any]]
    runs: list[Any] = field(default_factory=list)  # loaded Runs (plots, stacks)

    @property
    def figures(self) -> dict[str, float]:
        figs = [C.figures(s) for s in self.summaries]
        return figs[0] if len(figs) == 1 else C.median_figures(figs)

    @property
    def findings(self) -> list[dict[str, Any]] | None:
        """The findings of every repeat pooled; None when no summary recorded any."""
        got = [s["findings"] for s in self.summaries if isinstance(s.get("findings"), list)]
        return [f for fs in got for f in fs] if got else None

    @property
    def not_recorded(self) -> set[str]:
        return set.intersection(*(C.not_recorded(s) for s in self.summaries))


def load_run(path: Path, label: str) -> Side:
    from .run import load

    run = load(path)
    s = run.summary()
    s["run"] = str(path)
    return Side(label, path, [s], [run.meta], [run])


def labels_for(paths: list[Path], given: str | None) -> list[str]:
    """``--labels A,B``, else the folder names (made unique with their parent
    folder, then a number)."""
    if given is not None:
        labels = [x.strip() for x in given.split(",")]
        if len(labels) != len(paths) or not all(labels):
            raise CircuitError(
                f"--labels names {len(labels)} runs, but {len(paths)} were given: "
                "one non-empty label per run, comma-separated"
            )
        if len(set(labels)) != len(labels):
            raise CircuitError(f"--labels must be different from each other, got {given!r}")
        return labels
    labels = [p.resolve().name or str(p) for p in paths]
    if len(set(labels)) < len({p.resolve() for p in paths}):  # same name, other folders
        labels = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


def check_paths(paths: list[Path]) -> str:
    """'runs' or 'benches'; a one-line error for a missing folder or a mix."""
    if len(paths) < 2:
        raise CircuitError("compare needs at least two run or bench folders")
    kinds = []
    for p in paths:
        if not p.exists():
            raise CircuitError(f"{p}: no such run or bench folder")
        kinds.append("benches" if B.is_bench(p) else "runs")
    if len(set(kinds)) > 1:
        raise CircuitError(
            "cannot compare run folders with bench folders: give only runs, or only benches"
        )
    return kinds[0]


# -- a comparison of sides ------------------------------------------------------------


def compare_sides(sides: list[Side]) -> dict[str, Any]:
    """The whole comparison of some sides, the first the baseline: the table,
    what changed most (ranked, in words), findings, meta.json differences,
    and Python functions' wait time where every side has py-spy stacks."""
    labels = [s.label for s in sides]
    figs = [s.figures for s in sides]
    findings = [s.findings for s in sides]
    tab = C.table(figs, labels)
    ranked = {
        s.label: R.changes(figs[0], f, findings[0], s.findings)
        for s, f in zip(sides[1:], figs[1:], strict=True)
    }
    metas = [s.metas[0] for s in sides]
    diffs = C.meta_differences(metas, labels)
    return {
        "labels": labels,
        "paths": [str(s.path) for s in sides],
        "table": tab,
        "not_recorded": {s.label: sorted(s.not_recorded) for s in sides},
        "changes": ranked,
        "headlines": [R.headline(lab, labels[0], ch) for lab, ch in ranked.items()],
        "findings": C.findings_table(findings, labels),
        "findings_recorded": {s.label: s.findings is not None for s in sides},
        "meta_differences": diffs,
        "different_commands": C.different_commands(diffs),
        "different_machines": C.different_machines(diffs),
        "functions": function_table([_side_functions(s) for s in sides], labels),
        "sides": sides,
    }


def compare_paths(paths: list[Path], labels: str | None = None) -> dict[str, Any]:
    """Compare run folders, or bench folders cell by cell (see :func:`compare_benches`)."""
    kind = check_paths(paths)
    names = labels_for(paths, labels)
    if kind == "benches":
        return compare_benches(paths, names)
    return {
        "kind": "runs",
        **compare_sides([load_run(p, n) for p, n in zip(paths, names, strict=True)]),
    }


# -- benches ----------------------------------------------------------------------------


def _cell_name(key: tuple[Any, ...]) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(CELL_KEYS, key, strict=True))


def bench_cells(path: Path, label: str) -> dict[tuple[Any, ...], Side]:
    """Each cell of a bench folder as a side: its repeats' run folders loaded."""
    from .run import load

    res = B.read_results(path)
    missing = [c for c in (*CELL_KEYS, "run") if c not in res.columns]
    if missing:
        raise CircuitError(f"{path}: its runs table has no {', '.join(missing)} column")
    cells: dict[tuple[Any, ...], Side] = {}
    for key, g in res.groupby(list(CELL_KEYS), sort=False):
        key = tuple(int(k) if isinstance(k, float) and k.is_integer() else k for k in key)
        runs = [load(Path(r)) for r in g["run"] if isinstance(r, str) and r]
        if not runs:
            continue
        summaries = []
        for r in runs:
            s = r.summary()
            s["run"] = str(r.path)
            summaries.append(s)
        cells[key] = Side(label, path, summaries, [r.meta for r in runs], runs)
    if not cells:
        raise CircuitError(f"{path}: no run folders in this bench to compare")
    return cells


def compare_benches(paths: list[Path], labels: list[str]) -> dict[str, Any]:
    """Bench folders cell by cell: cells matched on workload, model and task
    count; a cell not in every bench is listed, not compared."""
    benches = [bench_cells(p, lab) for p, lab in zip(paths, labels, strict=True)]
    keys = list(dict.fromkeys(k for b in benches for k in b))
    cells, unmatched = [], []
    for key in keys:
        if all(key in b for b in benches):
            cmp = compare_sides([b[key] for b in benches])
            cells.append(
                {"cell": dict(zip(CELL_KEYS, key, strict=True)), "name": _cell_name(key), **cmp}
            )
        else:
            have = [lab for lab, b in zip(labels, benches, strict=True) if key in b]
            unmatched.append({"cell": dict(zip(CELL_KEYS, key, strict=True)), "in": have})
    if not cells:
        raise CircuitError("these benches have no cell (workload, model, tasks) in common")
    metas = [{k: v for k, v in B.bench_meta(p).get("matrix", {}).items()} for p in paths]
    diffs = [
        {"field": k, "values": dict(zip(labels, [m.get(k) for m in metas], strict=True))}
        for k in dict.fromkeys(k for m in metas for k in m)
        if any(m.get(k) != metas[0].get(k) for m in metas[1:])
    ]
    return {
        "kind": "benches",
        "labels": labels,
        "paths": [str(p) for p in paths],
        "cells": cells,
        "unmatched": unmatched,
        "bench_differences": diffs,
    }


# -- Python functions' wait time (py-spy stacks) ------------------------------------------


def function_waits(threads: pd.DataFrame, stacks: pd.DataFrame, period: int) -> pd.Series:
    """Thread-seconds spent waiting (any reason but running and runnable) per
    innermost Python function (``name (file)``): each kernel sample is charged
    to the stack of its thread's latest py-spy dump (analysis/pyspy.py
    ``join_stacks``), so the figure is as fine as the dumps are frequent."""
    from .pyspy import join_stacks
    from .summary import with_durations

    if threads.empty or stacks.empty:
        return pd.Series(dtype=float)
    j = join_stacks(with_durations(threads, period), stacks)
    stack = j["stack"].astype(object)
    keep = ~j["wait"].astype(str).isin(NOT_WAITING) & stack.notna() & (stack.astype(str) != "")
    j = j[keep.to_numpy()]
    if j.empty:
        return pd.Series(dtype=float)
    func = j["stack"].astype(str).str.split(" <- ").str[0].str.replace(r":\d+\)$", ")", regex=True)
    return j.groupby(func.to_numpy())["dt_ns"].sum() / 1e9


def _side_functions(side: Side) -> pd.Series | None:
    """Function waits of a side's first run; None without py-spy stacks."""
    from .summary import period_ns

    if not side.runs:
        return None
    run = side.runs[0]
    if run.stacks.empty:
        return None
    return function_waits(run.threads, run.stacks, period_ns(run.meta))


def function_table(
    waits: list[pd.Series | None], labels: list[str], top: int = TOP_FUNCTIONS
) -> pd.DataFrame | None:
    """The ``top`` functions whose sampled wait time changed most from the
    first side (thread-seconds per side, and the change of the side whose
    change is largest); None unless the first side and another have stacks."""
    have = [(lab, w) for lab, w in zip(labels, waits, strict=True) if w is not None]
    if waits[0] is None or len(have) < 2:
        return None
    df = pd.DataFrame({lab: w for lab, w in have}).fillna(0.0)
    base = df[labels[0]]
    change = df.drop(columns=labels[0]).sub(base, axis=0)
    df["change_s"] = [
        max(row, key=abs) if len(row) else 0.0 for row in change.itertuples(index=False)
    ]
    df = df[df["change_s"].abs() > 0]
    df = df.reindex(df["change_s"].abs().sort_values(ascending=False).index).head(top)
    return df.rename_axis("function").reset_index()


def finite(x: Any) -> Any:
    """A JSON-able number: NaN becomes None."""
    return None if isinstance(x, float) and math.isnan(x) else x


def _table_json(tab: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: finite(v) for k, v in row.items()} for row in tab.to_dict("records")]


def _one_json(cmp: dict[str, Any]) -> dict[str, Any]:
    fn = cmp["functions"]
    return {
        "labels": cmp["labels"],
        "paths": cmp["paths"],
        "headlines": cmp["headlines"],
        "changes": {
            lab: [{"score": round(c.score, 4), "metric": c.metric, "text": c.text} for c in ch]
            for lab, ch in cmp["changes"].items()
        },
        "table": _table_json(cmp["table"]),
        "not_recorded": cmp["not_recorded"],
        "findings": cmp["findings"],
        "findings_recorded": cmp["findings_recorded"],
        "meta_differences": cmp["meta_differences"],
        "different_commands": cmp["different_commands"],
        "different_machines": cmp["different_machines"],
        "functions": None if fn is None else _table_json(fn),
    }


def to_json(cmp: dict[str, Any]) -> dict[str, Any]:
    """The comparison as ``circuit compare --json`` prints it (NaN: null)."""
    if cmp["kind"] == "runs":
        return {"kind": "runs", **_one_json(cmp)}
    return {
        "kind": "benches",
        "labels": cmp["labels"],
        "paths": cmp["paths"],
        "bench_differences": cmp["bench_differences"],
        "unmatched": cmp["unmatched"],
        "cells": [{"cell": c["cell"], "name": c["name"], **_one_json(c)} for c in cmp["cells"]],
    }


def to_frame(cmp: dict[str, Any]) -> pd.DataFrame:
    """The comparison table; for benches one block per cell, with the cell's
    workload, model and tasks as the first columns."""
    if cmp["kind"] == "runs":
        return cmp["table"]
    parts = [c["table"].assign(**c["cell"]) for c in cmp["cells"]]
    df = pd.concat(parts, ignore_index=True)
    return df[[*CELL_KEYS, *[c for c in df.columns if c not in CELL_KEYS]]]
