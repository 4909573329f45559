"""Warnings that a hostile client could repeat at will, summarised per process.

A client can make the server warn as often as it can send: every message over
the offline cap, every connection over the limit, every flood.  One line per
event would let it fill the disk and bury the lines that matter.  So each
repeated *kind* of warning is rate-limited per process: the first event of a
kind in an interval is logged as it is, the rest are counted, and one line at
the end of the interval (the server's timer calls `flush`, or the next event
of that kind after the interval) says how many there were and about how many
subjects, e.g. "dropped 4,980 oldest offline messages for 3 users in the last
10 s".

Safe from any thread: the counters live under one lock, held for dictionary
operations only; logging happens after it is released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_INTERVAL = 10.0
_MAX_SUBJECTS = 100_000  # distinct subjects remembered per kind and interval


@dataclass(slots=True)
class _Tally:
    started: float
    summary: str  # format string with {events}, {amount}, {subjects}, {seconds}
    level: int
    events: int = 0
    amount: int = 0
    subjects: set[object] = field(default_factory=set)


class WarningSummary:
    """The first warning of a kind per interval in full, the rest as one summary line."""

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}

    def warn(self, kind: str, summary: str, subject: object, amount: int,
             msg: str, *args: object, level: int = logging.WARNING,
             extra: dict[str, object] | None = None) -> None:
        """Log ``msg % args`` if it is the first ``kind`` this interval, else count it.

        ``summary`` is the line that stands for the counted ones; it may use
        ``{events}``, ``{amount}`` (the sum of ``amount``), ``{subjects}`` (how
        many distinct ``subject``) and ``{seconds}``.  ``extra`` goes with the
        line that is logged (the JSON log's fields, chat/logs.py).
        """
        now = self._clock()
        with self._lock:
            tally = self._tallies.get(kind)
            due = tally if tally is not None and now - tally.started >= self.interval else None
            if tally is None or due is not None:
                self._tallies[kind] = _Tally(now, summary, level)
                first = True
            else:
                first = False
                tally.events += 1
                tally.amount += amount
                if len(tally.subjects) < _MAX_SUBJECTS:
                    tally.subjects.add(subject)
        if due is not None:
            self._log_summary(due, now)
        if first:
            self.logger.log(level, msg, *args, extra=extra)

    def flush(self) -> None:
        """Timer, any thread: write the summary of every interval that is over."""
        now = self._clock()
        with self._lock:
            due = [(kind, t) for kind, t in self._tallies.items()
                   if now - t.started >= self.interval]
            for kind, _ in due:
                del self._tallies[kind]
        for _, tally in due:
            self._log_summary(tally, now)

    def _log_summary(self, tally: _Tally, now: float) -> None:
        if not tally.events:
            return
        self.logger.log(tally.level, tally.summary.format(
            events=tally.events, amount=tally.amount, subjects=len(tally.subjects),
            seconds=round(now - tally.started)))
