"""EventLoop tests: timers, cross-thread callbacks, thread checks, quit."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable

import pytest

from reactor import EventLoop, EventLoopThread, EventLoopThreadPool

from .conftest import WAIT, call_in_loop


def test_timers_fire_in_deadline_order_and_cancel(loop_thread: EventLoop) -> None:
    fired: list[str] = []
    done = threading.Event()
    # Added out of order; equal deadlines keep insertion order.
    loop_thread.run_after(0.06, lambda: fired.append("c"))
    loop_thread.run_after(0.02, lambda: fired.append("a"))
    cancelled = loop_thread.run_after(0.03, lambda: fired.append("never"))
    loop_thread.run_after(0.04, lambda: fired.append("b1"))
    loop_thread.run_after(0.04, lambda: fired.append("b2"))
    loop_thread.run_after(0.10, done.set)
    loop_thread.cancel(cancelled)
    assert done.wait(WAIT)
    assert fired == ["a", "b1", "b2", "c"]


def test_timer_added_in_loop_thread_and_zero_delay(loop_thread: EventLoop) -> None:
    fired = threading.Event()
    call_in_loop(loop_thread, lambda: loop_thread.run_after(0, fired.set))
    assert fired.wait(WAIT)


def test_run_every_repeats_until_cancelled(loop_thread: EventLoop) -> None:
    ticks: list[float] = []
    third = threading.Event()

    def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            loop_thread.cancel(timer)  # cancelling itself from inside the callback
            third.set()

    timer = loop_thread.run_every(0.01, tick)
    assert third.wait(WAIT)
    # Another timer later than several intervals proves the repeat stopped.
    later = threading.Event()
    loop_thread.run_after(0.08, later.set)
    assert later.wait(WAIT)
    assert len(ticks) == 3
    with pytest.raises(ValueError):
        loop_thread.run_every(0, tick)


def test_queue_in_loop_from_many_threads_runs_each_once_in_loop(loop_thread: EventLoop) -> None:
    n_threads, per_thread = 8, 10_000
    counts, wrong_thread = [0] * (n_threads * per_thread), []
    loop_ident = call_in_loop(loop_thread, threading.get_ident)
    all_done, remaining = threading.Event(), [n_threads * per_thread]

    def make(i: int):  # type: ignore[no-untyped-def]
        def cb() -> None:
            if threading.get_ident() != loop_ident:
                wrong_thread.append(i)
            counts[i] += 1
            remaining[0] -= 1  # only the loop thread touches it
            if remaining[0] == 0:
                all_done.set()

        return cb

    def producer(t: int) -> None:
        for k in range(per_thread):
            loop_thread.queue_in_loop(make(t * per_thread + k))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    assert all_done.wait(WAIT)
    for th in threads:
        th.join(WAIT)
    assert not wrong_thread
    assert set(counts) == {1}


def test_wakeup_written_only_when_needed() -> None:
    loop = EventLoop()
    sent: list[int] = []
    real = loop._wakeup
    loop._wakeup = lambda: (sent.append(1), real())[1]  # type: ignore[method-assign]
    loop._thread_id = -1  # pretend we are a foreign thread
    for _ in range(100):
        loop.queue_in_loop(lambda: None)
    assert len(sent) == 1 and loop.pending_count() == 100
    loop._do_pending()
    loop.queue_in_loop(lambda: None)
    assert len(sent) == 2
    loop.close()


def test_callback_exception_is_logged_and_loop_survives(
    loop_thread: EventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise ValueError("boom")

    loop_thread.queue_in_loop(boom)
    loop_thread.run_after(0, boom)
    assert call_in_loop(loop_thread, lambda: 42) == 42
    assert any("boom" in (r.exc_text or "") for r in caplog.records)


def test_assert_in_loop_thread(loop_thread: EventLoop) -> None:
    with pytest.raises(RuntimeError):
        loop_thread.assert_in_loop_thread()
    assert not loop_thread.is_in_loop_thread()
    assert call_in_loop(loop_thread, loop_thread.is_in_loop_thread)
    call_in_loop(loop_thread, loop_thread.assert_in_loop_thread)


def test_quit_from_another_thread_stops_loop() -> None:
    loop = EventLoop()
    started = threading.Event()
    loop.queue_in_loop(started.set)
    runner = threading.Thread(target=loop.loop)
    runner.start()
    assert started.wait(WAIT)
    loop.quit()  # the loop is blocked in select() with no timers armed
    runner.join(WAIT)
    assert not runner.is_alive()
    loop.close()


def test_register_dispatches_ready_mask(loop_thread: EventLoop) -> None:
    a, b = socket.socketpair()
    got: list[int] = []
    ready = threading.Event()

    def handler(mask: int) -> None:
        got.append(mask)
        a.recv(100)
        loop_thread.unregister(a)
        ready.set()

    import selectors

    call_in_loop(loop_thread, lambda: loop_thread.register(a, selectors.EVENT_READ, handler))
    b.send(b"x")
    assert ready.wait(WAIT)
    assert got == [selectors.EVENT_READ]
    a.close()
    b.close()


def test_thread_pool_round_robin_and_stop() -> None:
    base = EventLoop()
    pool = EventLoopThreadPool(base, "rr")
    pool.start(3)
    loops = pool.get_all_loops()
    assert len(loops) == 3 and base not in loops
    assert [pool.next_loop() for _ in range(6)] == loops + loops
    idents = {call_in_loop(lp, threading.get_ident) for lp in loops}
    assert len(idents) == 3
    pool.stop()
    empty = EventLoopThreadPool(base)
    empty.start(0)
    assert empty.next_loop() is base and empty.get_all_loops() == [base]
    base.close()


def test_event_loop_thread_start_and_stop() -> None:
    thread = EventLoopThread("solo")
    loop = thread.start_loop()
    assert call_in_loop(loop, lambda: threading.current_thread().name) == "solo"
    thread.stop(WAIT)


def test_before_poll_callbacks_run_after_the_round(
    loop_thread: EventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []
    done = threading.Event()

    def boom() -> None:
        raise ValueError("before-poll boom")

    def timer() -> None:  # a round: ready handlers, timers, queued callbacks, then these
        loop_thread.call_before_poll(lambda: order.append("before poll"))
        loop_thread.call_before_poll(boom)
        loop_thread.call_before_poll(done.set)
        loop_thread.queue_in_loop(lambda: order.append("queued"))
        order.append("timer")

    loop_thread.run_after(0, timer)
    assert done.wait(WAIT)
    assert order == ["timer", "queued", "before poll"]
    assert any("before-poll boom" in (r.exc_text or "") for r in caplog.records)


def test_before_poll_callback_of_the_last_round_runs_after_quit() -> None:
    loop = EventLoop()
    ran: list[str] = []

    def teardown() -> None:  # queued together with quit(): runs after the last round
        loop.call_before_poll(lambda: ran.append("written"))

    def stop() -> None:
        loop.quit()
        loop.queue_in_loop(teardown)

    loop.queue_in_loop(stop)
    runner = threading.Thread(target=loop.loop)
    runner.start()
    runner.join(WAIT)
    assert ran == ["written"]
    loop.close()


def test_a_withdrawn_before_poll_callback_does_not_run(loop_thread: EventLoop) -> None:
    ran: list[str] = []
    done = threading.Event()

    def round_() -> None:
        stale = lambda: ran.append("withdrawn")  # noqa: E731
        loop_thread.call_before_poll(stale)
        loop_thread.call_before_poll(done.set)
        loop_thread.cancel_before_poll(stale)
        with pytest.raises(ValueError):
            loop_thread.cancel_before_poll(stale)  # no longer queued
        ran.append("round")

    loop_thread.queue_in_loop(round_)
    assert done.wait(WAIT)
    assert ran == ["round"]
    with pytest.raises(RuntimeError):
        loop_thread.cancel_before_poll(done.set)  # not from another thread


@pytest.mark.parametrize(("batch", "expected"), [
    (2, ["read", "read", "written", "read", "read", "written", "read", "written"]),
    (0, ["read"] * 5 + ["written"]),
])
def test_a_long_round_writes_after_every_batch_of_handlers(
        batch: int, expected: list[str]) -> None:
    loop = EventLoop()
    loop.set_write_batch(batch)
    pairs = [socket.socketpair() for _ in range(5)]
    order: list[str] = []

    def flush() -> None:  # what a connection does with what its handlers sent
        order.append("written")

    def handler(sock: socket.socket) -> Callable[[int], None]:
        def on_ready(_mask: int) -> None:
            sock.recv(16)
            order.append("read")
            if flush not in loop._before_poll:  # one flush a batch, as a connection asks
                loop.call_before_poll(flush)
        return on_ready

    try:
        for ours, theirs in pairs:
            loop.register(ours, selectors.EVENT_READ, handler(ours))
            theirs.send(b"x")
        loop._run_once()  # all five are ready: one round
        assert order == expected
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()
        loop.close()


def test_a_write_batch_below_zero_is_refused() -> None:
    loop = EventLoop()
    try:
        with pytest.raises(ValueError):
            loop.set_write_batch(-1)
    finally:
        loop.close()
