"""A bounded pool of worker threads for slow calls that must not run on a loop.

A password hash (scrypt, tens of milliseconds by design) on a sub-reactor
thread holds up every other connection of that loop; five hundred
registrations in a burst once held chat up for seconds.  Such calls go to
`WorkerPool.submit` instead, which never blocks: when the queue is full it
says so at once, and the caller refuses the request ("server busy") rather
than let a queue of hashes grow without bound.  When a call is done its
`Outcome` goes to the ``done`` callback in the worker thread; the service's
callback posts it back to the connection's own loop.

Bounded: at most ``threads`` calls run and ``queue_size`` wait.  With no
threads at all, `submit` runs the call in the caller's thread, at once (the
old behaviour, and what in-process tests with a fake connection want).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("chat.workers")

Work = Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a call returned, or the exception it raised."""

    value: Any = None
    error: Exception | None = None

    def result(self) -> Any:
        """The value, or raise the call's exception (in the caller's thread)."""
        if self.error is not None:
            raise self.error
        return self.value


Done = Callable[[Outcome], None]


class WorkerPool:
    """``threads`` daemon threads and a queue of at most ``queue_size`` calls."""

    def __init__(self, threads: int, queue_size: int, name: str = "worker") -> None:
        if threads < 0 or queue_size < 1:  # queue.Queue(0) would be unbounded
            raise ValueError("a worker pool needs threads >= 0 and one queue slot")
        self._queue: queue.Queue[tuple[Work, Done] | None] = queue.Queue(queue_size)
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, work: Work, done: Done) -> bool:
        """Any thread: queue ``work``; False at once, and nothing queued, if full."""
        if not self._threads:
            done(_call(work))
            return True
        try:
            self._queue.put_nowait((work, done))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            work, done = item
            try:
                done(_call(work))
            except Exception:
                log.exception("a worker's done callback failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Let queued calls finish, then end the threads (waits up to ``timeout`` each)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)


def _call(work: Work) -> Outcome:
    try:
        return Outcome(value=work())
    except Exception as exc:  # the caller decides: re-raised by Outcome.result
        return Outcome(error=exc)
