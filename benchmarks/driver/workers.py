"""Run K driver processes in step and gather what they measured.

Each worker process gets its own config, sets itself up (connects, logs its
users in: the slow, uninteresting part), then calls ``ctl.wait_go()``, which
reports "ready" to the parent and blocks until every worker is ready.  The
parent then sends one start instant on ``time.monotonic()``, which is
CLOCK_MONOTONIC on Linux and so the same clock in every process: all workers
warm up and measure over the same wall-clock window.  Workers publish a
running count in shared memory (``ctl.progress``) for the parent's live line,
and return one JSON-able dict each.

Processes are started with "spawn": the parent has threads (it drains the
servers' logs) and forking a threaded process is unsafe.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

Result = dict[str, Any]


class WorkerControl:
    """The worker's side of the parent link."""

    def __init__(self, pipe: Connection, counters: Any, index: int) -> None:
        self._pipe = pipe
        self._counters = counters
        self.index = index

    def wait_go(self, timeout: float = 120.0) -> float:
        """Report ready, block until the parent says go; return the start instant."""
        self._pipe.send(("ready", None))
        if not self._pipe.poll(timeout):
            raise TimeoutError("no go from the parent")
        kind, start = self._pipe.recv()
        assert kind == "go"
        return float(start)

    def progress(self, count: int) -> None:
        """Publish a running count (no lock: one writer, a torn read is harmless)."""
        self._counters[self.index] = count


WorkerFn = Callable[[dict[str, Any], WorkerControl], Result]


def _entry(fn: WorkerFn, config: dict[str, Any], pipe: Connection, counters: Any,
           index: int) -> None:
    try:
        result = fn(config, WorkerControl(pipe, counters, index))
        pipe.send(("result", result))
    except BaseException as exc:  # reported to the parent, which fails the run
        pipe.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
    finally:
        pipe.close()


Mark = tuple[float, Callable[[], None]]


def run_workers(fn: WorkerFn, configs: list[dict[str, Any]], *, label: str = "",
                start_delay: float = 0.05, progress_every: float = 1.0,
                setup_timeout: float = 120.0, marks: Sequence[Mark] = ()) -> list[Result]:
    """Start one process per config, start them together, return their results in order.

    While they run, a live line on stderr shows the summed count per second
    (only when stderr is a terminal), and each ``(offset, fn)`` of ``marks``
    is called about ``offset`` seconds after the common start (to 50 ms; e.g.
    to read a server's CPU time at the edges of the measuring window).
    """
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", len(configs), lock=False)
    procs, pipes = [], []
    for i, cfg in enumerate(configs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_entry, args=(fn, cfg, child, counters, i), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    try:
        for pipe in pipes:
            _expect(pipe, "ready", setup_timeout)
        start = time.monotonic() + start_delay
        for pipe in pipes:
            pipe.send(("go", start))
        _show_progress(pipes, counters, label, progress_every,
                       sorted(((start + off, f) for off, f in marks), key=lambda m: m[0]))
        results = [_expect(pipe, "result", 60.0) for pipe in pipes]
    finally:
        for p in procs:
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join()
    return results


def _expect(pipe: Connection, kind: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a driver process sent no {kind!r} in {timeout:.0f}s")
    try:
        got, payload = pipe.recv()
    except EOFError:
        raise RuntimeError("a driver process died") from None
    if got == "error":
        raise RuntimeError(f"a driver process failed: {payload}")
    if got != kind:
        raise RuntimeError(f"a driver process sent {got!r}, expected {kind!r}")
    return payload


def _show_progress(pipes: list[Connection], counters: Any, label: str, every: float,
                   marks: list[Mark]) -> None:
    """Until every worker has its result ready, print the rate now and then; call marks."""
    live = sys.stderr.isatty()
    last_t, last_n = time.monotonic(), 0
    while marks or not all(p.poll() for p in pipes):
        time.sleep(0.05 if marks else 0.1)
        now = time.monotonic()
        while marks and marks[0][0] <= now:
            marks.pop(0)[1]()
        if live and now - last_t >= every:
            n = sum(counters)
            rate = (n - last_n) / (now - last_t)
            sys.stderr.write(f"\r  {label}: {n:,} delivered, {rate:,.0f}/s      ")
            sys.stderr.flush()
            last_t, last_n = now, n
    if live:
        sys.stderr.write("\r" + " " * 70 + "\r")
        sys.stderr.flush()
