"""The lock-free per-thread metrics of chat/metrics.py."""

from __future__ import annotations

import threading

import pytest

from chat.metrics import LocalHistogram, ThreadCounter, ThreadHistogram, store_operation


def test_thread_counter_adds_up_every_thread() -> None:
    counter = ThreadCounter("t_events", "test", ("kind",), lambda key: (str(key),))
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(10_000):
            counter.inc("a")
        counter.inc("b", 5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.totals() == {"a": 40_000, "b": 20}
    samples = {s.labels["kind"]: s.value for s in counter.collect().samples}
    assert samples == {"a": 40_000, "b": 20}


def test_local_histogram_buckets_are_upper_bounds() -> None:
    hist = LocalHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        hist.observe(v)
    assert hist.counts == [2, 1, 1]  # le=0.1 holds 0.1 itself
    assert hist.sum == pytest.approx(2.65)


def test_thread_histogram_is_cumulative_over_threads() -> None:
    hist = ThreadHistogram("t_seconds", "test", "kind", bounds=(0.1, 1.0))
    hist.observe("one", 0.05)
    t = threading.Thread(target=lambda: hist.observe("one", 0.5))
    t.start()
    t.join()
    samples = {(s.name, s.labels.get("le")): s.value for s in hist.collect().samples}
    assert samples[("t_seconds_bucket", "0.1")] == 1
    assert samples[("t_seconds_bucket", "1.0")] == 2
    assert samples[("t_seconds_bucket", "+Inf")] == 2
    assert samples[("t_seconds_count", None)] == 2
    assert samples[("t_seconds_sum", None)] == pytest.approx(0.55)


class _Pool:
    def run(self) -> str:
        return store_operation()


class _Store:
    def __init__(self) -> None:
        self.pool = _Pool()

    def _read(self) -> str:
        return self.pool.run()

    def fetch_offline(self) -> str:
        return self._read()

    def register(self) -> str:
        return self.pool.run()


def test_store_operation_names_the_public_store_method() -> None:
    assert _Store().register() == "register"
    assert _Store().fetch_offline() == "fetch_offline"
