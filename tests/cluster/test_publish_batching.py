"""The cross-server publishing rules of chat/redisbus/, one piece at a time.

- a pipeline never holds two messages for one recipient, and a recipient's
  messages leave in the order they were handed off;
- what nobody took is settled (stored) before the next pipeline is sent;
- the loop's round (``LoopRound``) never sends a recipient's next message
  before the previous one's reply was settled, and fails what Redis does not
  answer in time;
- ``close`` drains the publisher thread: nothing handed off is lost.
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis as redis_py

from chat.bus import Handoff
from chat.redisbus import RedisBus
from chat.redisbus.rounds import PIPELINE_MAX, PUBLISH_TIMEOUT, LoopRound, one_per_user
from tests.support.redis_server import RedisServer
from tests.support.silent import unanswered_address


def queued(*users: int) -> deque[tuple[Handoff, int]]:
    return deque((Handoff([(u, b'{"n":%d}' % n)]), 0) for n, u in enumerate(users))


def users_of(items: Any) -> list[int]:
    return [h.items[i][0] for h, i in items]


def test_a_pipeline_holds_one_message_per_recipient_and_keeps_their_order() -> None:
    pending = queued(1, 2, 1, 3, 2, 1, 4)
    batch, rest = one_per_user(pending)
    assert users_of(batch) == [1, 2, 3, 4]
    assert users_of(rest) == [1, 2, 1]
    batch, rest = one_per_user(rest)
    assert users_of(batch) == [1, 2]
    assert users_of(one_per_user(rest)[0]) == [1]


def test_a_recipient_with_a_message_in_flight_waits_and_so_does_the_rest_for_it() -> None:
    batch, rest = one_per_user(queued(5, 6, 5, 7), busy={5})
    assert users_of(batch) == [6, 7]
    assert users_of(rest) == [5, 5]


def test_a_pipeline_is_bounded_and_what_is_left_keeps_its_order() -> None:
    users = list(range(PIPELINE_MAX + 10))
    batch, rest = one_per_user(queued(*users))
    assert users_of(batch) == users[:PIPELINE_MAX]
    assert users_of(rest) == users[PIPELINE_MAX:]


def test_a_group_handoff_is_done_once_every_member_is_settled() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", "unit")  # never connects
    done: list[Handoff] = []
    h = Handoff([(1, b"x"), (2, b"x"), (3, b"x")], done.append)
    stored: list[int] = []
    bus._settle = lambda missed: stored.extend(u for _, u, _ in missed)
    bus._finish([(h, 0), (h, 2)], [1, 0])
    assert not done and stored == [3]
    bus._finish([(h, 1)], [2])
    assert done == [h] and h.reached == 2


class RecordingBus(RedisBus):
    """A bus whose pipelines are recorded and answered from a script."""

    def __init__(self, answer: Callable[[int], int]) -> None:
        super().__init__("redis://127.0.0.1:1/0", "unit")
        self.answer = answer
        self.log: list[tuple[str, list[int]]] = []

    def _publish_batch(self, batch: list[tuple[Handoff, int]]) -> list[int]:
        users = users_of(batch)
        self.log.append(("pipeline", users))
        return [self.answer(u) for u in users]


def test_the_publisher_thread_stores_what_nobody_took_before_the_next_pipeline() -> None:
    bus = RecordingBus(lambda user: 0 if user == 7 else 1)  # nobody holds user 7
    bus._settle = lambda missed: bus.log.append(("stored", [u for _, u, _ in missed]))
    finished: list[int] = []
    for n, user in enumerate((7, 8, 7, 7, 8)):
        bus._outq.put(Handoff([(user, b"%d" % n)], lambda h, n=n: finished.append(n)))
    bus._outq.put(None)  # the end of the queue, as close() puts it
    thread = threading.Thread(target=bus._publisher)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert bus.log == [
        ("pipeline", [7, 8]), ("stored", [7]),
        ("pipeline", [7, 8]), ("stored", [7]),
        ("pipeline", [7]), ("stored", [7]),
    ]
    assert finished == [0, 1, 2, 4, 3]  # each recipient's in order


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    r = RedisServer().start()
    yield r
    r.cleanup()


class FakeLoop:
    """What LoopRound uses of an EventLoop, driven by hand from the test."""

    def __init__(self) -> None:
        self.before: list[Callable[[], None]] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.selector = selectors.DefaultSelector()

    def call_before_poll(self, cb: Callable[[], None]) -> None:
        self.before.append(cb)

    def register(self, fileobj: Any, events: int, handler: Callable[[int], None]) -> None:
        self.selector.register(fileobj, events, handler)

    def unregister(self, fileobj: Any) -> None:
        self.selector.unregister(fileobj)

    def run_after(self, delay: float, cb: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + delay, cb))

    def end_round(self) -> None:
        before, self.before = self.before, []
        for cb in before:
            cb()

    def poll(self, timeout: float) -> int:
        """One poll: the ready handlers and due timers run; how many handlers ran."""
        ran = 0
        for key, mask in self.selector.select(timeout):
            key.data(mask)
            ran += 1
        now = time.monotonic()
        due = [t for t in self.timers if t[0] <= now]
        self.timers = [t for t in self.timers if t[0] > now]
        for _, cb in due:
            cb()
        return ran


def round_bus(redis: RedisServer,
              log: list[tuple[str, Any]]) -> tuple[RedisBus, LoopRound, FakeLoop]:
    bus = RedisBus(redis.url, "round")
    bus._settle = lambda missed: log.append(("stored", [p for _, _, p in missed]))
    loop = FakeLoop()
    assert bus._raw is not None
    rnd = LoopRound(bus, loop, bus._raw)
    connected(rnd, loop)
    return bus, rnd, loop


def connected(rnd: LoopRound, loop: FakeLoop) -> None:
    """Run the loop until the round's connection, made on a thread, is in."""
    deadline = time.monotonic() + 5
    while rnd._sock is None:
        assert time.monotonic() < deadline, "the round did not connect"
        loop.poll(0.01)


def test_the_loop_round_settles_a_recipient_before_sending_it_more(redis: RedisServer) -> None:
    log: list[tuple[str, Any]] = []
    bus, rnd, loop = round_bus(redis, log)
    holder = RedisBus(redis.url, "holder")
    got: list[bytes] = []
    holder.start(lambda user, payload: got.append(payload))
    try:
        assert holder.wait_connected(5)
        holder.subscribe(2)  # user 2 is held; user 1 is nobody's
        done: list[str] = []
        for user, text in ((1, b"a"), (2, b"b"), (1, b"c"), (2, b"d")):
            rnd.add(Handoff([(user, text)], lambda h, t=text: done.append(t.decode())))
        loop.end_round()  # one pipeline: a (user 1) and b (user 2); c and d wait
        assert rnd._busy == {1, 2} and users_of(rnd._pending) == [1, 2]
        deadline = time.monotonic() + 5
        while len(done) < 4:
            assert time.monotonic() < deadline
            if not loop.poll(0.5):
                loop.end_round()
            loop.end_round()
        assert done == ["a", "b", "c", "d"]
        assert log == [("stored", [b"a"]), ("stored", [b"c"])]
        deadline = time.monotonic() + 5
        while got != [b"b", b"d"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        holder.close()


def test_the_loop_round_stores_what_a_stalled_redis_does_not_answer(redis: RedisServer) -> None:
    log: list[tuple[str, Any]] = []
    bus, rnd, loop = round_bus(redis, log)
    done: list[Handoff] = []
    rnd.add(Handoff([(1, b"warm")], done.append))
    loop.end_round()
    while not done:
        loop.poll(1)
    assert redis.process is not None
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        rnd.add(Handoff([(1, b"stalled")], done.append))
        loop.end_round()
        started = time.monotonic()
        while len(done) < 2:
            loop.poll(0.1)
            assert time.monotonic() - started < 3
        assert log == [("stored", [b"warm"]), ("stored", [b"stalled"])]
        assert 1 in bus._unflushed  # later messages for user 1 are stored until a flush
        rnd.add(Handoff([(1, b"after")], done.append))
        loop.end_round()  # the circuit is open: stored at once, nothing sent
        assert log[-1] == ("stored", [b"after"]) and len(done) == 3
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)


def test_the_loop_round_connects_off_the_loop_the_first_time_too(redis: RedisServer) -> None:
    log: list[tuple[str, Any]] = []
    bus = RedisBus(redis.url, "round")
    bus._settle = lambda missed: log.append(("stored", [p for _, _, p in missed]))
    assert bus._raw is not None
    with unanswered_address() as address:
        loop = FakeLoop()
        started = time.monotonic()
        raw = SimpleNamespace(address=address, setup=bus._raw.setup)
        rnd = LoopRound(bus, loop, raw)  # type: ignore[arg-type]
        done: list[Handoff] = []
        rnd.add(Handoff([(1, b"first")], done.append))
        loop.end_round()
        assert time.monotonic() - started < PUBLISH_TIMEOUT / 2  # the loop went on
        assert not done  # the message waits for the connection
        while not done:  # the connect times out: stored
            loop.poll(0.1)
            loop.end_round()
            assert time.monotonic() - started < 5
        assert log == [("stored", [b"first"])]


def test_the_loop_round_connects_again_off_the_loop(redis: RedisServer) -> None:
    log: list[tuple[str, Any]] = []
    bus, rnd, loop = round_bus(redis, log)
    done: list[Handoff] = []
    rnd.add(Handoff([(1, b"first")], done.append))
    loop.end_round()
    while not done:
        loop.poll(1)
    with unanswered_address() as address:
        rnd._drop(ConnectionError("gone"))
        rnd._address = address
        rnd.add(Handoff([(1, b"later")], done.append))
        started = time.monotonic()
        loop.end_round()
        assert time.monotonic() - started < PUBLISH_TIMEOUT / 2  # the loop went on
        assert len(done) == 1  # the message waits for the connection
        while len(done) < 2:  # the connect times out: stored
            loop.poll(0.1)
            loop.end_round()
            assert time.monotonic() - started < 5
        assert log[-1] == ("stored", [b"later"])


def test_close_drains_the_publisher_thread(redis: RedisServer) -> None:
    bus = RedisBus(redis.url, "closing")
    stored: list[bytes] = []
    bus.start(lambda user, payload: None, settle=lambda missed: stored.extend(
        p for _, _, p in missed))
    done: list[Handoff] = []
    for n in range(200):
        bus.hand_off(Handoff([(n % 7, b"%d" % n)], done.append))
    bus.close()
    assert len(done) == 200 and sorted(stored, key=int) == [b"%d" % n for n in range(200)]
    bus.hand_off(Handoff([(1, b"late")], done.append))  # after close: settled at once
    assert len(done) == 201 and stored[-1] == b"late"


def test_a_subscriber_that_cannot_connect_keeps_trying() -> None:
    redis = RedisServer()  # not started: connections are refused
    bus = RedisBus(redis.url, "early")
    bus.start(lambda user, payload: None)
    try:
        assert not bus.wait_connected(0.3)  # refused a few times by now
        redis.start()
        assert bus.wait_connected(10)
    finally:
        bus.close()
        redis.cleanup()


def test_without_connections_of_its_own_the_bus_uses_redis_py(redis: RedisServer) -> None:
    """No hiredis or another kind of URL: redis-py's PubSub and pipelines, same rules."""
    got: list[list[tuple[int, bytes | None]]] = []
    holder, sender = RedisBus(redis.url, "holder"), RedisBus(redis.url, "sender")
    for bus in (holder, sender):
        bus._raw = None
    holder.start(lambda user, payload: None, deliver_many=got.append)
    stored: list[bytes] = []
    sender.start(lambda user, payload: None,
                 settle=lambda missed: stored.extend(p for _, _, p in missed))
    try:
        assert holder.wait_connected(5)
        holder.subscribe(3)
        done: list[Handoff] = []
        for user, text in ((3, b'{"a":1}'), (4, b'{"b":2}'), (3, b'{"c":3}')):
            sender.hand_off(Handoff([(user, text)], done.append))
        deadline = time.monotonic() + 5
        while len(done) < 3 or sum(len(b) for b in got) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [h.reached for h in done] == [1, 0, 1] and stored == [b'{"b":2}']
        assert [item for batch in got for item in batch] == [(3, b'{"a":1}'), (3, b'{"c":3}')]
    finally:
        holder.close()
        sender.close()


def test_the_own_connections_authenticate_and_select_the_database(redis: RedisServer) -> None:
    """A URL with a password and a database: the subscriber, the publisher thread and
    a loop's round each send AUTH and SELECT before anything else (open_connection)."""
    redis_py.Redis(port=redis.port).config_set("requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{redis.port}/2"
    got: list[list[tuple[int, bytes | None]]] = []
    holder, sender = RedisBus(url, "holder"), RedisBus(url, "sender")
    assert holder._raw is not None and holder._raw.setup  # AUTH and SELECT to send
    holder.start(lambda user, payload: None, deliver_many=got.append)
    sender.start(lambda user, payload: None, settle=lambda missed: None)
    loop = FakeLoop()
    assert sender._raw is not None
    rnd = LoopRound(sender, loop, sender._raw)
    try:
        connected(rnd, loop)
        assert holder.wait_connected(5)  # the subscriber authenticated
        holder.subscribe(3)
        done: list[Handoff] = []
        sender.hand_off(Handoff([(3, b'{"thread":1}')], done.append))  # publisher thread
        rnd.add(Handoff([(3, b'{"round":1}')], done.append))
        loop.end_round()
        deadline = time.monotonic() + 5
        while len(done) < 2 or sum(len(b) for b in got) < 2:
            assert time.monotonic() < deadline
            loop.poll(0.05)
        assert [h.reached for h in done] == [1, 1]
        assert sorted(p for batch in got for _, p in batch if p) == [b'{"round":1}',
                                                                   b'{"thread":1}']
    finally:
        holder.close()
        sender.close()
