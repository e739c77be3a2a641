"""``circuit top``: a tracing session with a live view beside it.

The session (tracer/session.py) runs in the main thread as for ``run`` and
``attach``, with one more observer (tracer/live.py) that hands the view the
record batches the run folder gets.  The view runs in a thread of its own,
in turns with the sampler (the observer wakes it at each refresh and waits
for it: tracer/live.py says why): it keeps the last window
(analysis/live_window.py), computes its figures (analysis/live.py) and
draws them (analysis/top_render.py) on the terminal with rich, or as plain
text when stdout is not a terminal.  Keys are read from the terminal in
cbreak mode, between turns; the terminal is restored on every way out.

``q`` and the end of ``--once`` stop the session the way Ctrl-C does: a
SIGINT to circuit itself, which the session takes as any interrupt (an
attached target is left running, a started one is interrupted as under
``circuit run``).  ``d`` is SIGUSR1: the py-spy observer dumps every traced
Python process, and the view shows the selected thread's stack from it.
"""

from __future__ import annotations

import os
import platform
import select
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuit.tracer import signals
from circuit.tracer.live import LiveFeed
from circuit.tracer.options import Options
from circuit.tracer.pyspy import PySpyObserver

from .top_terminal import cbreak, restore
from .top_terminal import keys as read_keys

REFRESH_S = 0.5
# The window's figures are recomputed this often, or each window if it is
# shorter (the "now" columns at each refresh), and less often if a
# recompute costs more than FIGURES_CPU_SHARE of a core at that pace: a
# recompute is 20-45 ms of CPU for 100 threads (pandas' per-call overhead,
# whatever the rows), most of the view's cost (docs/performance.md, top_cost).
FIGURES_EVERY_S = 2.0
FIGURES_CPU_SHARE = 0.01
STACK_LINES = 12  # the stack panel's frames, innermost first
THREAD_NAME = "circuit-top"  # the view thread's name in /proc (benchmarks/top_cost.py)


@dataclass
class TopTarget:
    pid: int | None = None
    cmd: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        if self.pid is not None:
            return f"circuit top: PID {self.pid}"
        return f"circuit top: {shlex.join(self.cmd)}"


def top(
    what: TopTarget, opts: Options, window_s: float = 2.0, once: bool = False, save: bool = False
) -> int:
    """Watch ``what`` until it exits, ``q``, Ctrl-C or (``once``) one
    window; return circuit's exit status: the command's, or 0 for a PID."""
    # numpy, pandas and pyarrow load in the view's thread, or in the session
    # once it has blocked its signals (not before: the command it starts
    # gets the mask the session found): the threads they start inherit the
    # mask, and a SIGUSR1 (``d``) or SIGINT (``q``) taken by one of them
    # would kill circuit instead of reaching the session.
    from circuit.tracer.session import attach, check_attachable, describe, run_command

    if what.pid is not None:
        check_attachable(what.pid)
    tmp = None
    if not save:
        tmp = Path(tempfile.mkdtemp(prefix="circuit-top-"))
        opts.out = tmp
    feed = LiveFeed(REFRESH_S)
    opts.observers.append(feed)
    if once and what.pid is not None:
        opts.duration = window_s
    tty = not once and sys.stdout.isatty()
    keys = tty and sys.stdin.isatty()
    meta = {
        "rate_hz_requested": opts.rate,
        "machine": platform.machine(),
        "loop_threshold_s": opts.loop_threshold,
    }
    view = LiveView(feed, window_s, what.title, meta, opts, tty=tty, keys=keys, once=once)
    view.stop_after_window = once and what.pid is None
    quiet = opts.quiet
    if tty:
        opts.quiet = True  # progress lines would land in the middle of the view
    old_tty = cbreak() if keys else None
    code = 0
    run_meta: dict[str, Any] = {}
    try:
        view.start()
        try:
            if what.pid is not None:
                run_meta = attach(what.pid, opts)
            else:
                code, run_meta = run_command(what.cmd, opts)
        finally:
            view.finish(run_meta, code, what.pid is not None)
    finally:
        if old_tty is not None:
            restore(old_tty)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if view.error is not None:
        raise view.error
    view.print_last()
    if save and not quiet:
        if not once:
            print(f"circuit: {describe(run_meta)}", file=sys.stderr)
        print(f"circuit: run saved in {opts.out}  (circuit summary {opts.out})", file=sys.stderr)
    if what.pid is not None:
        return 0
    return code


class LiveView:
    """The view's thread: keys, the window, the figures, the drawing."""

    def __init__(
        self,
        feed: LiveFeed,
        window_s: float,
        title: str,
        meta: dict[str, Any],
        opts: Options,
        tty: bool,
        keys: bool,
        once: bool,
    ) -> None:
        self.feed = feed
        self.window_s = window_s
        self.title = title
        self.meta = meta
        self.tty, self.keys, self.once = tty, keys, once
        self.dumps = any(isinstance(o, PySpyObserver) for o in opts.observers)
        self.win: Any = None  # LiveWindow, made in the view's thread (see top())
        self.screen: Any = None  # Screen, likewise
        self.view: dict[str, Any] | None = None
        self.figures: dict[str, Any] | None = None  # the last computed window
        self.latest: Any = None
        self.pids: list[int] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.end_message = ""
        self.stopping = 0  # q presses
        self.dump_asked_ns = 0
        self.stop_after_window = False  # --once of a command: interrupt it after one window
        self._last_figures = 0.0
        self.figures_every = min(FIGURES_EVERY_S, window_s)  # seconds between recomputes
        self._figures_cpu = 0.0  # a recompute's CPU, smoothed
        self._recomputes = 0
        self._last_print = 0.0
        self._maps: Any = None  # the window's maps: the newest rows' GIL waits
        self._shown: tuple = ()  # what the terminal shows now
        self._wake_r, wake_w = os.pipe()  # the sampler's "your turn" (tracer/live.py)
        self._wake_w = wake_w
        feed.take_turns(wake_w)
        self._thread = threading.Thread(target=self._main, name="circuit-top", daemon=True)

    # -- the main thread's side --------------------------------------------------

    def start(self) -> None:
        # Started with the session's signals blocked: a SIGINT or SIGUSR1 to
        # circuit must reach the session's wait, never this thread.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signals.SIGNALS)
        try:
            self._thread.start()
            if self.stop_after_window:
                threading.Thread(target=self._stop_after_window, daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def finish(self, run_meta: dict[str, Any], code: int, attached: bool) -> None:
        """The session ended: say why, draw the last frame, wait for the thread."""
        reason = run_meta.get("stop_reason")
        if reason == "target exited":
            self.end_message = "target exited" if attached else f"target exited (status {code})"
        elif not attached and run_meta:
            self.end_message = f"target stopped (status {code})"
        self.done.set()
        try:
            os.write(self._wake_w, b"e")  # out of its wait now
        except OSError:
            pass
        self._thread.join(timeout=30)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def print_last(self) -> None:
        """--once: the snapshot; and why the view ended."""
        from circuit.analysis.top_render import plain_text

        if self.once and self.view is not None and self.screen is not None:
            sys.stdout.write(plain_text(self.view, self.title, self.screen.sort))
        if self.end_message:
            print(f"circuit: {self.end_message}", flush=True)

    def _stop_after_window(self) -> None:
        """--once of a command: stop it after one window, as q does."""
        self.feed.started.wait()
        time.sleep(self.window_s)
        if self.feed.stopped is None:
            os.kill(os.getpid(), signal.SIGINT)

    # -- the view's thread ------------------------------------------------------------

    def _main(self) -> None:
        from circuit.tracer.prctl import name_thread

        name_thread(THREAD_NAME)
        try:
            from circuit.analysis.live_window import LiveWindow
            from circuit.analysis.top_render import Screen

            # --once: the run is the window (it lasts one), none of it is left out
            self.win = LiveWindow(self.window_s * 2 if self.once else self.window_s)
            self.screen = Screen()
            while not self.feed.started.wait(0.1):
                if self.done.is_set():
                    return  # the session ended before it started
            self.win.run_dir = self.feed.run_dir
            if self.tty:
                self._live()
            else:
                self._plain()
        except BaseException as e:  # never leave the session running blind
            self.error = e
            self.feed.take_turns_no_more()
            if self.feed.stopped is None:
                os.kill(os.getpid(), signal.SIGINT)

    def _turns(self, turn: Any, redraw: Any = None) -> None:
        """Wait for the sampler's turns (``turn()`` in each) and, with
        ``redraw``, for keys, until the session ends."""
        fds = [self._wake_r] + ([sys.stdin.fileno()] if self.keys else [])
        while not self.done.is_set():
            ready, _, _ = select.select(fds, [], [])
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                if self.done.is_set():
                    break
                try:
                    turn()
                finally:
                    self.feed.turn_done.set()
            if redraw is not None and len(fds) > 1 and fds[1] in ready and self._key():
                redraw()
            if redraw is not None and not self.keys and len(fds) > 1:
                fds = fds[:1]  # the terminal went away

    def _plain(self) -> None:
        """No terminal: a table every window (--once: one, at the end)."""
        from circuit.analysis.top_render import plain_text

        self._last_print = time.monotonic()

        def turn() -> None:
            self._take()
            if not self.once and time.monotonic() - self._last_print >= self.window_s:
                self._last_print += self.window_s
                self._compute(force=True)
                if self.view is not None:
                    sys.stdout.write(plain_text(self.view, self.title) + "\n")
                    sys.stdout.flush()

        self._turns(turn)
        self._take()
        if self.once:
            self._compute(force=True)

    def _live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        from circuit.analysis.top_render import rich_view

        console = Console()
        with Live(
            console=console,
            auto_refresh=False,
            screen=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:

            def turn() -> None:
                self._take()
                self._compute()
                self._draw(live, console)

            self._turns(turn, lambda: self._draw(live, console))
            self._take()
            self._compute(force=True)
            self._draw(live, console)
        # The full screen is gone with its last frame: leave that frame.
        console.print(rich_view(self.view, self.title, self.screen))

    def _draw(self, live: Any, console: Any) -> None:
        from circuit.analysis.top_render import rich_view

        self.screen.height = console.size.height
        if self.end_message:
            self.screen.message = self.end_message
        s = self.screen
        shown = (self.view, s.sort, s.selected, s.paused, s.message, tuple(s.stack), s.height)
        if shown == self._shown:
            return  # nothing new to draw (idle threads, a paused view)
        self._shown = shown
        live.update(rich_view(self.view, self.title, self.screen), refresh=True)

    def _take(self) -> None:
        new, self.latest, self.pids = self.feed.take()
        for table, batch in new:
            self.win.add(table, batch)

    def _compute(self, force: bool = False) -> None:
        """The window's figures (every ``figures_every`` s, or now if
        ``force``), then the newest rows' state, wait and GIL holder."""
        from circuit.analysis.live import apply_now, live_view, now_rows

        if self.screen.paused and not self.done.is_set():
            return  # the view stays as it was; the window goes on filling
        now = time.monotonic()
        due = now - self._last_figures >= self.figures_every or self.figures is None
        if self.win.changed and (due or force):
            c0 = time.thread_time()
            frames = self.win.frames()
            if frames is not None:
                live = None if self.done.is_set() else self.pids
                self.figures = live_view(self.meta, frames, pids=live)
                self._last_figures = now
                self._maps = frames.maps
                self._pace(time.thread_time() - c0)
        if self.figures is None:
            return
        view = self.figures
        if self.latest is not None and self.latest.threads and not self.done.is_set():
            fresh = now_rows(self.latest.threads, self._maps, view["futex_waits"])
            view = apply_now(view, fresh, self.latest.gil)
        self.view = view
        self._keep_selection()
        if self.dump_asked_ns:
            self._show_stack()

    def _pace(self, cost_s: float) -> None:
        """The next recompute's distance: the nominal one, or longer when a
        recompute costs more than FIGURES_CPU_SHARE of a core at that pace
        (many threads, a loaded machine); the header says so."""
        self._recomputes += 1
        if self._recomputes == 1:
            return  # the first pays for imports and warm caches
        c = self._figures_cpu
        self._figures_cpu = cost_s if c == 0.0 else 0.7 * c + 0.3 * cost_s
        nominal = min(FIGURES_EVERY_S, self.window_s)
        self.figures_every = max(nominal, self._figures_cpu / FIGURES_CPU_SHARE)
        if self.figures is not None:
            slow = self.figures_every > nominal * 1.05
            self.figures["figures_every_s"] = round(self.figures_every, 1) if slow else None

    # -- keys -------------------------------------------------------------------------

    def _key(self) -> bool:
        """Act on the keys the terminal sent; True: redraw."""
        data = os.read(sys.stdin.fileno(), 64)
        if not data:
            self.keys = False  # the terminal went away: no more keys
            return False
        redraw = False
        for key in read_keys(data):
            redraw = self._on_key(key) or redraw
        return redraw

    def _on_key(self, key: str) -> bool:
        from circuit.analysis.top_render import SORTS

        s = self.screen
        if key == "q":
            self.stopping += 1
            if self.feed.stopped is None:
                s.message = "stopping…" if self.stopping == 1 else "stopping (again)…"
                os.kill(os.getpid(), signal.SIGINT)
        elif key == "s":
            s.sort = SORTS[(SORTS.index(s.sort) + 1) % len(SORTS)]
        elif key == "p":
            s.paused = not s.paused
            if s.paused:
                s.message = "paused (sampling goes on): p resumes"
            else:
                s.message = ""
            return True
        elif key in ("up", "down", "k", "j"):
            self._move(-1 if key in ("up", "k") else 1)
        elif key == "d":
            self._dump()
        else:
            return False
        return True

    def _move(self, step: int) -> None:
        from circuit.analysis.top_render import order

        if self.view is None:
            return
        keys = order(self.view, self.screen.sort)
        if not keys:
            return
        s = self.screen
        i = keys.index(s.selected) + step if s.selected in keys else 0
        s.selected = keys[max(0, min(len(keys) - 1, i))]
        if self.dump_asked_ns:
            self._show_stack()

    def _keep_selection(self) -> None:
        from circuit.analysis.top_render import order

        keys = order(self.view, self.screen.sort) if self.view else []
        if keys and self.screen.selected not in keys:
            self.screen.selected = keys[0]

    def _dump(self) -> None:
        s = self.screen
        if not self.dumps:
            s.message = "d: py-spy is off (--no-pyspy)"
            return
        if self.feed.stopped is not None:
            return
        self.dump_asked_ns = time.monotonic_ns()
        s.message = "d: py-spy dump asked…"
        s.stack = []
        os.kill(os.getpid(), signal.SIGUSR1)

    def _show_stack(self) -> None:
        """The selected thread's stack from the newest dump taken after ``d``."""
        from circuit.analysis.top_render import thread_name

        s = self.screen
        stacks = self.win.stacks()
        if s.selected is None or not len(stacks):
            return
        pid, tid = s.selected
        fresh = stacks[stacks["end_ns"] >= self.dump_asked_ns]
        if not len(fresh):
            return
        s.message = ""
        mine = fresh[(fresh["pid"] == pid) & (fresh["tid"] == tid)]
        rows = [t for p in (self.view or {}).get("processes", []) for t in p["thread_rows"]]
        name = next((thread_name(t) for t in rows if (t["pid"], t["tid"]) == (pid, tid)), "")
        if not len(mine):
            s.stack = [f"py-spy dump: no Python stack for {name} ({tid}) in it"]
            return
        row = mine.iloc[-1]
        ago = (time.monotonic_ns() - int(row["end_ns"])) / 1e9
        frames = list(row["frames"] or [])
        lines = [f"stack of {name} ({tid}), py-spy dump {ago:.1f} s ago, innermost first:"]
        for f in frames[:STACK_LINES]:
            lines.append(f"  {f.get('name')}  ({f.get('file')}:{f.get('line')})")
        if len(frames) > STACK_LINES:
            lines.append(f"  … {len(frames) - STACK_LINES} more frames")
        if not frames:
            lines.append("  (no Python frames: idle, or in native code)")
        s.stack = lines
