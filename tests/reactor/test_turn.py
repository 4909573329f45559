"""Turn-taking: loops of a pool run their handlers one at a time, in slices,
and ``blocking()`` lets the others run while one waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from reactor import EventLoop, EventLoopThreadPool, Turn, blocking, gil_enabled
from reactor.eventloop import _IDLE_POLL_SECONDS

from .conftest import WAIT, call_in_loop

PROMPT = _IDLE_POLL_SECONDS / 2  # a wait that a lost wakeup would overrun


def wait_until(predicate: object, what: str) -> None:
    # Nothing signals "a thread now sleeps in acquire()", so poll, bounded.
    deadline = time.monotonic() + WAIT
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_turn_passes_to_waiters_in_arrival_order() -> None:
    turn = Turn()
    order: list[int] = []

    def take(i: int) -> None:
        turn.acquire()
        order.append(i)
        turn.release()

    turn.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=take, args=(i,))
        t.start()
        threads.append(t)
        wait_until(lambda n=i + 1: len(turn._waiters) == n, f"waiter {i}")
    turn.release()
    for t in threads:
        t.join(WAIT)
    assert order == [0, 1, 2, 3, 4]
    turn.acquire()  # free again: no waiter left holding it
    turn.release()


def test_blocking_gives_the_turn_up_and_back_and_nests() -> None:
    turn = Turn()
    with blocking():  # outside any turn: nothing to give up, nothing to take back
        assert not turn.held_here()
    turn.acquire()
    with blocking():
        assert not turn.held_here()
        with blocking():  # nested: a no-op; taking the turn twice would hang here
            assert not turn.held_here()
        assert not turn.held_here()
    assert turn.held_here()
    turn.release()
    with pytest.raises(ValueError):
        Turn(-1.0)


@pytest.fixture
def base_loop() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    loop.close()


def start_pool(base: EventLoop, threads: int, take_turns: bool) -> EventLoopThreadPool:
    pool = EventLoopThreadPool(base, "turns")
    pool.start(threads, take_turns)
    return pool


@pytest.fixture
def two_loops(base_loop: EventLoop) -> Iterator[tuple[EventLoop, EventLoop]]:
    """The two loops of a started pool that takes turns."""
    pool = start_pool(base_loop, 2, take_turns=True)
    first, second = pool.get_all_loops()
    yield first, second
    pool.stop()


def max_overlap(pool: EventLoopThreadPool, per_loop: int) -> int:
    """Run callbacks that release the GIL mid-way on every loop; the most that
    were inside at once."""
    lock = threading.Lock()
    inside = [0, 0]  # current, max
    done = threading.Semaphore(0)

    def work() -> None:
        with lock:
            inside[0] += 1
            inside[1] = max(inside)
        time.sleep(0.0001)  # a syscall: the GIL goes to whoever wants it
        with lock:
            inside[0] -= 1
        done.release()

    loops = pool.get_all_loops()
    for loop in loops:
        for _ in range(per_loop):
            loop.queue_in_loop(work)
    for _ in range(per_loop * len(loops)):
        assert done.acquire(timeout=WAIT)
    return inside[1]


def test_loops_taking_turns_run_handlers_one_at_a_time(base_loop: EventLoop) -> None:
    pool = start_pool(base_loop, 4, take_turns=True)
    try:
        assert max_overlap(pool, 300) == 1
    finally:
        pool.stop()


def test_without_turns_handlers_of_different_loops_overlap(base_loop: EventLoop) -> None:
    # The control for the test above: the same work does overlap without turns.
    pool = start_pool(base_loop, 4, take_turns=False)
    try:
        assert max_overlap(pool, 300) > 1
    finally:
        pool.stop()


def test_blocking_lets_the_other_loops_run(two_loops: tuple[EventLoop, EventLoop]) -> None:
    first, second = two_loops
    other_ran = threading.Event()
    finished = threading.Event()

    def wait_for_other_loop() -> None:
        second.queue_in_loop(other_ran.set)
        with blocking():  # without it, the second loop never gets the turn
            other_ran.wait(PROMPT)
        finished.set()

    first.queue_in_loop(wait_for_other_loop)
    assert finished.wait(WAIT)
    assert other_ran.is_set()


def test_a_busy_loop_hands_the_turn_over_after_a_slice(
    two_loops: tuple[EventLoop, EventLoop],
) -> None:
    busy, other = two_loops
    other_ran = threading.Event()
    spins = [0]

    def spin() -> None:
        # Always more work at once: the busy loop never runs out of it.
        spins[0] += 1
        if not other_ran.is_set():
            busy.queue_in_loop(spin)

    call_in_loop(busy, lambda: busy.queue_in_loop(spin))
    wait_until(lambda: spins[0] > 10, "the busy loop to spin")
    other.queue_in_loop(other_ran.set)
    assert other_ran.wait(WAIT)


def test_only_the_threads_of_a_pool_of_several_share_a_turn(base_loop: EventLoop) -> None:
    pool = start_pool(base_loop, 3, take_turns=True)
    try:
        turns = {loop.turn for loop in pool.get_all_loops()}
        assert len(turns) == 1 and None not in turns
        assert base_loop.turn is None
    finally:
        pool.stop()
    for threads, take_turns in ((1, True), (3, False)):
        pool = start_pool(base_loop, threads, take_turns)
        try:
            assert all(loop.turn is None for loop in pool.get_all_loops())
        finally:
            pool.stop()


def test_a_callback_queued_to_another_loop_in_the_turn_runs_once_the_turn_ends(
    two_loops: tuple[EventLoop, EventLoop],
) -> None:
    # The wakeup is deferred to the end of the sender's turn; if it were lost the
    # other loop would sleep until its idle select() timeout, longer than PROMPT.
    first, second = two_loops
    ran = threading.Event()
    call_in_loop(second, lambda: None)  # the second loop is idle in select() now
    first.queue_in_loop(lambda: second.queue_in_loop(ran.set))
    assert ran.wait(PROMPT)


def test_turns_are_taken_by_default_where_python_has_a_gil(base_loop: EventLoop) -> None:
    pool = EventLoopThreadPool(base_loop, "default")
    pool.start(2)
    try:
        has_turn = all(loop.turn is not None for loop in pool.get_all_loops())
        assert has_turn is gil_enabled()
    finally:
        pool.stop()
