"""Check the checks: break circuit on purpose and see which tests notice.

    python -m benchmarks.mutants                 # every mutant
    python -m benchmarks.mutants fd-kinds-other  # some, by name (the others
                                                 # keep their last verdicts)
    python -m benchmarks.mutants --list

Each mutant is one edit of the product (an exact text replaced).  For each,
the tree as it stands (tracked and new files, uncommitted edits included) is
copied to a temporary directory, the edit applied there, a virtualenv made
beside it that sees this venv's packages but imports circuit from the copy
(``pip install -e`` builds the C tick), and the mutant's test files run one
by one.  A mutant is *killed* when at least one of them fails, *survived*
when all pass: then no test checks what it broke.  The working tree is never
touched.

Writes benchmarks/results/mutants.json (which test files failed, and which
tests in them).  Takes a few minutes per mutant; run it on an otherwise idle
machine (the integration tests it runs are timing-sensitive).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple[tuple[str, str, str], ...]  # (path, old text, new text)
    tests: tuple[str, ...]


SCHED = "tests/integration/test_sched_truth.py"
RUNNABLE = "tests/integration/test_runnable.py"
SAMPLER = "tests/integration/test_sampler_truth.py"

FD_KINDS = (
    "tracer/procfs.py",
    """    "[eventfd]": "eventfd",
    "[timerfd]": "timerfd",
    "[signalfd]": "signalfd",
    "inotify": "inotify",
""",
    "",
)
# Run delay frozen: the Python tick keeps the thread's first reading, the C
# tick its last row's (refreshed only when the Python path takes a row).
DELAY_PY = (
    "tracer/backends/proc.py",
    "        cpu_ns, delay_ns, pcount = procfs.parse_schedstat(sched)\n",
    "        cpu_ns, delay_ns, pcount = procfs.parse_schedstat(sched)\n"
    "        delay_ns = row.run_delay_ns if row is not None else delay_ns\n",
)
DELAY_C = (
    "tracer/backends/_fasttick.c",
    "        t->nrow = thread_row(self, p, t, &st, sched[0], sched[1], vol, invol, like,\n",
    "        sched[1] = PyLong_AsLongLong(TFIELD(self, t->row, T_RUN_DELAY_NS));\n"
    "        t->nrow = thread_row(self, p, t, &st, sched[0], sched[1], vol, invol, like,\n",
)
SPLIT_OFF = (
    "analysis/runnable.py",
    """    if n < 2 or "run_delay_ns" not in df.columns:\n""",
    """    if True:\n""",
)
# Context switches frozen after a thread's first read (the example:
# such a sampler passed every test once).
SWITCHES_PY = (
    "tracer/backends/proc.py",
    """            vol, invol = procfs.parse_ctx_switches(self._tread(p, th, "status", 4096))\n""",
    """            vol, invol = procfs.parse_ctx_switches(self._tread(p, th, "status", 4096))\n"""
    """            if row is not None:\n"""
    """                vol, invol = row.ctx_vol, row.ctx_invol\n""",
)
SWITCHES_C = (
    "tracer/backends/_fasttick.c",
    "            vol = a;\n            invol = b;\n",
    "",
)
# The C tick classifies a new wait without the fd's kind.
NEW_WAIT_NO_KIND = (
    "tracer/backends/_fasttick.c",
    "kind ? kind : Py_None, NULL);",
    "Py_None, NULL);",
)
# After an fd look, the C tick never asks for the reload that reclassifies
# a thread waiting in read/write on an fd the look changed.
LOOKED_NO_RELOAD = (
    "tracer/backends/_fasttick.c",
    "        if (r) Py_RETURN_FALSE;\n",
    "",
)

MUTANTS = (
    Mutant(
        "fd-kinds-other",
        "eventfd, timerfd, signalfd and inotify fds classified as 'other' "
        "(procfs.fd_kind; the C tick classifies no fd)",
        (FD_KINDS,),
        ("tests/unit/test_procfs.py", SAMPLER),
    ),
    Mutant(
        "run-delay-frozen",
        "run delay frozen after a thread's first read, in both ticks",
        (DELAY_PY, DELAY_C),
        (SCHED, RUNNABLE, SAMPLER),
    ),
    Mutant(
        "run-delay-frozen-py",
        "the Python tick keeps a thread's first run delay (backends/proc.py)",
        (DELAY_PY,),
        (SCHED, RUNNABLE, SAMPLER),
    ),
    Mutant(
        "run-delay-frozen-c",
        "the C tick keeps a thread's last run delay (backends/_fasttick.c)",
        (DELAY_C,),
        (SCHED, RUNNABLE, SAMPLER),
    ),
    Mutant(
        "switches-frozen",
        "each thread's context switches frozen after its first read, in both ticks",
        (SWITCHES_PY, SWITCHES_C),
        (SAMPLER, SCHED),
    ),
    Mutant(
        "c-new-wait-no-kind",
        "the C tick classifies a thread asleep somewhere new without its fd's kind",
        (NEW_WAIT_NO_KIND,),
        ("tests/integration/test_fasttick.py",),
    ),
    Mutant(
        "c-looked-no-reload",
        "after an fd look, the C tick keeps waits named by an fd's old kind",
        (LOOKED_NO_RELOAD,),
        ("tests/integration/test_fasttick.py",),
    ),
    Mutant(
        "runnable-split-off",
        "analysis/runnable.py returns the frame unchanged (no runnable rows)",
        (SPLIT_OFF,),
        ("tests/unit/test_runnable.py", RUNNABLE, SCHED),
    ),
)


def tree_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the working tree."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


def copy_tree(dest: Path) -> None:
    for f in tree_files():
        if f.endswith(".so"):
            continue  # built again from the (mutated) source
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)


def make_venv(tree: Path) -> Path:
    """A venv that imports circuit from ``tree`` and everything else from ours."""
    env = tree / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(
        subprocess.run(
            [
                str(env / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # A path line, not addsitedir: our venv's .pth files (its editable
    # circuit) are not run, so circuit comes from the copy alone.
    (site / "_parent_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "-e",
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    return env / "bin" / "python"


FAILED = re.compile(r"^FAILED (\S+)", re.M)


def run_mutant(m: Mutant, keep: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        tree = Path(tmp) / "tree"
        copy_tree(tree)
        for path, old, new in m.edits:
            target = tree / path
            text = target.read_text()
            if text.count(old) != 1:
                return {
                    "mutant": m.name,
                    "what": m.what,
                    "error": f"{path}: the text to edit is not there once",
                }
            target.write_text(text.replace(old, new))
        python = make_venv(tree)
        # The copy, not ours: the mutant is what runs.
        probe = subprocess.run(
            [str(python), "-c", "import circuit.tracer.procfs as p; print(p.__file__)"],
            cwd=tree,
            capture_output=True,
            text=True,
        )
        assert str(tree) in probe.stdout, probe.stdout + probe.stderr
        results = []
        for test in m.tests:
            t0 = time.monotonic()
            r = subprocess.run(
                [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                cwd=tree,
                capture_output=True,
                text=True,
            )
            results.append(
                {
                    "tests": test,
                    "failed": r.returncode != 0,
                    "failures": FAILED.findall(r.stdout)[:5],
                    "summary": (r.stdout.strip().splitlines() or [""])[-1],
                    "seconds": round(time.monotonic() - t0, 1),
                }
            )
            print(f"  {m.name}: {test}: {results[-1]['summary']}", file=sys.stderr, flush=True)
    return {
        "mutant": m.name,
        "what": m.what,
        "killed": any(r["failed"] for r in results),
        "runs": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mutants.json"))
    a = ap.parse_args()
    if a.list:
        for m in MUTANTS:
            print(f"{m.name}: {m.what}")
        return 0
    chosen = [m for m in MUTANTS if not a.names or m.name in a.names]
    out = []
    for m in chosen:
        print(f"{m.name}: {m.what}", file=sys.stderr, flush=True)
        out.append(run_mutant(m))
        print(
            f"  -> {'killed' if out[-1].get('killed') else 'SURVIVED'}", file=sys.stderr, flush=True
        )
    if a.names and Path(a.out).exists():
        # Some mutants: the others keep their last verdicts.
        ran = {r["mutant"]: r for r in out}
        old = {r["mutant"]: r for r in json.loads(Path(a.out).read_text())["mutants"]}
        out = [ran.get(m.name) or old[m.name] for m in MUTANTS if m.name in ran or m.name in old]
    Path(a.out).write_text(json.dumps({"benchmark": "mutants", "mutants": out}, indent=1) + "\n")
    return 0 if all(r.get("killed") for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
