"""Every number the docs quote comes from a results file, as the results give it.

* The tables in docs/performance.md and benchmarks/results/*.md are what
  benchmarks/tables.py renders from benchmarks/results/*.json.
* A claim is a phrase of a doc with ``[[name]]`` where a figure of
  benchmarks/facts.py goes (a table cell, a ratio, a range across rows,
  formatted as shown).  Each doc must hold its claims, in this order, with
  the figures the results give: edit a number by hand, or rerun a
  benchmark without updating the text, and this fails.
* README.md and docs/performance.md quote no other number outside code,
  links and the generated tables, but for the settings and targets in
  CONSTANTS (what circuit is asked to do, not what it measured).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
PLACEHOLDER = re.compile(r"\[\[([^\]]+)\]\]")
# Digits, and the words a ratio hides in ("a quarter less CPU").
NUMBER = re.compile(r"\d+(?:[.,]\d+)*|[¼½¾⅓]|\b(?:half|third|quarter|twice|double|triple)\b", re.I)

CLAIMS: dict[str, list[str]] = {
    "README.md": [
        "(`tracer/backends/_fasttick.c`: [[floor.c_saving.100]] less CPU per sampling tick at 100 Hz",
        "The bench took [[bench_e2e.median]] on [[machine.cores]] cores and the whole demo [[bench_e2e.demo_median]]",
    ],
    "docs/workloads.md": [
        "(48 traced runs; [[bench_e2e.median]] on [[machine.cores]] cores,",
    ],
    "docs/accuracy.md": [
        "1 kHz and achieved [[sched_truth.1000.achieved]] (100 Hz: [[sched_truth.100.achieved]]), with",
        "up to [[sched_truth.1000.short.missed_max]] switches for a short-lived thread at 1 kHz, [[sched_truth.100.short.missed_max]] at 100 Hz",
        "short threads' `running` came out [[sched_truth.100.short.running_ratio]] their CPU at 100 Hz, [[sched_truth.1000.short.running_ratio]] at 1 kHz.",
        "time came out [[sched_truth.1000.io.running_ratio]] its CPU at 1 kHz ([[sched_truth.100.io.running_ratio]] at 100 Hz), and its blocked time [[sched_truth.1000.io.blocked_diff]] ([[sched_truth.100.io.blocked_diff]]).",
        "wide ([[sched_truth.1000.io.tolerance_share]] of the",
    ],
    "docs/format.md": [
        "the costliest file ([[floor.file.status.all]] of kernel time per read here,",
    ],
    "docs/performance.md": [
        "at most [[overhead_circuit.processes.circuit@100.bound]] with the defaults, [[overhead_circuit.processes.circuit-k@100.bound]] for kernel",
        "| **[[verdict.slowdown_100]]** |",
        "at most [[overhead_circuit.processes.circuit@1000.bound]] with the defaults, [[overhead_circuit.processes.circuit-k@1000.bound]] for kernel",
        "| **[[verdict.slowdown_1000]]** |",
        "merge included: [[overhead_circuit.processes.circuit@100.tool]] against [[overhead_circuit.processes.py-spy-nb@100.tool]] (py-spy) and [[overhead_circuit.processes.psrecord@100.tool]] (psrecord) at",
        "100 Hz; [[overhead_circuit.processes.circuit@1000.tool]] against [[overhead_circuit.processes.py-spy-nb@1000.tool]] at 1",
        "| **[[verdict.cheaper]]** for",
        "idle thread: [[sampler_cost.idle.1000.proc.us]] (taskstats) or [[sampler_cost.idle.1000.proc-nots.us]] at 1000 threads, [[sampler_cost.idle.100.proc.us]] or [[sampler_cost.idle.100.proc-nots.us]] at 100;",
        "that ran: [[sampler_cost.ran]] | **[[verdict.idle_3us]]** for",
        "alone costs [[floor.file.stat.hot]] of kernel",
        "| idle: [[sampler_cost.idle.100.proc.1000Hz.cpu]] of a",
        "core ([[sampler_cost.idle.100.proc-nots.1000Hz.cpu]] without taskstats); busy: [[sampler_cost.busy.100.proc.1000Hz.cpu]] at [[sampler_cost.busy.100.proc.1000Hz.share]] of the",
        "| **[[verdict.idle_quarter_core]]** for",
        "95% | [[scale.steady_share]] of the",
        "| **[[verdict.scale]]** |",
        "s | [[analysis_cost.load_summary]] | **[[verdict.load_summary]]** |",
        "s | [[analysis_cost.report]] | **[[verdict.report]]** |",
        "thread-sample | [[analysis_cost.bytes]] (threads.parquet), [[analysis_cost.folder_bytes]] (whole run",
        "| **[[verdict.bytes]]** |",
        "< 1 GiB | [[long_runs.summary_s]], [[long_runs.summary_rss]] at peak | time **[[verdict.long_summary_time]]**; memory **[[verdict.long_summary_rss]]** |",
        "< 30 s | [[long_runs.report_s]] | **[[verdict.long_report]]** |",
        "time reported | [[long_runs.huge_s]], [[long_runs.huge_rss]] at peak | **[[verdict.huge]]** |",
        "< 30 s | [[long_runs.many_s]] | **[[verdict.many]]** |",
        "flat memory | [[attach_long.start]] after a minute, [[attach_long.end]] at the end ([[attach_long.slope]]); final merge [[attach_long.merge]] | **[[verdict.attach_flat]]** |",
        "min | [[bench_e2e.median]] | **[[verdict.bench]]** |",
        "report) | [[bench_e2e.demo_median]] ([[bench_e2e.demo_range]] with other jobs",
        "| **[[verdict.demo]]** |",
        "| a crawler traced with fds at 100 Hz: ≥ 95% of the rate, sampler ≤ 5% of a core, target within 3% | [[churn.circuit.hz]] ([[churn.circuit.share]]); sampler [[churn.circuit.sampler]] of a core ([[churn.circuit-nofds.sampler]] with `--no-fds`); target wall [[churn.circuit.wall]], CPU [[churn.circuit.cpu]], under a load average of [[churn.load]] | rate **[[verdict.churn_rate]]**; sampler **[[verdict.churn_sampler]]**; target **[[verdict.churn_target]]**,",
        "| the live view (`circuit top`) ≤ 2% of a core at 2 refreshes per second for 100 threads | [[top_cost.idle.view]] with 100 idle threads, [[top_cost.busy.view]] with 100 busy ones | idle **[[verdict.top_idle]]**; busy **[[verdict.top_busy]]** (The live view, below) |",
        "one machine, [[machine]], a",
        "it is [[overhead_circuit.processes.circuit@100.bound]] with the",
        "defaults and [[overhead_circuit.processes.circuit-k@100.bound]] for kernel",
        "1 kHz [[overhead_circuit.processes.circuit@1000.bound]] and [[overhead_circuit.processes.circuit-k@1000.bound]]. The",
        "comparison agrees: [[overhead.processes.circuit@100.bound]] and [[overhead.processes.circuit@1000.bound]] on the",
        "processes model, [[overhead.threads.circuit@100.bound]] and [[overhead.threads.circuit@1000.bound]] on the",
        "sampler** takes [[overhead_circuit.processes.circuit@100.sampler]] of one",
        "job and [[overhead_circuit.processes.circuit@1000.sampler]] at 1",
        "py-spy dumps [[overhead_circuit.processes.circuit@100.dumps]], held",
        "it held [[overhead.threads.circuit@1000.hz]] of the",
        "psrecord ([[overhead_circuit.processes.psrecord@100.wall]]) and",
        "py-spy ([[overhead_circuit.processes.py-spy-nb@100.wall]]) as",
        "circuit ([[overhead_circuit.processes.circuit@100.wall]]). A",
        "moves by [[overhead.job_cpu]] across every",
        "start-up ([[overhead_circuit.processes.circuit-k@1000.startup]] to [[overhead_circuit.processes.circuit@100.startup]] before the",
        "CPU is [[overhead_circuit.processes.circuit@100.tool]] at 100",
        "Hz against [[overhead_circuit.processes.py-spy-nb@100.tool]] for py-spy and [[overhead_circuit.processes.psrecord@100.tool]] for psrecord, and [[overhead_circuit.processes.circuit@1000.tool]] at 1",
        "against py-spy's [[overhead_circuit.processes.py-spy-nb@1000.tool]], where",
        "job by [[overhead_circuit.processes.py-spy-nb@1000.wall]]. On",
        "Hz ([[overhead.threads.py-spy-nb@100.tool]] against [[overhead.threads.circuit@100.tool]]): it",
        "thread** costs [[sampler_cost.idle.1000.proc.us]] per thread-sample",
        "threads) and [[sampler_cost.idle.1000.proc-nots.us]] without (one",
        "cold caches); [[sampler_cost.idle.100.proc.us]] and [[sampler_cost.idle.100.proc-nots.us]] at 100",
        "ran** costs [[sampler_cost.ran]] here at",
        "thread costs [[sampler_cost.busy.1.proc-nots.us]] against [[sampler_cost.busy.1.proc-nots-py.us]] with the",
        "busy ones [[sampler_cost.busy.100.proc-nots.us]] against [[sampler_cost.busy.100.proc-nots-py.us]]. *",
        "**psutil** costs [[sampler_cost.psutil]] more per",
        "holds at [[sampler_cost.held.idle.100Hz]] of the",
        "threads, and [[sampler_cost.held.busy.100Hz]] up to",
        "kHz at [[sampler_cost.held.idle.1000Hz]] or better",
        "idle target: [[sampler_cost.idle.100.proc.1000Hz.cpu]] of a",
        "with taskstats, [[sampler_cost.idle.100.proc-nots.1000Hz.cpu]] without. For",
        "of reach: [[sampler_cost.busy.100.proc.1000Hz.cpu]] of a",
        "core at [[sampler_cost.busy.100.proc.1000Hz.share]] of the rate, [[sampler_cost.busy.100.proc.1000Hz.ms_per_tick]] per tick;",
        "target of [[scale.target]] (/dev/null) open,",
        "holds at [[scale.steady_share]] of the",
        "rate with [[scale.cpu]] of one",
        "run holds [[scale.achieved_share]] because of",
        "stays at [[scale.rss]] while sampling;",
        "the peak, [[scale.peak_rss]], comes",
        "table needs [[merge_cost.at_once.bytes_per_row]] of memory",
        "stays at [[merge_cost.buckets.rss]] whatever the",
        "the run: [[merge_cost.16000000.buckets.rss]] for 16M",
        "thread-samples against [[merge_cost.16000000.at_once.rss]] sorted at",
        "not slower: [[merge_cost.4000000.buckets.wall]] against [[merge_cost.4000000.at_once.wall]] at 4M, [[merge_cost.16000000.buckets.wall]] against [[merge_cost.16000000.at_once.wall]] at 16M.",
        "then finalised): [[analysis_cost.shape]] samples. Most",
        "summary of [[analysis_cost.thread_samples]] thread-samples take [[analysis_cost.load_summary]], the",
        "full report [[analysis_cost.report]], which",
        "pyarrow ([[analysis_cost.import]]), paid",
        "run takes [[analysis_cost.bytes]] bytes per",
        "The hour at 100 Hz: [[verdict.long_summary_rss]] for memory, [[verdict.long_summary_time]] for time; the hour at 1 kHz: [[verdict.huge]]; the small run folders: [[verdict.many]].",
        "(duckdb installs [[query_engines.duckdb_size]])",
        "([[attach_long.start]] after the first minute, [[attach_long.end]] at the end, a slope of [[attach_long.slope]])",
        "The final merge of [[attach_long.samples]] thread-samples sorts them in buckets and peaks at [[attach_long.merge]].",
        "With the copy, the crawler keeps [[churn.circuit.hz]] ([[churn.circuit.share]]) of the rate, against [[churn.circuit-dump.hz]] with a dump per lookup: an fd scan costs [[churn.circuit.us_per_scan]] of CPU instead of [[churn.circuit-dump.us_per_scan]], and the scans take [[churn.circuit.scan_share]] of a core instead of [[churn.circuit-dump.scan_share]]. What a dump costs is the kernel walking its whole established-socket hash table (sized by the machine's memory), whatever the traced process holds; a copy costs what the socket costs (so a lookup of more than `COPY_MOST` sockets at once, a server's first scan, uses the dump):",
        "The bar is met: the crawler keeps [[churn.circuit.share]] of the rate, and the sampler takes [[churn.circuit.sampler]] of a core ([[churn.circuit-nofds.sampler]] with `--no-fds`, which scans nothing). The C loop takes [[churn.circuit.c_loop]] of the samples: a thread asleep somewhere new gets its wait in C (the backend's classifier, called from C), and an fd look the count made due is done by Python after the C tick has sampled the process, which stays in C (`Sampler._look_after_c`; only a thread waiting in `read`/`write` on an fd the look found changed makes it reload the process, so that wait names the fd's new kind). Measured side by side with the previous build (`--baseline`, the side `circuit-baseline`, which took [[churn.circuit-baseline.c_loop]] of the samples in C and [[churn.circuit-baseline.sampler]] of a core), the sampler's CPU per sample is [[churn.vs_baseline]] of what it was (median of the round-by-round ratios, [[churn.vs_baseline_range]]). The target's time is within the bar as measured ([[churn.circuit.wall]] wall, [[churn.circuit.cpu]] CPU), but this machine cannot resolve a few percent: the crawler's wall time moved by [[churn.circuit.wall_range]] round to round against its untraced run, and by [[churn.circuit-nofds.wall_range]] with `--no-fds`, under a load average of [[churn.load]] from other work on [[machine.cores]] cores.",
        "wake-up costs [[floor.wake.100.us]] at 100",
        "C ([[floor.wake.100.share]] of a",
        "core), and [[floor.wake.1000.us]] at 1",
        "kHz ([[floor.wake.1000.share]]). No",
        "them, cost [[floor.tick.reads.100.us]] a tick",
        "Hz ([[floor.tick.reads.100.share]] of a",
        "core) and [[floor.tick.reads.1000.us]] at 1",
        "data, takes [[floor.cold.py.0ms.us]] back to",
        "Python tick, [[floor.cold.py.1ms.us]] after 1",
        "sleep and [[floor.cold.py.10ms.us]] after 10",
        "ms ([[floor.cold.py.factor]]); the",
        "C tick [[floor.cold.c.0ms.us]], [[floor.cold.c.1ms.us]] and [[floor.cold.c.10ms.us]]. After",
        "(`tracer/backends/_fasttick.c`) takes [[floor.c_saving.100]] off the",
        "tick ([[floor.tick.c.100.us]] against [[floor.tick.py.100.us]] a tick, [[floor.tick.c.100.share]] against [[floor.tick.py.100.share]] of a",
        "core), and [[floor.c_saving.1000]] at 1",
        "kHz ([[floor.tick.c.1000.us]] against [[floor.tick.py.1000.us]]). It",
        "still costs [[floor.c_over_reads.100]] the reads-only",
        "its `stat`**: [[floor.file.stat.hot]] of kernel",
        "to back, [[floor.file.stat.cold]] after a",
        "too ([[floor.file.syscall.hot]], [[floor.file.syscall.cold]]). A",
        "that ran: [[floor.schedstat_x101.hot]] back to",
        "up to [[floor.schedstat_x101.cold]] on caches",
        "that is [[floor.schedstat_x101.hot.share_1000]] to [[floor.schedstat_x101.cold.share_1000]] of a",
        "tick measured [[sampler_cost.busy.100.proc.1000Hz.ms_per_tick]] (the sampler's",
        "read ([[floor.file.schedstat.hot]] back to",
        "The view took [[top_cost.idle.view]] of a core with 100",
        "idle threads and [[top_cost.busy.view]] with 100 busy ones: the target of",
        "is **[[verdict.top_idle]]** for",
        "idle threads and **[[verdict.top_busy]]** for busy ones.",
        "took [[top_cost.idle.top_sampler]] of a core at [[top_cost.idle.top_hz]]",
        "against [[top_cost.idle.attach_sampler]] at [[top_cost.idle.attach_hz]]",
        "under `attach` (idle threads), [[top_cost.busy.top_sampler]] at",
        "[[top_cost.busy.top_hz]] against [[top_cost.busy.attach_sampler]] at",
        "[[top_cost.busy.attach_hz]] (busy): the same work,",
    ],
}

# Numbers that are settings or targets, not measurements (regular expressions,
# matched on the text with code, links and generated tables taken out).
RATES = r"\b(?:100|1000) Hz\b|\b1 kHz\b"
CONSTANTS: dict[str, list[str]] = {
    "README.md": [r"\(0700/0600\)", RATES],
    "docs/accuracy.md": [
        RATES,
        # what the target and the sampler are set to do, and the kernel's settings
        r"\b(?:20|10|4|1) ms\b|\babout 7 µs\b|\bfew hundred µs\b|≤ 0\b",
    ],
    "docs/performance.md": [
        RATES,
        # the targets
        r"≤ [13]% at",
        r"≤ 3 µs",
        r"A 3 µs thread-sample",
        r"on a 100-thread target",
        r"≥ 95%",
        r"1M thread-samples < (?:2|10) s",
        r"≤ 16 bytes",
        r"< (?:10|30) s\b|< [12] GiB",
        r"1,000 small run folders",
        r"within ¼ of a core|A quarter of a core at",
        r"a quarter of an hour",  # how long a benchmark takes, not a result
        r"< 2 min",
        r"< 90 s",
        r"≤ 5% of a core",
        r"within 3%",
        # what the benchmarks run, and the sampler's settings
        r"\b\d+(?:,\d+)? (?:idle |busy |spinning and \d+ sleeping )?(?:threads|ones)\b",
        r"\b\d+M thread-samples\b|\bat \d+M\b",
        r"\b10,000 open fds\b",
        r"\bpool of 2\b|\b3-process job\b|\ball 101\b",
        r"2 tasks, 3 repeats, scale 0\.1: 48 traced runs",
        r"\bevery 100 samples\b|\bEvery 50th\b|\b2\^20\b",
        r"\b8 (?:or more threads|threads or more)\b|\bthe 1000 asked\b",
        r"\bevery (?:5|20) ms\b|\b(?:1|10) ms (?:of )?sleep\b|\bafter 10 ms\b",
        # the live view's settings and target
        r"≤ 2% of a core|\b2 refreshes per second\b|\b200x50\b|\bevery 2 s\b|\b1% of a core at that\b",
    ],
}


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def facts() -> dict[str, str]:
    p = _run("facts.py", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _prose(text: str) -> str:
    """The text a reader takes for prose: no code, link targets, comments or generated tables."""
    text = re.sub(r"<!-- results: \w+ -->.*?<!-- /results -->", " ", text, flags=re.S)
    text = re.sub(r"^```.*?^```", " ", text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return _flat(text)


def find_claims(
    text: str, claims: list[str], facts: dict[str, str]
) -> tuple[list[str], list[tuple[int, int]]]:
    """(what is wrong, the spans of the claims found), claims searched in order."""
    flat = _flat(text)
    errors: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for claim in claims:
        names = PLACEHOLDER.findall(claim)
        unknown = [n for n in names if n not in facts]
        if unknown:
            errors.append(f"{claim!r}: no such figure {unknown} (benchmarks/facts.py lists them)")
            continue
        want = PLACEHOLDER.sub(lambda m: facts[m.group(1)], claim)
        at = flat.find(want, pos)
        if at >= 0:
            spans.append((at, at + len(want)))
            pos = at + len(want)
            continue
        # Say what the doc has in that place instead.
        pattern = "(.+?)".join(re.escape(part) for part in PLACEHOLDER.split(claim)[::2])
        m = re.compile(pattern).search(flat, pos)
        has = f"the doc says {m.group(0)!r}" if m else "not found after the previous claim"
        errors.append(f"expected {want!r} (from {claim!r}); {has}")
    return errors, spans


@pytest.mark.parametrize("doc", sorted(CLAIMS))
def test_quoted_figures_are_the_results(doc: str, facts: dict[str, str]) -> None:
    errors, _ = find_claims((ROOT / doc).read_text(), CLAIMS[doc], facts)
    assert not errors, f"{doc}:\n" + "\n".join(errors)


def unchecked_numbers(
    text: str, claims: list[str], constants: list[str], facts: dict[str, str]
) -> list[str]:
    """Numbers in the prose of ``text`` that no claim binds and no constant explains."""
    flat = _prose(text)
    _, spans = find_claims(flat, [_prose(c) for c in claims], facts)
    spans += [m.span() for const in constants for m in re.finditer(const, flat)]
    chars = list(flat)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    flat = "".join(chars)
    return [flat[max(m.start() - 30, 0) : m.end() + 30] for m in NUMBER.finditer(flat)]


@pytest.mark.parametrize("doc", sorted(CONSTANTS))
def test_no_number_without_a_source(doc: str, facts: dict[str, str]) -> None:
    loose = unchecked_numbers((ROOT / doc).read_text(), CLAIMS[doc], CONSTANTS[doc], facts)
    assert not loose, (
        f"{doc} quotes numbers no results file gives (add a claim, or a constant if "
        "it is a setting or a target):\n" + "\n".join(repr(s) for s in loose)
    )


def test_tables_are_rendered_from_the_results() -> None:
    p = _run("tables.py", "--check")
    assert p.returncode == 0, (
        "tables that are not what their JSON gives (run benchmarks/tables.py):\n"
        + p.stdout
        + p.stderr
    )


def test_a_number_edited_by_hand_is_caught(facts: dict[str, str]) -> None:
    # The checks above on a copy of the page with one figure changed and one added.
    doc = "docs/performance.md"
    text = (ROOT / doc).read_text()
    saving = facts["floor.c_saving.100"]
    edited = text.replace(f"takes {saving} off", "takes 99% off", 1)
    assert edited != text
    errors, _ = find_claims(edited, CLAIMS[doc], facts)
    assert len(errors) == 1 and "takes 99% off" in errors[0], errors
    added = text.replace(
        "## What would lower it", "Sampling costs 7.5 µs.\n\n## What would lower it"
    )
    loose = unchecked_numbers(added, CLAIMS[doc], CONSTANTS[doc], facts)
    assert len(loose) == 1 and "7.5" in loose[0], loose
