"""One event loop per thread, in the style of muduo's ``EventLoop``.

Theory of operation
-------------------
An :class:`EventLoop` owns a ``selectors.DefaultSelector`` and belongs to one
thread (the thread that calls :meth:`EventLoop.loop`, or its creator before
that). Each iteration of :meth:`EventLoop.loop`:

1. blocks in ``select()`` until a registered file object is ready, the next
   timer is due, or another thread wakes it;
2. calls ``handler(mask)`` for every ready key (the handler is the selector
   key's ``data``, usually a bound method, so dispatch is one call);
3. runs the expired timers in deadline order;
4. swaps the pending-callback list out under the lock and runs it without
   the lock, so callbacks may queue more callbacks without deadlock;
5. runs what steps 2-4 asked to run before the next poll
   (:meth:`EventLoop.call_before_poll`, loop thread only, no lock): a
   connection writes there what its handlers sent during the round. Step 2
   runs them too after every ``WRITE_BATCH`` handlers, so that a long round
   writes as it goes (:meth:`EventLoop.set_write_batch`).

Other threads reach the loop only through :meth:`queue_in_loop`. It appends
under the lock and writes one byte to a wakeup socketpair, but only for the
first callback after the loop last swapped the list: while a wakeup is
already pending the loop is bound to look at the list before it blocks
again, so further callbacks cost no syscall. The invariant is: if
``_wakeup_pending`` is true then either a byte is in flight or the list is
non-empty, and the loop never blocks while the list is non-empty.

Loops of a pool may share a :class:`~reactor.turn.Turn`: such a loop still
blocks in ``select()`` without it, but runs steps 2-5 only while it holds the
turn, and keeps it for up to one slice while more work is ready at once (see
``reactor/turn.py`` for why).

A callback or handler that raises is logged with its traceback and the loop
keeps running; ``SystemExit`` and ``KeyboardInterrupt`` are not caught.

An optional round observer (:meth:`EventLoop.set_round_observer`) hears of
each batch of ready events after steps 2-5: how many, how long they waited
after ``select()`` returned, how long they took.  Setting it swaps in the
observed dispatch; without one the loop runs exactly the unobserved code.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reactor.turn import Turn

__all__ = [
    "Callback",
    "EventHandler",
    "EventLoop",
    "EventLoopThread",
    "EventLoopThreadPool",
    "RoundObserver",
    "TimerId",
    "gil_enabled",
]

logger = logging.getLogger(__name__)

Callback = Callable[[], None]
EventHandler = Callable[[int], None]
# (ready events, seconds from select() returning to the batch's handling, seconds handling it)
RoundObserver = Callable[[int, float, float], None]
_Ready = list[tuple[selectors.SelectorKey, int]]

RECV_BUFFER_SIZE = 65536  # the most one read takes (under glibc's mmap threshold)
# Ready handlers between two runs of the before-poll callbacks (the writes).
# A round of 1,000 busy ping-pong pairs reads some 800 sockets; written only
# at its end, each reply went out after the bytes it answered and the socket's
# state had left the CPU caches. Every 32 handlers, 1,000 pairs went 6% (one
# loop) and 15% (four) faster, at 6% and 11% less CPU per message, and 100
# pairs the same (benchmarks/README.md); what one handler sends a connection
# still leaves in one write.
WRITE_BATCH = 32
# select() timeout when no timer is armed: long, since wakeups are explicit.
_IDLE_POLL_SECONDS = 10.0


class _Timer:
    """Internal timer record; mutated only in the loop thread except ``cancelled``."""

    __slots__ = ("callback", "cancelled", "deadline", "interval", "sequence")

    def __init__(self, deadline: float, interval: float, callback: Callback, seq: int) -> None:
        self.deadline = deadline
        self.interval = interval
        self.callback = callback
        self.cancelled = False
        self.sequence = seq


@dataclass(frozen=True, slots=True)
class TimerId:
    """Opaque handle returned by ``run_after`` / ``run_every``; pass it to ``cancel``."""

    sequence: int
    _timer: _Timer = field(repr=False, compare=False)


class EventLoop:
    """A selector-based reactor owned by one thread.

    Construct it in (or hand it to) the thread that will call :meth:`loop`.
    Unless stated otherwise a method is "loop thread only".
    """

    def __init__(self, turn: Turn | None = None) -> None:
        self._turn = turn
        self._selector = selectors.DefaultSelector()
        self._thread_id = threading.get_ident()
        self._looping = False
        self._quit = False
        self._lock = threading.Lock()
        self._pending: list[Callback] = []
        self._before_poll: list[Callback] = []  # loop thread only
        self._write_batch = WRITE_BATCH
        self._wakeup_pending = False  # guarded by _lock; see module docstring
        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = itertools.count(1)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._handle_wakeup)
        self.poll_return_time = time.time()
        # Where this thread's connections read: ``recv(65536)`` would allocate
        # 64 KiB per read and shrink it to what came, which with thousands of
        # sockets churns the heap (at 1,000 chat ping-pong pairs it cost `-t 1`
        # close to half its rate, benchmarks/README.md); a read copies out
        # only what came.
        self.recv_buffer = memoryview(bytearray(RECV_BUFFER_SIZE))
        # The observed variant only while an observer is set: unset, a round pays nothing.
        self._dispatch_batch: Callable[[_Ready], None] = self._dispatch
        self._observer: RoundObserver | None = None

    @property
    def turn(self) -> Turn | None:
        """The :class:`Turn` this loop shares with the other loops of its pool, if any."""
        return self._turn

    # ------------------------------------------------------------------ thread
    def is_in_loop_thread(self) -> bool:
        """True when called from the loop's thread. Safe from any thread."""
        return threading.get_ident() == self._thread_id

    def assert_in_loop_thread(self) -> None:
        """Raise RuntimeError unless called from the loop's thread. Safe from any thread."""
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                f"EventLoop {id(self):#x} belongs to thread {self._thread_id}, "
                f"called from thread {threading.get_ident()}"
            )

    # -------------------------------------------------------------- main loop
    def loop(self) -> None:
        """Run until :meth:`quit`. The calling thread becomes the loop thread."""
        if self._looping:
            raise RuntimeError("EventLoop.loop() is already running")
        self._thread_id = threading.get_ident()
        self._looping = True
        try:
            while not self._quit:
                self._run_once()
            # A callback queued together with quit() still runs (e.g. teardown).
            self._do_pending()
            self._do_before_poll()
        finally:
            self._looping = False
            self._quit = False

    def _run_once(self) -> None:
        timeout = 0.0 if self._pending or self._before_poll else self._next_timeout()
        events = self._selector.select(timeout)
        self.poll_return_time = time.time()
        if self._turn is None:
            self._dispatch_batch(events)
        else:
            self._dispatch_in_turn(self._turn, events)

    def _dispatch_in_turn(self, turn: Turn, events: _Ready) -> None:
        turn.acquire()
        try:
            # Keep the turn while work is ready at once: handing it over per
            # batch would bring back the thread switch per batch it removes.
            end = time.monotonic() + turn.slice_seconds
            while True:
                self._dispatch_batch(events)
                if self._quit or time.monotonic() >= end:
                    return
                events = self._selector.select(0)
                if not events and not self._pending:
                    return
                self.poll_return_time = time.time()
        finally:
            turn.release()

    def _dispatch(self, events: _Ready) -> None:
        batch = self._write_batch
        handled = 0
        for key, mask in events:
            try:
                key.data(mask)
            except Exception:
                logger.exception("event handler %r failed", key.data)
            handled += 1
            if handled >= batch and self._before_poll:
                handled = 0
                self._do_before_poll()
        if self._timers:
            self._run_timers()
        if self._pending:
            self._do_pending()
        if self._before_poll:
            self._do_before_poll()

    def set_write_batch(self, handlers: int) -> None:
        """Run the before-poll callbacks after every ``handlers`` ready handlers
        too, not only at the end of the round; 0: at the end of the round only.

        Safe from any thread; takes effect from the next batch of ready events.
        """
        if handlers < 0:
            raise ValueError("write batch must be >= 0")
        self._write_batch = handlers or sys.maxsize

    def set_round_observer(self, observer: RoundObserver | None) -> None:
        """Call ``observer(events, lag, busy)`` after each batch of ready events.

        ``lag`` is the time from ``select()`` returning to the batch's first
        handler (waiting for the turn, when loops take turns); ``busy`` the
        time the batch took, its timers, callbacks and writes included.  The
        observer runs in the loop thread and must be cheap.  ``None`` removes
        it.  Safe from any thread; takes effect from the next batch.
        """
        self._observer = observer
        self._dispatch_batch = self._dispatch if observer is None else self._dispatch_observed

    def _dispatch_observed(self, events: _Ready) -> None:
        started = time.time()  # the clock of poll_return_time
        self._dispatch(events)
        observer = self._observer
        if observer is not None:
            try:
                observer(len(events), max(0.0, started - self.poll_return_time),
                         time.time() - started)
            except Exception:
                logger.exception("round observer %r failed", observer)

    def quit(self) -> None:
        """Ask the loop to stop after the current iteration. Safe from any thread."""
        self._quit = True
        if not self.is_in_loop_thread():
            self._wakeup()

    def close(self) -> None:
        """Release the selector and wakeup sockets once the loop has returned."""
        if self._looping:
            raise RuntimeError("cannot close a running EventLoop")
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------- cross-thread calls
    def run_in_loop(self, cb: Callback) -> None:
        """Run ``cb`` now if in the loop thread, else queue it. Safe from any thread."""
        if threading.get_ident() == self._thread_id:
            cb()
        else:
            self.queue_in_loop(cb)

    def queue_in_loop(self, cb: Callback) -> None:
        """Run ``cb`` in the loop thread on its next iteration. Safe from any thread."""
        with self._lock:
            self._pending.append(cb)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        # In the loop thread the list is checked before the next select(), so no
        # byte is needed; from elsewhere the loop may be blocked and must be woken,
        # but from a loop in the same turn only once that turn ends.
        if threading.get_ident() != self._thread_id:
            turn = self._turn
            if turn is not None and turn.held_here():
                turn.defer(self._wakeup)
            else:
                self._wakeup()

    def registered_count(self) -> int:
        """Number of watched files, its wakeup socket included (a racy snapshot).

        Safe from any thread.
        """
        return len(self._selector.get_map())

    def pending_count(self) -> int:
        """Number of queued callbacks (a racy snapshot). Safe from any thread."""
        return len(self._pending)

    def _wakeup(self) -> None:
        try:
            self._wake_w.send(b"\x01")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full of wakeups already: the loop will wake
        except OSError:
            logger.debug("wakeup of a closed EventLoop ignored")

    def _handle_wakeup(self, _mask: int) -> None:
        # A short read means the pipe is drained: no extra recv() that would
        # only raise BlockingIOError (an exception per wakeup is not free).
        try:
            while len(self._wake_r.recv(4096)) == 4096:
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def call_before_poll(self, cb: Callback) -> None:
        """Run ``cb`` once the current batch of handlers (see
        :meth:`set_write_batch`), or the round's timers and callbacks, are
        done; at the latest before the loop polls again. Loop thread only.

        What handlers leave for later goes here: a connection writes in one
        go what they sent it (``TcpConnection.send_in_loop``).
        """
        self._before_poll.append(cb)

    def cancel_before_poll(self, cb: Callback) -> None:
        """Withdraw ``cb``, queued by :meth:`call_before_poll` and not yet run.

        Loop thread only; raises ValueError if it is not queued.
        """
        self.assert_in_loop_thread()
        self._before_poll.remove(cb)

    def _do_before_poll(self) -> None:
        callbacks, self._before_poll = self._before_poll, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                logger.exception("before-poll callback %r failed", cb)

    def _do_pending(self) -> None:
        with self._lock:
            callbacks = self._pending
            self._pending = []
            self._wakeup_pending = False
        for cb in callbacks:
            try:
                cb()
            except Exception:
                logger.exception("pending callback %r failed", cb)

    # ----------------------------------------------------------------- timers
    def run_after(self, delay: float, cb: Callback) -> TimerId:
        """Run ``cb`` once after ``delay`` seconds. Safe from any thread."""
        return self._add_timer(time.monotonic() + max(delay, 0.0), 0.0, cb)

    def run_every(self, interval: float, cb: Callback) -> TimerId:
        """Run ``cb`` every ``interval`` seconds (> 0) until cancelled. Safe from any thread."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        return self._add_timer(time.monotonic() + interval, interval, cb)

    def cancel(self, timer_id: TimerId) -> None:
        """Cancel a timer. Safe from any thread.

        The heap entry is dropped lazily when it reaches the top. A callback
        already running in the loop thread finishes, but never runs again.
        """
        timer_id._timer.cancelled = True

    def _add_timer(self, deadline: float, interval: float, cb: Callback) -> TimerId:
        seq = next(self._timer_seq)  # itertools.count is atomic under the GIL
        timer = _Timer(deadline, interval, cb, seq)
        self.run_in_loop(lambda: heapq.heappush(self._timers, (deadline, seq, timer)))
        return TimerId(seq, timer)

    def _next_timeout(self) -> float:
        if not self._timers:
            return _IDLE_POLL_SECONDS
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:
                logger.exception("timer callback %r failed", timer.callback)
            if timer.interval > 0 and not timer.cancelled:
                # Re-arm from the old deadline so a repeating timer does not drift.
                timer.deadline = max(timer.deadline + timer.interval, now)
                heapq.heappush(timers, (timer.deadline, timer.sequence, timer))

    # -------------------------------------------------------- selector access
    def register(self, fileobj: Any, events: int, handler: EventHandler) -> None:
        """Watch ``fileobj``; ``handler(mask)`` runs when it is ready. Loop thread only."""
        self._selector.register(fileobj, events, handler)

    def modify(self, fileobj: Any, events: int, handler: EventHandler) -> None:
        """Change the events (and handler) watched for ``fileobj``. Loop thread only."""
        self._selector.modify(fileobj, events, handler)

    def unregister(self, fileobj: Any) -> None:
        """Stop watching ``fileobj``. Loop thread only."""
        self._selector.unregister(fileobj)


def gil_enabled() -> bool:
    """Whether Python code runs one thread at a time (always so before 3.13)."""
    probe: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else probe()


class EventLoopThread:
    """A normal (non-daemon) thread running a fresh :class:`EventLoop`."""

    def __init__(self, name: str = "", turn: Turn | None = None) -> None:
        self._name = name or "EventLoopThread"
        self._turn = turn
        self._thread: threading.Thread | None = None
        self._loop: EventLoop | None = None
        self._ready = threading.Event()

    def start_loop(self) -> EventLoop:
        """Start the thread; return its loop once the thread owns it. Call once."""
        if self._thread is not None:
            raise RuntimeError("EventLoopThread already started")
        self._thread = threading.Thread(target=self._run, name=self._name)
        self._thread.start()
        self._ready.wait()
        assert self._loop is not None
        return self._loop

    def _run(self) -> None:
        # Created here so the loop's thread is this one from the start.
        loop = EventLoop(self._turn)
        self._loop = loop
        self._ready.set()
        try:
            loop.loop()
        finally:
            loop.close()

    def stop(self, timeout: float | None = None) -> None:
        """Quit the loop and join the thread. Safe from any other thread."""
        if self._loop is not None:
            self._loop.quit()
        if self._thread is not None:
            self._thread.join(timeout)


class EventLoopThreadPool:
    """Sub-reactor threads handed out round robin (muduo's ``EventLoopThreadPool``).

    ``start``/``next_loop``/``stop`` belong to the base loop's thread;
    ``get_all_loops`` returns a snapshot.
    """

    def __init__(self, base_loop: EventLoop, name: str = "") -> None:
        self._base_loop = base_loop
        self._name = name or "pool"
        self._threads: list[EventLoopThread] = []
        self._loops: list[EventLoop] = []
        self._next = 0
        self._started = False

    def start(self, num_threads: int, take_turns: bool | None = None) -> None:
        """Start ``num_threads`` loop threads (0 means: use the base loop). Base loop thread.

        With ``take_turns`` (by default: when the interpreter has a GIL) and
        two or more threads, the threads share one :class:`Turn`. The base
        loop never takes it, so it may wait for the pool (``stop``).
        """
        self._base_loop.assert_in_loop_thread()
        if self._started:
            raise RuntimeError("EventLoopThreadPool already started")
        self._started = True
        if take_turns is None:
            take_turns = gil_enabled()
        turn = Turn() if take_turns and num_threads > 1 else None
        for i in range(num_threads):
            thread = EventLoopThread(f"{self._name}-io{i}", turn)
            self._threads.append(thread)
            self._loops.append(thread.start_loop())

    def next_loop(self) -> EventLoop:
        """The next sub loop, round robin; the base loop if there are none. Base loop thread."""
        if not self._loops:
            return self._base_loop
        loop = self._loops[self._next]
        self._next = (self._next + 1) % len(self._loops)
        return loop

    def get_all_loops(self) -> list[EventLoop]:
        """Every sub loop, or ``[base_loop]`` when there are none."""
        return list(self._loops) if self._loops else [self._base_loop]

    def stop(self) -> None:
        """Quit and join every thread. Not from one of the pool's own threads."""
        for thread in self._threads:
            thread.stop()
        self._threads.clear()
        self._loops.clear()
