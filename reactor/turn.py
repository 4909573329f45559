"""Turn-taking for the loops of one pool, and ``blocking()`` to step aside.

Why
---
CPython runs Python code in one thread at a time (the GIL), and every socket
call releases the GIL for its duration. With several busy loops, each
``recv``, ``send`` and ``select`` is a point where the GIL may pass to another
loop thread and back: a thread switch per syscall, which on a 2-core machine
cost a quarter of the throughput of a 4-loop echo server and more in the chat
ping-pong (see benchmarks/HISTORY.md).

A :class:`Turn` moves the hand-over from the syscall to the batch. The loops of
a pool share one turn: a loop waits in ``select()`` without it, takes it to run
its ready handlers, timers and callbacks, and keeps it for up to one *slice*
(by default the interpreter's switch interval, the same fairness trade-off the
GIL makes) while more work is ready at once. The other loops wait for the turn
asleep, so a syscall made while holding it hands the GIL to nobody.

What it is not: a lock for data. Code must stay correct without it (a pool can
run without turns, and a free-threaded Python gains nothing from them), so the
threading rules of the loops still hold as they are.

A handler that waits on something other than its loop's sockets (a database
query, a password hash, a round trip to Redis) wraps that wait in
:func:`blocking`, which gives the turn up for the duration and takes it back
after, so the other loops run meanwhile. Outside a turn it does nothing.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["Turn", "blocking"]

_held = threading.local()  # .turn: the Turn this thread holds, if any


class _Waiter:
    __slots__ = ("handed", "lock", "since")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # the waiter blocks on it; release() lets it go
        self.since = time.monotonic()
        self.handed = False


class Turn:
    """A turn that a thread may take back at once, but never for too long.

    Waking a sleeping waiter costs tens of microseconds, so when the holder
    lets go and has new work again before the woken waiter runs, it may take
    the turn back (as a plain lock allows). That keeps the CPU busy, but alone
    it could starve a loop; so a waiter that has waited a whole slice is
    handed the turn directly, first come first served.
    """

    def __init__(self, slice_seconds: float | None = None) -> None:
        if slice_seconds is None:
            slice_seconds = sys.getswitchinterval()
        if slice_seconds < 0:
            raise ValueError("slice_seconds must not be negative")
        self.slice_seconds = slice_seconds
        self._mutex = threading.Lock()
        self._taken = False
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._owed: list[Callable[[], None]] = []  # the holder's; see defer()

    def held_here(self) -> bool:
        """Whether the calling thread holds this turn."""
        return getattr(_held, "turn", None) is self

    def defer(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once this thread's turn ends. Only while holding it.

        For waking another loop of the turn: woken now, it could not run its
        handlers before the turn is free anyway, only take the GIL away.
        """
        self._owed.append(wake)

    def acquire(self) -> None:
        """Wait until it is this thread's turn. Not re-entrant."""
        with self._mutex:
            if not self._taken:
                self._taken = True
                _held.turn = self
                return
            waiter = _Waiter()
            self._waiters.append(waiter)
        while True:
            waiter.lock.acquire()
            with self._mutex:
                if waiter.handed:
                    break  # release() left the turn taken, for us
                if not self._taken:
                    self._taken = True
                    break
                self._waiters.appendleft(waiter)  # taken back first: still next in line
        _held.turn = self

    def release(self) -> None:
        """End this thread's turn, wake the longest waiter and what was deferred."""
        _held.turn = None
        owed, self._owed = self._owed, []
        with self._mutex:
            if not self._waiters:
                self._taken = False
            else:
                waiter = self._waiters.popleft()
                if time.monotonic() - waiter.since >= self.slice_seconds:
                    waiter.handed = True
                else:
                    self._taken = False
                waiter.lock.release()
        for wake in owed:
            wake()


class blocking:  # noqa: N801 - used like a function: ``with blocking(): ...``
    """Context manager: give up this thread's turn around a blocking call.

    A no-op in a thread that holds no turn (a pool without turns, a thread
    that is not a loop's, or a nested ``blocking()``), so libraries may call
    it without knowing where they run.
    """

    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn: Turn | None = None

    def __enter__(self) -> None:
        turn: Turn | None = getattr(_held, "turn", None)
        self._turn = turn
        if turn is not None:
            turn.release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._turn is not None:
            self._turn.acquire()
