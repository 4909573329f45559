"""RedisBus in-process against a private redis-server: routing, notices, liveness, outage."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chat.redisbus import RedisBus
from tests.support.redis_server import RedisServer


class Probe:
    """Collects a bus's callbacks from its subscriber thread."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[str, int, bytes]] = queue.SimpleQueue()
        self.gate = threading.Event()  # deliver waits for it: a subscriber thread held up
        self.gate.set()

    def deliver(self, user_id: int, payload: bytes) -> None:
        assert self.gate.wait(10)
        self.events.put(("deliver", user_id, payload))

    def flush(self, user_id: int) -> None:
        self.events.put(("flush", user_id, b""))

    def next(self, timeout: float = 5.0) -> tuple[str, int, bytes]:
        return self.events.get(timeout=timeout)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    r = RedisServer().start()
    yield r
    r.cleanup()


@pytest.fixture
def buses(redis: RedisServer) -> Iterator[list[tuple[RedisBus, Probe]]]:
    made = []
    for name in ("one", "two"):
        bus, probe = RedisBus(redis.url, name, heartbeat_ttl=1.0, heartbeat_every=0.2), Probe()
        bus.start(probe.deliver, probe.flush)
        assert bus.wait_connected(5)
        made.append((bus, probe))
    yield made
    for bus, _ in made:
        bus.close()


def test_publish_reaches_the_holder_only_after_a_confirmed_subscribe(buses) -> None:
    (one, _), (two, probe) = buses
    assert not one.publish(7, b'{"m":1}')
    two.subscribe(7)  # returns once Redis confirmed: the next publish must reach it
    assert one.publish(7, b'{"m":2}')
    assert probe.next() == ("deliver", 7, b'{"m":2}')
    two.unsubscribe(7)  # returns once Redis confirmed: nobody holds the user now
    assert not one.publish(7, b'{"m":3}')


def test_unsubscribe_returns_after_what_was_published_before_it(buses) -> None:
    # A login elsewhere may follow at once: what we still get for the user
    # must have been handled (stored) by then, not delivered by both of us.
    (one, _), (two, probe) = buses
    two.subscribe(9)
    probe.gate.clear()  # the subscriber thread will hold on to the first message
    for n in range(3):
        assert one.publish(9, b'{"n":%d}' % n)
    unsubscribing = threading.Thread(target=two.unsubscribe, args=(9,))
    unsubscribing.start()
    unsubscribing.join(0.3)
    assert unsubscribing.is_alive()  # Redis confirmed, but the messages before are not done
    probe.gate.set()
    unsubscribing.join(5)
    assert not unsubscribing.is_alive()
    assert [probe.events.get_nowait() for _ in range(3)] == [
        ("deliver", 9, b'{"n":%d}' % n) for n in range(3)]
    assert not one.publish(9, b'{"n":3}')


def test_unsubscribe_many_waits_for_every_user(buses) -> None:
    (one, _), (two, probe) = buses
    for user in (31, 32, 33):
        two.subscribe(user)
    probe.gate.clear()
    for user in (31, 32, 33):
        assert one.publish(user, b'{"u":%d}' % user)
    unsubscribing = threading.Thread(target=two.unsubscribe_many, args=([31, 32, 33],))
    unsubscribing.start()
    unsubscribing.join(0.3)
    assert unsubscribing.is_alive()
    probe.gate.set()
    unsubscribing.join(5)
    assert not unsubscribing.is_alive()
    assert sorted(probe.events.get_nowait() for _ in range(3)) == [
        ("deliver", u, b'{"u":%d}' % u) for u in (31, 32, 33)]
    assert one.publish_many([31, 32, 33], b'{"u":0}') == [31, 32, 33]


def test_stored_notice_makes_the_holder_flush(buses) -> None:
    (one, _), (two, probe) = buses
    two.subscribe(8)
    one.notify_stored(8)
    assert probe.next() == ("flush", 8, b"")


def test_pipelined_publish_and_notices_reach_each_holder(buses) -> None:
    (one, _), (two, probe) = buses
    for user in (21, 22, 23):
        two.subscribe(user)
    assert one.publish_many([20, 21, 22, 23, 24], b'{"g":1}') == [20, 24]
    got = sorted(probe.next() for _ in range(3))
    assert got == [("deliver", u, b'{"g":1}') for u in (21, 22, 23)]
    one.notify_stored_many([21, 23, 25])
    assert sorted(probe.next() for _ in range(2)) == [("flush", 21, b""), ("flush", 23, b"")]


def test_a_server_is_dead_once_its_heartbeat_expired(buses, redis: RedisServer) -> None:
    (one, _), (two, _) = buses
    assert one.is_alive("two") and two.is_alive("one")
    deadline = time.monotonic() + 10
    while one.is_alive("never-started"):  # a young Redis proves nothing for a while
        assert time.monotonic() < deadline
        time.sleep(0.1)
    two.close()  # a clean stop removes the key at once
    assert not one.is_alive("two")


def test_outage_fails_fast_then_subscriptions_come_back_and_flush(
        buses, redis: RedisServer) -> None:
    (one, _), (two, probe) = buses
    two.subscribe(9)
    redis.kill()
    started = time.monotonic()
    for _ in range(20):
        assert not one.publish(9, b'{"m":"lost?"}')  # the caller stores it offline
    assert time.monotonic() - started < 2.0
    assert one.is_alive("two")  # unknown is alive: never take a user over blindly
    one.notify_stored(9)  # fails: owed as a flush-all
    redis.start()
    # The holder resubscribes and flushes its user; the owed flush-all flushes it too.
    assert probe.next(timeout=10) == ("flush", 9, b"")
    deadline = time.monotonic() + 10
    while not one.publish(9, b'{"m":"back"}'):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    while (event := probe.next(timeout=10))[0] == "flush":
        pass
    assert event == ("deliver", 9, b'{"m":"back"}')


def test_every_wait_on_redis_runs_inside_the_blocking_hook(redis: RedisServer) -> None:
    entered: list[str] = []

    @contextmanager
    def hook() -> Iterator[None]:
        entered.append("in")
        yield

    bus = RedisBus(redis.url, "hooked", blocking=hook)
    bus.start(Probe().deliver)
    try:
        assert bus.wait_connected(5)
        for call in (lambda: bus.subscribe(1), lambda: bus.publish(1, b"x"),
                     lambda: bus.publish_many([1, 2], b"x"), lambda: bus.is_alive("other")):
            before = len(entered)
            call()
            assert len(entered) > before
    finally:
        bus.close()
