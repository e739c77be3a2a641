"""Sensitive data and privileges: --redact, the environment, owner-only run
folders, attaching to another user's process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import circuit
from circuit.tracer.redact import MASK, redact_argv, redact_env
from tests.support.helpers import PY, cli, code, kill_quietly, trace

SECRETS = ["hunter2", "abc123", "xyz789", "pw0rd", "s3cr3t", "k3yv4l"]
ARGS = [
    "--password",
    "hunter2",
    "--api-key=abc123",
    "DB_TOKEN=xyz789",
    "https://bob:pw0rd@example.invalid/x",
    "--client-secret",
    "s3cr3t",
    "-key",
    "k3yv4l",
    "--verbose",
    "plain",
]


# ------------------------------------------------------------ pure logic


def test_redact_argv_forms():
    assert redact_argv(ARGS) == [
        "--password",
        MASK,
        f"--api-key={MASK}",
        f"DB_TOKEN={MASK}",
        f"https://bob:{MASK}@example.invalid/x",
        "--client-secret",
        MASK,
        "-key",
        MASK,
        "--verbose",
        "plain",
    ]


def test_redact_argv_leaves_the_rest():
    argv = ["python", "-m", "http.server", "--bind", "127.0.0.1", "8000", "X=1", "-c", "print(1)"]
    assert redact_argv(argv) == argv
    # a secret option followed by another option has no value to mask
    assert redact_argv(["--token", "--verbose", "x"]) == ["--token", "--verbose", "x"]
    assert redact_argv(["--PASSWORD=", "PASSWD=a=b"]) == [f"--PASSWORD={MASK}", f"PASSWD={MASK}"]


def test_redact_env():
    env = {"HOME": "/root", "AWS_SECRET_ACCESS_KEY": "k", "GITHUB_TOKEN": "t", "DB_PASS": "p"}
    env["URL"] = "postgres://me:pw@db/x"
    assert redact_env(env) == {
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": MASK,
        "GITHUB_TOKEN": MASK,
        "DB_PASS": MASK,
        "URL": f"postgres://me:{MASK}@db/x",
    }


# ------------------------------------------------------------- live runs

# The target starts a child carrying secrets too; both must be masked.
CHILD = """
import subprocess, sys
secret = sys.argv[sys.argv.index("--client-secret") + 1]
subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)", "--token", secret])
"""


def _all_text(run_dir: Path) -> str:
    """Every byte of the run folder, meta and decoded tables."""
    run = circuit.load(run_dir)
    parts = [(run_dir / "meta.json").read_text()]
    for df in (run.procs, run.threads, run.fds, run.processes):
        parts.append(df.astype(str).to_csv())
    return "\n".join(parts)


@pytest.mark.integration
def test_redact_masks_meta_and_procs(tmp_path):
    out = tmp_path / "run"
    r = cli("run", "-q", "--redact", "-o", str(out), "--", PY, "-c", code(CHILD), *ARGS)
    assert r.returncode == 0, r.stderr
    text = _all_text(out)
    for s in SECRETS:
        assert s not in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"][3:] == redact_argv(ARGS)
    procs = circuit.load(out).procs
    assert len(procs) == 2
    assert all(MASK in c for c in procs["cmdline"])


@pytest.mark.integration
def test_without_redact_the_values_are_kept(tmp_path):
    # the control: the same run without --redact does record them
    out = tmp_path / "plain"
    r = cli("run", "-q", "-o", str(out), "--", PY, "-c", "pass", *ARGS)
    assert r.returncode == 0
    text = _all_text(out)
    assert all(s in text for s in SECRETS)


@pytest.mark.integration
def test_environment_never_recorded_unless_asked(tmp_path):
    env = {**os.environ, "CANARY_VALUE": "zebra-4711", "MY_API_TOKEN": "tok-0815"}
    out = tmp_path / "run"
    r = cli("run", "-q", "-o", str(out), "--", PY, "-c", "import time; time.sleep(0.2)", env=env)
    assert r.returncode == 0
    for f in out.rglob("*"):
        if f.is_dir():
            continue  # e.g. pyspy/
        data = f.read_bytes()
        assert b"zebra-4711" not in data and b"tok-0815" not in data, f
    assert "environment" not in json.loads((out / "meta.json").read_text())

    out2 = tmp_path / "with-env"
    r = cli("run", "-q", "--record-env", "-o", str(out2), "--", PY, "-c", "pass", env=env)
    assert r.returncode == 0
    recorded = json.loads((out2 / "meta.json").read_text())["environment"]
    assert recorded["CANARY_VALUE"] == "zebra-4711"
    assert recorded["MY_API_TOKEN"] == MASK


@pytest.mark.integration
def test_attach_record_env_and_redact(tmp_path):
    env = {**os.environ, "CANARY_VALUE": "zebra-4711", "SESSION_SECRET": "tok-0815"}
    target = subprocess.Popen(
        [PY, "-c", "import time; time.sleep(30)", "--password", "hunter2"], env=env
    )
    try:
        out = tmp_path / "run"
        r = cli(
            "attach", str(target.pid), "-q", "--redact", "--record-env", "--duration", "0.3",
            "-o", str(out),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        target.kill()
        target.wait()
    text = _all_text(out)
    assert "hunter2" not in text and "tok-0815" not in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["environment"]["CANARY_VALUE"] == "zebra-4711"
    assert meta["command"][-2:] == ["--password", MASK]


# ------------------------------------------------------ owner-only files


def _modes(run_dir: Path) -> dict[str, int]:
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in [run_dir, *run_dir.rglob("*")]}


@pytest.mark.integration
def test_finished_run_is_owner_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir(mode=0o755)  # an existing, world-readable folder is tightened
    os.chmod(out, 0o755)
    old = os.umask(0)  # the most permissive umask a user could have
    try:
        status, run = trace(
            tmp_path, "import circuit, time; circuit.mark('hello'); time.sleep(0.2)"
        )
    finally:
        os.umask(old)
    assert status == 0 and len(run.marks) == 1
    modes = _modes(out)
    assert str(out / "marks.jsonl") in modes
    for p, m in modes.items():
        assert m == (0o700 if Path(p).is_dir() else 0o600), (p, oct(m))


# ------------------------------------------------------------ privileges


def _can_switch_users() -> str | None:
    if os.geteuid() != 0:
        return "needs root to start processes as other users"
    if shutil.which("setpriv") is None:
        return "setpriv is not installed"
    return None


def _world_readable(path: Path) -> bool:
    """Can an unprivileged user run the venv's circuit from this worktree?"""
    r = subprocess.run(
        ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", PY, "-c", "import circuit"],
        capture_output=True,
        cwd="/",
    )
    return r.returncode == 0


@pytest.fixture
def unprivileged_dir():
    """A folder uid 65533 can write (pytest's tmp_path is under a root-only dir)."""
    d = Path(tempfile.mkdtemp(prefix="circuit-uid65533-", dir="/tmp"))
    os.chown(d, 65533, 65533)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.skipif(_can_switch_users() is not None, reason=str(_can_switch_users()))
def test_attach_to_another_users_process_is_refused(unprivileged_dir):
    if not _world_readable(Path(sys.prefix)):
        pytest.skip("the venv is not readable by an unprivileged user")

    def as_nobody() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    # /bin/sleep: the venv's interpreter lives under /root (0700) on the
    # reference machine, so another user can exec it only through setpriv.
    target = subprocess.Popen(["sleep", "30"], preexec_fn=as_nobody)
    out = unprivileged_dir
    try:
        time.sleep(0.2)
        r = subprocess.run(
            ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", PY, "-m", "circuit",
             "attach", str(target.pid), "-o", str(out / "run"), "--duration", "0.5"],
            capture_output=True, text=True, timeout=60, cwd="/",
        )  # fmt: skip
    finally:
        kill_quietly(target.pid)
        target.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    msg = lines[0]
    assert msg.startswith("circuit: error: permission denied")
    assert f"PID {target.pid}" in msg and "65534" in msg
    assert "run circuit as that user, or as root (or with CAP_SYS_PTRACE)" in msg
    assert not (out / "run").exists()  # refused before anything was written


@pytest.mark.integration
@pytest.mark.skipif(_can_switch_users() is not None, reason=str(_can_switch_users()))
def test_circuit_grants_the_target_nothing(unprivileged_dir):
    # circuit run by an unprivileged user: the target has that user's ids and
    # no capabilities (circuit is no setuid program and asks for nothing).
    if not _world_readable(Path(sys.prefix)):
        pytest.skip("the venv is not readable by an unprivileged user")
    out = unprivileged_dir
    probe = (
        "echo $(id -ru) $(id -u) $(id -rg) $(id -g) "
        "$(awk '/^Cap(Eff|Prm)/ {print $2}' /proc/self/status)"
    )
    r = subprocess.run(
        ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", PY, "-m", "circuit",
         "run", "-q", "-o", str(out / "run"), "--", "sh", "-c", probe],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    uid, euid, gid, egid, eff, prm = r.stdout.split()
    assert (uid, euid, gid, egid) == ("65533",) * 4
    assert int(eff, 16) == 0 and int(prm, 16) == 0
    assert stat.S_IMODE(os.stat(PY).st_mode) & (stat.S_ISUID | stat.S_ISGID) == 0
    assert circuit.load(out / "run").meta["finalized"] is True
