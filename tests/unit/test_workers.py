import threading

import pytest

from chat.limits import AddressBuckets
from chat.workers import Outcome, WorkerPool


def test_a_full_pool_refuses_at_once_and_runs_what_it_took():
    pool = WorkerPool(threads=1, queue_size=2)
    release = threading.Event()
    started = threading.Event()
    outcomes: list[Outcome] = []
    finished = threading.Semaphore(0)

    def done(outcome: Outcome) -> None:
        outcomes.append(outcome)
        finished.release()

    def first() -> str:
        started.set()
        release.wait(10)
        return "first"

    assert pool.submit(first, done)
    assert started.wait(10)  # running: the queue is empty again
    assert pool.submit(lambda: "second", done) and pool.submit(lambda: 1 // 0, done)
    assert not pool.submit(lambda: "refused", done)  # 1 running + 2 waiting
    release.set()
    for _ in range(3):
        assert finished.acquire(timeout=10)
    assert [o.value for o in outcomes[:2]] == ["first", "second"]
    with pytest.raises(ZeroDivisionError):
        outcomes[2].result()
    pool.stop()


def test_without_threads_the_call_runs_in_the_caller():
    pool = WorkerPool(threads=0, queue_size=1)
    seen: list[object] = []
    assert pool.submit(threading.current_thread, lambda o: seen.append(o.result()))
    assert seen == [threading.current_thread()]


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_address_buckets_are_independent_and_bounded():
    clock = Clock()
    buckets = AddressBuckets(rate=1, burst=2, max_keys=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [True, True, False]
    assert buckets.take("b") and buckets.take("c")
    clock.now += 1
    assert buckets.take("a") and not buckets.take("a")
    clock.now += 10
    assert buckets.take("d")  # over max_keys: the full buckets were forgotten
    assert len(buckets._buckets) <= 3
