"""Report documents from hand-built runs: evidence comes from the data, gaps are said."""

from __future__ import annotations

import re

from circuit.analysis.report import V, _md, _md_code, render_html, render_markdown, run_document
from tests.support.report_data import (
    GIL_ROWS_FOR_BENCH,
    GIL_TABLE_FOR_BENCH,
    T0,
    fake_run,
    gil_table,
    process_frame,
    thread_frame,
)

SECTIONS = ["threads", "loops", "sleep", "switches", "cpu", "gil", "fds", "epoll", "tasks"]


def _render(run) -> str:
    doc = run_document(run)
    return render_html(
        doc, {f.name: b"png" for s in doc.sections for f in s.body if hasattr(f, "fig")}
    )


def test_missing_data_is_said_not_invented() -> None:
    out = _render(fake_run(thread_frame([])))
    for sid in SECTIONS:
        assert f"<section id='{sid}'>" in out
    assert out.count("Not measured in this run") >= 6
    assert "nan" not in out.lower()


def test_sleep_evidence_names_thread_syscall_and_cpu() -> None:
    rows = [(t, 1, 42, "sleeper", "S", "sleep", 230, 1, 1, 0) for t in range(0, 400, 10)]
    rows += [(400, 1, 42, "sleeper", "R", "running", -1, 2, 1, 0)]
    out = _render(fake_run(thread_frame(rows)))
    assert re.search(
        r"Thread <b>42</b> \(<code>sleeper</code>\) slept <b>0.400 s</b> in "
        r"<code>clock_nanosleep</code> \(wait reason <b>sleep</b>\) and used <b>1.00 ms</b>",
        out,
    )
    assert "No GIL data in this run" in out


def test_gil_section_from_the_futex_evidence() -> None:
    out = _render(fake_run(thread_frame(GIL_ROWS_FOR_BENCH)))
    gil = out.split("<section id='gil'>")[1].split("</section>")[0]
    assert "No GIL data" not in gil
    assert (
        "its <b>2</b> threads that ran Python spent <b>0.020 s</b> of their <b>0.040 s</b> "
        "waiting for the GIL (contention <b>0.5000</b>)" in gil
    )
    assert "Who held it is not known: <b>the interpreter&#x27;s GIL state was not read" in gil
    assert "stretches" not in gil


def test_gil_section_from_the_interpreter() -> None:
    run = fake_run(thread_frame(GIL_ROWS_FOR_BENCH))
    run.gil = gil_table(GIL_TABLE_FOR_BENCH)
    gil = _render(run).split("<section id='gil'>")[1].split("</section>")[0]
    assert "(contention <b>0.5000</b>)" in gil
    assert "The interpreter says the GIL was held <b>0.020 s</b> (<b>100%</b> of the time)" in gil
    assert "changed hands <b>100.0</b> times a second" in gil
    assert "held in <b>2</b> stretches by one thread" in gil


def test_epoll_evidence_from_fd_counts() -> None:
    pr = process_frame(
        [{"t_ms": t, "pid": 1, "fds_socket": 10 if t else 2, "fds_epoll": 1} for t in (0, 10)]
    )
    rows = [(t, 1, 1, "loop", "S", "poll", 232, 0, 0, 0) for t in (0, 10)]
    out = _render(fake_run(thread_frame(rows), pr))
    assert "Process <b>1</b> held <b>1</b> epoll fd(s) and <b>10</b> socket(s) at peak." in out
    assert "waited <b>0.020 s</b> in <code>epoll_wait</code>" in out


def test_task_overlap() -> None:
    import pandas as pd

    ms = 1_000_000
    marks = pd.DataFrame(
        {
            "t_ns": [T0, T0 + 1 * ms, T0 + 5 * ms, T0 + 6 * ms, T0 + 7 * ms, T0 + 9 * ms],
            "pid": 1,
            "tid": 1,
            "name": ["task-start", "task-start", "task-end", "task-end", "task-start", "task-end"],
            "field_task": [0, 1, 0, 1, 2, 2],
        }
    )
    rows = [(0, 1, 1, "m", "R", "running", -1, 0, 0, 0)]
    out = _render(fake_run(thread_frame(rows), marks=marks))
    assert "<b>3</b> tasks (<b>3</b> finished), up to <b>2</b> in flight at once" in out


def test_markdown_escaping() -> None:
    assert _md("<b>*x*</b> | y") == "&lt;b&gt;\\*x\\*&lt;/b&gt; \\| y"
    assert _md_code("a`b") == "``a`b``"
    doc = run_document(
        fake_run(thread_frame([]), command=["python", "<img src=x onerror=alert(1)>"])
    )
    md = render_markdown(doc, {})
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert isinstance(doc.facts.rows[0][1], V)


def test_sampling_gaps_are_reported() -> None:
    pr = process_frame([{"t_ms": t, "pid": 1} for t in (0, 10, 20, 520, 530)])
    rows = [(0, 1, 1, "m", "R", "running", -1, 0, 0, 0)]
    out = _render(fake_run(thread_frame(rows), pr))
    assert "<b>0.500 s (sampler fell behind: states in this gap were not observed)</b>" in out
    pr = process_frame([{"t_ms": t, "pid": 1} for t in (0, 10, 20)])
    out = _render(fake_run(thread_frame(rows), pr))
    assert "<b>0.010 s</b>" in out and "fell behind" not in out


def test_models_within_noise_of_the_fastest_are_named_together(tmp_path) -> None:
    import pandas as pd

    from circuit.analysis.report import bench_document, render_markdown

    rows = [
        {"workload": "io", "model": m, "tasks": 2, "repeat": r, "wall_s": w, "cpu_s": 0.01}
        for m, w in (("sequential", 0.8), ("threads", 0.408), ("asyncio", 0.405))
        for r in range(3)
    ]

    def md(rows: list[dict]) -> str:
        doc = bench_document(tmp_path, pd.DataFrame(rows))
        names = {f.name: f"{f.name}.png" for s in doc.sections for f in s.body if hasattr(f, "fig")}
        return render_markdown(doc, names)

    text = md(rows)
    assert "fastest were `asyncio and threads`, within 5% of each other" in text.replace("**", "`")
    assert "1.98×" in text  # 0.8 / 0.405, two decimals like the table
    text = md([r for r in rows if r["model"] != "threads"])
    assert "fastest was" in text


def _bench_md(tmp_path, rows: list[dict], runs: dict | None = None, monkeypatch=None) -> str:
    """The bench report's Markdown for a hand-built per-run table; ``runs``
    maps each row's ``run`` to a hand-built run (the folders need not exist)."""
    import pandas as pd

    from circuit.analysis import bench as B
    from circuit.analysis.report import bench_document, render_markdown
    from circuit.errors import CircuitError

    if runs is not None:

        def load(path: str):
            if path not in runs:
                raise CircuitError("no such run")
            return runs[path]

        monkeypatch.setattr(B, "_default_loader", load)
    doc = bench_document(tmp_path, pd.DataFrame(rows))
    names = {f.name: f"{f.name}.png" for s in doc.sections for f in s.body if hasattr(f, "fig")}
    return render_markdown(doc, names)


def _sweep_rows() -> list[dict]:
    """cpu-count: 4 models at 2 tasks, threads and thread-pool also at 1 and 4;
    every threaded cell at exactly one CPU second per wall second."""
    cells = [("cpu-count", m, 2) for m in ("sequential", "threads", "thread-pool", "asyncio")]
    cells += [("cpu-count", m, n) for m in ("threads", "thread-pool") for n in (1, 4)]
    return [
        {
            "workload": w,
            "model": m,
            "tasks": n,
            "repeat": r,
            "wall_s": 0.25 * n,
            "cpu_s": 0.25 * n,
            "parallelism": 1.0,
        }
        for w, m, n in cells
        for r in range(3)
    ]


def test_bench_report_never_repeats_a_line(tmp_path) -> None:
    text = _bench_md(tmp_path, _sweep_rows())
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith(("|", "!["))]
    repeated = {x for x in lines if lines.count(x) > 1}
    assert not repeated, repeated
    # each threaded cell's parallelism, named by its model and task count
    for m in ("threads", "thread-pool"):
        for word in ("1 task", "2 tasks", "4 tasks"):
            assert f"`cpu-count` **{m}**, **{word}**: parallelism **1.00**" in text


def test_bench_report_compares_models_at_one_task_count(tmp_path) -> None:
    text = _bench_md(tmp_path, _sweep_rows())
    assert "## Sequential vs threads vs thread-pool vs asyncio" in text
    # the sweep's 4-task cells (threads alone there) are no comparison of models
    (line,) = [x for x in text.splitlines() if x.startswith("Workload `cpu-count`")]
    assert "with **2 tasks**" in line and "sequential" in line and "asyncio" in line
    # the sweep is a scaling line per model: 1 -> 2 -> 4 tasks
    assert "**cpu-count / threads**: **1 → 2 → 4** tasks took" in text
    assert "**4.0×** the wall time for **4×** the tasks" in text
    assert "cpu-count / sequential" not in text  # one task count: a point, not a line


def test_bench_report_heading_names_the_models_run(tmp_path) -> None:
    rows = [r for r in _sweep_rows() if r["model"] in ("threads", "asyncio")]
    text = _bench_md(tmp_path, rows)
    assert "Sequential" not in text and "sequential" not in text
    assert "## Threads vs asyncio" in text
    text = _bench_md(tmp_path, [r for r in rows if r["model"] == "threads"])
    assert "## One model: threads" in text
    assert "only **threads** was run" in text


def test_bench_sleep_lines_per_task_count(tmp_path, monkeypatch) -> None:
    """4 sleeping tasks sleep 4 times as long as 1: one line each, never their median."""
    runs = {}
    rows = []
    for n in (1, 4):
        for r in range(3):
            th = thread_frame(
                [
                    (t, 1, 1 + k, "w", "S", "sleep", 230, 0, 0, 0)
                    for k in range(n)
                    for t in range(0, 400, 10)
                ]
            )
            runs[f"r{n}{r}"] = fake_run(th)
            rows.append(
                {
                    "workload": "io-sleep",
                    "model": "threads",
                    "tasks": n,
                    "repeat": r,
                    "wall_s": 0.4,
                    "cpu_s": 0.01,
                    "run": f"r{n}{r}",
                }
            )
    text = _bench_md(tmp_path, rows, runs, monkeypatch)
    assert "`io-sleep` **threads**, **1 task**: **0.400 s** of thread time, **100%** asleep" in text
    assert (
        "`io-sleep` **threads**, **4 tasks**: **1.600 s** of thread time, **100%** asleep" in text
    )
    assert "1.000 s" not in text  # the median of a 1-task and a 4-task run
