"""circuit report on real traced runs and a real (tiny) bench, and in a real browser."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

import circuit
from circuit.analysis.report import write_report
from circuit.cli import main
from tests.support.report_data import EVIL, build_bench

pytestmark = pytest.mark.integration

SECTIONS = [
    "findings",
    "threads",
    "loops",
    "sleep",
    "switches",
    "cpu",
    "gil",
    "fds",
    "epoll",
    "tasks",
]
BENCH_SECTIONS = ["models", "scaling", "sleep", "gil", "epoll", "runs"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bench(tmp_path_factory.mktemp("bench") / "b")


@pytest.fixture(scope="module")
def reports(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    got = {}
    for name, target in (
        ("threads", bench / "runs" / "io-threads-4"),
        ("asyncio", bench / "runs" / "io-asyncio-4"),
        ("bench", bench),
    ):
        assert main(["report", str(target), "-o", str(out / f"{name}.html")]) == 0
        got[name] = out / f"{name}.html"
    return got


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def test_report_is_self_contained(reports: dict[str, Path]) -> None:
    for p in reports.values():
        doc = _text(p)
        assert doc.startswith("<!DOCTYPE html>")
        # nothing loaded from anywhere: images are data: URIs, no src/href to files or the web
        assert not re.search(r"""(src|href)\s*=\s*['"](?!data:|#)""", doc)
        assert "<script" not in doc.lower()
        assert doc.count("src='data:image/png;base64,") >= 3


def test_report_escapes_target_strings(reports: dict[str, Path]) -> None:
    doc = _text(reports["threads"])
    assert EVIL not in doc and EVIL[:15] not in doc
    assert html.escape(EVIL) in doc  # the command line argument, escaped
    assert html.escape(EVIL[:15]) in doc  # the thread name (15 bytes), escaped
    # The Markdown twin, rendered as a Markdown viewer would (CommonMark + tables;
    # markdown-it-py comes with rich): the strings are text there too.
    from markdown_it import MarkdownIt

    md = (
        MarkdownIt("commonmark")
        .enable("table")
        .render(_text(reports["threads"].with_suffix(".md")))
    )
    assert "<script" not in md.lower()
    assert html.escape(EVIL) in md and html.escape(EVIL[:15]) in md


def test_run_report_sections_and_numbers(reports: dict[str, Path]) -> None:
    doc = _text(reports["threads"])
    for sid in SECTIONS:
        assert f"<section id='{sid}'>" in doc
    run = circuit.load(Path(_bench_run(reports, "io-threads-4")))
    s = run.summary()
    assert f"<b>{s['wall_s']:.3f} s</b>" in doc
    # the sleepers: time.sleep shows up as clock_nanosleep / nanosleep evidence
    assert re.search(r"slept <b>[\d.]+ (s|ms)</b> in <code>(clock_)?nanosleep</code>", doc)
    # four tasks, marked by the workload
    assert re.search(r"<b>4</b> tasks \(<b>4</b> finished\)", doc)
    assert "No GIL data in this run" in doc or "waiting for the GIL" in doc


def _bench_run(reports: dict[str, Path], name: str) -> str:
    # the bench fixture's layout: <bench>/runs/<name>
    doc = _text(reports["bench"])
    m = re.search(r"<td>([^<]*/runs/" + re.escape(name) + ")</td>", doc)
    assert m, name
    return html.unescape(m.group(1))


def test_asyncio_report_shows_epoll_evidence(reports: dict[str, Path]) -> None:
    doc = _text(reports["asyncio"])
    m = re.search(r"held <b>(\d+)</b> epoll fd\(s\) and <b>(\d+)</b> socket\(s\) at peak", doc)
    assert m, "epoll evidence missing"
    # the numbers are the run's own peaks (the tracer throttles fd scans, so
    # short-lived connections may be missed: compare with the data, not a guess)
    pr = circuit.load(Path(_bench_run(reports, "io-asyncio-4"))).processes
    assert int(m.group(1)) == pr["fds_epoll"].max() >= 1
    assert int(m.group(2)) == pr["fds_socket"].max() >= 1
    assert "epoll_wait" in doc or "epoll_pwait" in doc


def test_bench_report(reports: dict[str, Path]) -> None:
    doc = _text(reports["bench"])
    for sid in BENCH_SECTIONS:
        assert f"<section id='{sid}'>" in doc
    # io ran under 3 models at 2 and 4 tasks: compared at the larger count
    assert re.search(r"Workload <code>io</code> with <b>4 tasks</b>: fastest (was|were) ", doc)
    assert "Not measured" not in doc.split("<section id='scaling'>")[1].split("</section>")[0]
    assert (
        re.search(r"asyncio / 4</b> run held <b>1</b> epoll fd\(s\) and <b>\d+</b> socket", doc)
        is not None
    )
    md = reports["bench"].with_suffix(".md")
    text = _text(md)
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(pngs) >= 3 and all((md.parent / p).stat().st_size > 5000 for p in pngs)


def test_report_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run or bench folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a circuit run folder" in capsys.readouterr().err


def test_default_output_beside_folder(bench: Path) -> None:
    h, m = write_report(bench / "runs" / "cpu-threads-2")
    assert h == bench / "runs" / "cpu-threads-2-report.html" and h.exists()
    assert m == h.with_suffix(".md") and m.exists()


# -- real browser -----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

CHECK_JS = """
JSON.stringify({
  images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
  scripts: document.querySelectorAll('script').length,
  text: document.body.innerText,
})
"""


async def _browse(url: str, profile: str) -> tuple[dict[str, Any], list[str]]:
    """Open url in headless chromium over the DevTools protocol; return the
    page check and every console error, exception, failed load or dialog."""
    import aiohttp

    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,  # type: ignore[arg-type]
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ws_url = None
        assert proc.stderr is not None
        while ws_url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("chromium exited before DevTools was up")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
        port = re.search(r":(\d+)/", ws_url).group(1)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t["type"] == "page"]
            ws = await http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
            errors: list[str] = []
            n = 0

            async def call(method: str, **params: Any) -> dict[str, Any]:
                nonlocal n
                n += 1
                await ws.send_json({"id": n, "method": method, "params": params})
                while True:
                    msg = await asyncio.wait_for(ws.receive_json(), 30)
                    if msg.get("id") == n:
                        return msg
                    _collect(msg, errors)

            for d in ("Runtime", "Log", "Page"):
                await call(f"{d}.enable")
            await call("Page.navigate", url=url)
            while True:
                msg = await asyncio.wait_for(ws.receive_json(), 30)
                _collect(msg, errors)
                if msg.get("method") == "Page.loadEventFired":
                    break
            res = await call("Runtime.evaluate", expression=CHECK_JS, returnByValue=True)
            await ws.close()
        return json.loads(res["result"]["result"]["value"]), errors
    finally:
        proc.terminate()
        await proc.wait()


def _collect(msg: dict[str, Any], errors: list[str]) -> None:
    m, p = msg.get("method"), msg.get("params", {})
    if m == "Runtime.exceptionThrown":
        errors.append(f"exception: {p['exceptionDetails'].get('text')}")
    elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        errors.append(f"console.{p['type']}: {p.get('args')}")
    elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
        errors.append(f"log: {p['entry'].get('text')}")
    elif m == "Page.javascriptDialogOpening":
        errors.append(f"dialog: {p.get('message')}")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium; `make browser` does it)",
)
def test_report_renders_in_headless_chromium(reports: dict[str, Path]) -> None:
    for name, sections in (("threads", SECTIONS), ("bench", BENCH_SECTIONS)):
        with tempfile.TemporaryDirectory() as profile:
            page, errors = asyncio.run(_browse(reports[name].as_uri(), profile))
        assert errors == [], errors
        assert page["sections"] == sections
        assert page["scripts"] == 0
        assert len(page["images"]) >= 3
        for complete, w, h in page["images"]:
            assert complete and w > 300 and h > 100  # decoded, real plots
        if name == "threads":
            # the hostile strings are shown as text, not run
            assert EVIL in page["text"] and EVIL[:15] in page["text"]


def test_browser_check_detects_errors(tmp_path: Path) -> None:
    """The browser check itself can fail: a broken image and a console error are seen."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><section id='x'></section>"
        "<img src='data:image/png;base64,AAAA'><script>console.error('boom')</script></body></html>"
    )
    with tempfile.TemporaryDirectory() as profile:
        page, errors = asyncio.run(_browse(bad.as_uri(), profile))
    assert any("boom" in e for e in errors)
    assert page["images"][0][1] == 0  # undecodable image: naturalWidth 0
    assert os.path.exists(bad)


def test_notebook_repr_escapes_and_summarises(bench: Path) -> None:
    run = circuit.load(bench / "runs" / "io-threads-4")
    h = run._repr_html_()
    assert "<script" not in h and html.escape(EVIL) in h and html.escape(EVIL[:15]) in h
    s = run.summary()
    assert f"wall {s['wall_s']:.3f} s" in h
    assert h.count("<tr>") == 1 + len(s["threads"])
