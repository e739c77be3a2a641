"""The bench report: models compared, scaling, sleep state, the GIL, fds, runs.

Built from a bench folder's per-run table (:func:`circuit.analysis.bench.read_results`)
and the run folders it names; every figure and sentence degrades to "not
measured" when a column or a run folder is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import bench as B
from .model import Document, Figure, Para, Section, Table, V, num, secs

# Models whose median walls are within this share of the fastest are named
# together: closer than that is run-to-run noise on a shared machine.
TIE_SHARE = 0.05


def _and(words: list[str]) -> str:
    """a, b and c"""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _models_title(models: list[str]) -> str:
    """The comparison's heading from the models actually run, in the article's order."""
    if not models:
        return "Concurrency models"
    if len(models) == 1:
        return f"One model: {models[0]}"
    t = " vs ".join(models)
    return t[0].upper() + t[1:]


def _tasks(n: Any) -> str:
    return f"{int(n)} task" + ("" if int(n) == 1 else "s")


def _cell_name(r: Any) -> Para:
    """`workload` model, N tasks: the words naming one cell of a bench."""
    parts: Para = []
    if "workload" in r:
        parts += [V(r["workload"], code=True), " "]
    parts.append(V(r["model"]))
    if "tasks" in r and pd.notna(r["tasks"]):
        parts += [", ", V(_tasks(r["tasks"]))]
    return parts


def _bench_models(cmp: pd.DataFrame, results: pd.DataFrame) -> Section:
    from .. import plots

    models = (
        B.order_models(pd.DataFrame({"model": results["model"].astype(str).unique()}))[
            "model"
        ].tolist()
        if "model" in results
        else []
    )
    sec = Section(
        "models",
        _models_title(models),
        [
            "The same workload under each concurrency model, side by side: wall time is what "
            "the user waits, CPU time what the machine spent. I/O-bound work gets faster with "
            "any model that overlaps the waiting. CPU-bound Python code only gets faster with "
            "more CPUs running Python at once (processes), because of the GIL; C code that "
            "releases the GIL, such as hashlib on large buffers (cpu-hash), runs on several "
            "CPUs from threads too.",
        ],
    )
    if cmp.empty:
        sec.missing("the results table has no model / wall_s columns.")
        return sec
    cols = [
        c
        for c in ("workload", "model", "tasks", "wall_s", "cpu_s", "parallelism", "runs")
        if c in cmp
    ]
    sec.body.append(
        Table(
            cols,
            [
                [num(v) if isinstance(v, float) else v for v in r]
                for r in cmp[cols].itertuples(index=False)
            ],
        )
    )
    at = B.compared_cells(cmp)
    sec.body.append(Figure("models", plots.model_comparison(at), "Wall vs CPU time per model"))
    for wk, d in at.groupby("workload") if "workload" in at else [(None, at)]:
        d = d.sort_values("wall_s")
        best = d.iloc[0]
        base = d[d["model"] == "sequential"]
        parts: Para = []
        if wk is not None:
            parts += ["Workload ", V(wk, code=True)]
        if "tasks" in d:
            parts += [" with ", V(_tasks(best["tasks"]))]
        parts.append(": ")
        # Medians within TIE_SHARE of the best are not told apart (the
        # run-to-run spread on a shared machine is larger than that).
        tied = d[d["wall_s"] <= best["wall_s"] * (1 + TIE_SHARE)]["model"].tolist()
        if len(d) == 1:
            parts += ["only ", V(best["model"]), " was run, ", V(secs(best["wall_s"]))]
        elif len(tied) > 1:
            parts += [
                "fastest were ",
                V(_and(list(map(str, tied)))),
                f", within {TIE_SHARE:.0%} of each other, at ",
                V(secs(best["wall_s"])),
            ]
        else:
            parts += ["fastest was ", V(best["model"]), " at ", V(secs(best["wall_s"]))]
        if len(base) and best["model"] != "sequential" and best["wall_s"] > 0:
            parts += [
                ", ",
                V(f"{base['wall_s'].iloc[0] / best['wall_s']:.2f}×"),
                " faster than sequential (",
                V(secs(base["wall_s"].iloc[0])),
                ")",
            ]
        if "parallelism" in d:
            parts += [
                "; parallelism per model: ",
                V(
                    ", ".join(
                        f"{m} {p:.2f}" for m, p in zip(d["model"], d["parallelism"], strict=True)
                    )
                ),
            ]
        sec.say(*parts, ".")
    return sec


def _bench_scaling(sc: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "scaling",
        "Scaling with the number of tasks",
        [
            "How wall time grows as tasks are added, per model. A flat line means the model "
            "overlaps the tasks; a line rising in proportion means they ran one after another. "
            "On a machine with C cores, CPU work that runs in parallel stays flat up to C tasks, "
            "then rises."
        ],
    )
    if sc.empty:
        sec.missing("no workload and model of this bench ran at two or more task counts.")
        return sec
    sec.body.append(Figure("scaling", plots.scaling(sc), "Wall time vs tasks"))
    for key, g in sc.groupby([c for c in ("workload", "model") if c in sc]):
        g = g.sort_values("tasks")
        a, b = g.iloc[0], g.iloc[-1]
        parts: Para = [
            V(" / ".join(map(str, key if isinstance(key, tuple) else (key,)))),
            ": ",
            V(" → ".join(str(int(n)) for n in g["tasks"])),
            " tasks took ",
            V(" → ".join(secs(float(w)) for w in g["wall_s"])),
        ]
        if a["wall_s"] > 0:
            parts += [
                ": ",
                V(f"{b['wall_s'] / a['wall_s']:.1f}×"),
                " the wall time for ",
                V(f"{b['tasks'] / a['tasks']:g}×"),
                " the tasks",
            ]
        sec.say(*parts, ".")
    return sec


def _bench_sleep(split: pd.DataFrame) -> Section:
    from .. import plots

    sec = Section(
        "sleep",
        "The effect of sleep state",
        [
            "The kernel puts a blocked thread to sleep, and a sleeping thread uses no CPU. "
            "Summing every thread's sampled time by what it was doing shows, per model, how much "
            "was spent running and how much asleep — and why: a timer, a lock, the GIL, an "
            "epoll wait, a single socket. Against it, the CPU actually used (black diamonds): "
            "running counts threads in state R, which includes runnable threads waiting for a "
            "CPU, so on a busy machine it exceeds the CPU used."
        ],
    )
    if split.empty:
        sec.missing("no run folder of this bench could be read.")
        return sec
    # The figure has one bar per model: the task count the models were compared at.
    shown = B.compared_cells(split)
    caption = "Thread time by state, per model"
    if "tasks" in shown and shown["tasks"].nunique() == 1:
        caption += f" ({int(shown['tasks'].iloc[0])} tasks)"
    elif "tasks" in shown:
        caption += " (per workload, the task count most models ran)"
    sec.body.append(Figure("sleep", plots.sleep_split(shown), caption))
    wc = [c for c in split.columns if c.startswith("wait_")]
    for _, r in split.iterrows():
        tot = float(r[wc].sum())
        run_s = float(r.get("wait_running_s", 0.0))
        parts: Para = [
            *_cell_name(r),
            ": ",
            V(secs(tot)),
            " of thread time, ",
            V(f"{100 * (tot - run_s) / tot:.0f}%" if tot else "0%"),
            " asleep",
        ]
        top = sorted(
            ((float(r[c]), c[5:-2]) for c in wc if c != "wait_running_s" and r[c] > 0),
            reverse=True,
        )[:2]
        if top:
            parts += [" (mostly ", V(", ".join(f"{w} {secs(v)}" for v, w in top)), ")"]
        if "cpu_s" in r:
            parts += ["; CPU used ", V(secs(float(r["cpu_s"])))]
        sec.say(*parts, ".")
    return sec


def bench_document(path: Path, results: pd.DataFrame | None = None) -> Document:
    from .. import plots

    results = B.read_results(path) if results is None else results
    meta = B.bench_meta(path)
    cmp = B.model_comparison(results)
    sc = B.scaling(results)
    runs = B.per_run_waits(results)
    split = B.sleep_split(runs)
    gvt = B.gil_vs_threads(runs)
    facts = Table(
        ["", ""],
        [
            ["results", V(f"{len(results)} runs")],
            [
                "workloads",
                V(
                    ", ".join(map(str, results["workload"].unique()))
                    if "workload" in results
                    else "?"
                ),
            ],
            [
                "models",
                V(", ".join(map(str, results["model"].unique())) if "model" in results else "?"),
            ],
            [
                "task counts",
                V(
                    ", ".join(map(str, sorted(results["tasks"].unique())))
                    if "tasks" in results
                    else "?"
                ),
            ],
            ["run folders readable", V(f"{len(runs)} of {len(results)}")],
            *[[k, V(v)] for k, v in meta.items() if isinstance(v, (str, int, float))][:8],
        ],
    )
    secs = [_bench_models(cmp, results), _bench_scaling(sc), _bench_sleep(split)]

    s4 = Section(
        "gil",
        "The GIL",
        [
            "Only one thread per process runs Python bytecode at a time. Threads that need "
            "the GIL queue for it (wait reason gil); contention is the share of the Python "
            "threads' time spent so. It grows with the number of threads running Python, and "
            "stays near 0 for threads that spend their time in C code that releases the GIL "
            "(hashing, compression), however many there are."
        ],
    )
    if gvt.empty:
        s4.say("No GIL data in this bench: no run had a Python process whose threads ran Python.")
    else:
        # Lines only, when there are any: a model run at one thread count is a lone point.
        drawn = B.lines(gvt, "threads")
        s4.body.append(
            Figure(
                "gil", plots.gil(None, drawn if len(drawn) else gvt), "GIL contention vs threads"
            )
        )
        for _, r in gvt.iterrows():
            s4.say(
                V(r.get("workload", "")),
                " ",
                V(r["model"]),
                " with ",
                V(int(r["threads"])),
                " threads: GIL contention ",
                V(num(float(r["gil_contention"]), 2)),
                " (",
                V(f"{100 * r['gil_contention']:.0f}%"),
                " of the Python threads' time waiting for the GIL).",
            )
    if not cmp.empty and "parallelism" in cmp and "model" in cmp:
        th = cmp[cmp["model"].astype(str).str.contains("thread")]
        for _, r in th.iterrows():
            s4.say(
                *_cell_name(r),
                ": parallelism ",
                V(num(float(r["parallelism"]), 2)),
                " (CPU seconds per wall second).",
            )
    secs.append(s4)

    s5 = Section(
        "epoll",
        "File descriptors, non-blocking sockets and epoll",
        [
            "Each socket is an entry in the process's fd table. An event loop registers its "
            "non-blocking sockets with one epoll instance (itself an fd) and sleeps in "
            "epoll_wait for all of them at once."
        ],
    )
    if runs.empty or "sockets_peak" not in runs:
        s5.missing("no run folder with fd counts could be read.")
    else:
        keys = [c for c in ("workload", "model", "tasks") if c in runs]
        g = runs.groupby(keys)[["epoll_peak", "sockets_peak"]].max().reset_index()
        g = g[(g["epoll_peak"] > 0) | (g["sockets_peak"] > 0)]
        if g.empty:
            s5.say("No run of this bench opened a socket or an epoll fd.")
        for _, r in g.iterrows():
            s5.say(
                "The ",
                V(" / ".join(str(r[k]) for k in keys)),
                " run held ",
                V(int(r["epoll_peak"])),
                " epoll fd(s) and ",
                V(int(r["sockets_peak"])),
                " socket(s) at peak.",
            )
    secs.append(s5)

    s6 = Section("runs", "Runs", ["Every run of the bench, as recorded."])
    cols = [
        c
        for c in ("workload", "model", "tasks", "repeat", "wall_s", "cpu_s", "parallelism", "run")
        if c in results
    ]
    s6.body.append(
        Table(
            cols,
            [
                [num(v) if isinstance(v, float) else v for v in r]
                for r in results[cols].itertuples(index=False)
            ],
        )
    )
    secs.append(s6)
    return Document(
        title="circuit bench report",
        subtitle=["Bench ", V(str(path), code=True)],
        facts=facts,
        sections=secs,
        warnings=[],
    )
