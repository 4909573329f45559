"""The home loop subscribes the channel of every user who logs in, and reads it.

chat/redisbus/loopsub.py: a message from another server is handed on in the
home loop's own thread (no subscriber thread in between), with the subscriber
thread's guarantees: ``subscribe`` returns once Redis confirmed it (what
came meanwhile is handled after the login's handler, not inside it),
``unsubscribe`` once every message before its confirmation was handed on, a
lost connection comes back subscribed and flushes its users, and the
cluster's ``flush-all`` reaches them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis as redis_py

from chat.protocol import MsgId
from chat.redisbus import SHUTDOWN_UNSUBSCRIBE_WAIT, RedisBus
from chat.redisbus.links import SUB_CONNECT_TIMEOUT
from chat.redisbus.loopsub import LoopSubscriptions
from chat.redisbus.names import CLUSTER_CHANNEL, FLUSH_ALL, user_channel
from reactor import EventLoop, EventLoopThread
from tests.cluster.conftest import Cluster, start_server
from tests.support.redis_server import RedisServer
from tests.support.silent import unanswered_address

T = TypeVar("T")


class Recorder:
    """The bus's callbacks: what was handed on, in which thread; who was flushed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[tuple[int, bytes | None, int]] = []  # (user, payload, thread)
        self.flushed: list[int] = []

    def deliver_many(self, items: list[tuple[int, bytes | None]]) -> None:
        with self.cond:
            self.items += [(u, p, threading.get_ident()) for u, p in items]
            self.cond.notify_all()

    def flush(self, user_id: int) -> None:
        with self.cond:
            self.flushed.append(user_id)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "timed out"


class Setup:
    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.rec = Recorder()
        self.bus = RedisBus(redis.url, "loopsub-test")
        self.bus.start(lambda u, p: self.rec.deliver_many([(u, p)]), self.rec.flush,
                       self.rec.deliver_many)
        assert self.bus.wait_connected(10)
        self.thread = EventLoopThread("io")
        self.loop: EventLoop = self.thread.start_loop()
        self.in_loop(lambda: self.bus.attach_loop(self.loop, home=True))
        assert self.bus.wait_connected(10)  # the home connection, made on a thread
        self.client = redis_py.Redis.from_url(redis.url)

    def in_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the loop's thread and return its result."""
        box: list[T] = []
        done = threading.Event()

        def call() -> None:
            try:
                box.append(fn())
            finally:
                done.set()
        self.loop.queue_in_loop(call)
        assert done.wait(10)
        return box[0]

    def subscribers(self, user_id: int) -> int:
        return int(self.client.pubsub_numsub(user_channel(user_id))[0][1])

    def close(self) -> None:
        self.bus.close()
        self.thread.stop(5)
        self.client.close()


@pytest.fixture
def setup() -> Iterator[Setup]:
    redis = RedisServer().start()
    s = Setup(redis)
    yield s
    s.close()
    redis.cleanup()


def test_subscribe_in_a_loop_returns_confirmed_and_its_messages_arrive_in_that_loop(
        setup: Setup) -> None:
    def subscribe() -> bool:
        setup.bus.subscribe(41)
        # Still in the loop's thread, which alone reads the connection: the
        # confirmation was read, and nothing waits for it, before subscribe
        # returned (Redis answers too fast for a PUBLISH to tell).
        return not setup.bus._home._waiters  # type: ignore[union-attr]

    assert setup.in_loop(subscribe)
    assert setup.subscribers(41) == 1
    sent = [b'{"n":%d}' % n for n in range(100)]
    for payload in sent:
        assert setup.client.publish(user_channel(41), payload) == 1
    setup.rec.wait(lambda: len(setup.rec.items) == 100)
    assert [p for _, p, _ in setup.rec.items] == sent  # in order
    assert {t for _, _, t in setup.rec.items} == {setup.in_loop(threading.get_ident)}


def test_unsubscribe_from_another_thread_returns_after_what_came_before_was_handed_on(
        setup: Setup) -> None:
    setup.in_loop(lambda: setup.bus.subscribe(42))
    gate = threading.Event()
    setup.loop.queue_in_loop(lambda: gate.wait(10))  # the loop is busy elsewhere
    for n in range(200):
        setup.client.publish(user_channel(42), b"%d" % n)
    handed_on_at_return: list[int] = []

    def leave() -> None:
        setup.bus.unsubscribe(42)
        handed_on_at_return.append(len(setup.rec.items))
    leaving = threading.Thread(target=leave)
    leaving.start()
    leaving.join(0.3)
    assert leaving.is_alive()  # waits for the loop to read the confirmation
    gate.set()
    leaving.join(10)
    assert handed_on_at_return == [200]
    assert setup.subscribers(42) == 0
    assert setup.client.publish(user_channel(42), b"late") == 0


def test_a_lost_connection_comes_back_subscribed_and_flushes_its_users(setup: Setup) -> None:
    setup.in_loop(lambda: setup.bus.subscribe(43))
    assert not setup.rec.flushed  # the login waited: nothing to flush
    killed = 0
    for client in setup.client.client_list(_type="pubsub"):
        if int(client["sub"]) == 1:  # the loop's connection holds only user 43
            setup.client.client_kill_filter(_id=client["id"])
            killed += 1
    assert killed == 1
    setup.rec.wait(lambda: 43 in setup.rec.flushed)  # others may have stored meanwhile
    assert setup.subscribers(43) == 1
    assert setup.client.publish(user_channel(43), b"again") == 1
    setup.rec.wait(lambda: any(p == b"again" for _, p, _ in setup.rec.items))


def test_flush_all_reaches_the_users_of_the_home_loop(setup: Setup) -> None:
    setup.in_loop(lambda: setup.bus.subscribe(44))
    setup.client.publish(CLUSTER_CHANNEL, FLUSH_ALL)
    setup.rec.wait(lambda: 44 in setup.rec.flushed)


def test_a_login_while_redis_is_down_does_not_wait_and_is_subscribed_once_it_is_back(
        setup: Setup) -> None:
    setup.redis.kill()
    started = time.monotonic()
    setup.in_loop(lambda: setup.bus.subscribe(45))
    assert time.monotonic() - started < 2.5  # at most one confirmation timeout
    setup.redis.start()
    setup.rec.wait(lambda: 45 in setup.rec.flushed, timeout=20)
    assert setup.subscribers(45) == 1


def test_connecting_never_holds_the_loop_up_for_the_connect_timeout(setup: Setup) -> None:
    """The first connection as every later one (a lost connection comes back
    through the same ``_connect``)."""
    with unanswered_address() as address:
        started = time.monotonic()
        subs = setup.in_loop(lambda: LoopSubscriptions(
            setup.bus, setup.loop, address, []))
        assert time.monotonic() - started < SUB_CONNECT_TIMEOUT / 2  # the loop went on
        assert not subs.wait_connected(0)
        started = time.monotonic()
        setup.in_loop(lambda: subs.subscribe(53, 5.0))  # down: held, not waited for
        assert time.monotonic() - started < SUB_CONNECT_TIMEOUT / 2
        subs.close()


def test_what_comes_while_a_login_waits_is_handed_on_after_the_login_not_inside_it(
        setup: Setup) -> None:
    setup.in_loop(lambda: setup.bus.subscribe(50))

    def login() -> int:
        setup.client.publish(user_channel(50), b"first")  # on the wire before the reply
        setup.bus.subscribe(51)
        return len(setup.rec.items)  # what the login's handler saw handed on
    assert setup.in_loop(login) == 0
    setup.client.publish(user_channel(50), b"second")
    setup.rec.wait(lambda: len(setup.rec.items) == 2)
    assert [p for _, p, _ in setup.rec.items] == [b"first", b"second"]
    assert not setup.rec.flushed  # the login's own confirmation was awaited


def test_an_unsubscribe_in_the_loops_own_thread_reads_its_confirmation_itself(
        setup: Setup) -> None:
    """As at shutdown with no loop but the main one (``-t 0``)."""
    setup.in_loop(lambda: setup.bus.subscribe(52))
    setup.client.publish(user_channel(52), b"before")
    started = time.monotonic()
    setup.in_loop(lambda: setup.bus.unsubscribe_many([52]))
    assert time.monotonic() - started < SHUTDOWN_UNSUBSCRIBE_WAIT  # confirmed, not timed out
    assert [p for _, p, _ in setup.rec.items] == [b"before"]
    assert setup.subscribers(52) == 0


def test_servers_with_no_loop_but_the_main_one_chat_across_and_leave_cleanly(
        mysql_url: str, module_redis: RedisServer) -> None:
    """``-t 0``: the main loop serves the clients and holds their subscriptions."""
    c = Cluster(module_redis, [start_server(mysql_url, module_redis.url, threads=0)
                               for _ in range(2)])
    try:
        a, b = c.user(0), c.user(1)
        assert a.chat(b.user_id, "there", seq=1)["state"] == "delivered"
        assert b.expect(MsgId.ONE_CHAT_MSG)["msg"] == "there"
        assert b.chat(a.user_id, "back", seq=2)["state"] == "delivered"
        assert a.expect(MsgId.ONE_CHAT_MSG)["msg"] == "back"
        assert c.servers[1].terminate() == 0
        # its users' unsubscribes were confirmed, not waited out
        assert "unsubscribe of 1 user(s) not confirmed" not in c.servers[1].log_text()
        assert a.chat(b.user_id, "gone", seq=3)["state"] == "stored"
    finally:
        c.close()


def test_the_bus_is_connected_only_while_every_loops_connection_is(setup: Setup) -> None:
    assert setup.bus.wait_connected(0)
    subs = setup.bus._home
    subs._closed = True  # no reconnection: the state stays for the test to see

    def drop() -> None:
        subs._drop(None)
    setup.in_loop(drop)
    assert not setup.bus.wait_connected(0)  # the health check and chat_redis_up say so


def test_a_login_on_another_loop_is_subscribed_on_the_home_loop_and_read_there(
        setup: Setup) -> None:
    other = EventLoopThread("io-other")
    other_loop = other.start_loop()
    try:
        done = threading.Event()

        def login_there() -> None:
            setup.bus.attach_loop(other_loop)  # a loop of the pool, not the home one
            setup.bus.subscribe(53)
            done.set()
        other_loop.queue_in_loop(login_there)
        assert done.wait(10)
        assert setup.subscribers(53) == 1  # confirmed before subscribe returned
        setup.client.publish(user_channel(53), b"to 53")
        setup.rec.wait(lambda: len(setup.rec.items) == 1)
        assert setup.rec.items[0][2] == setup.in_loop(threading.get_ident)  # the home loop
        assert setup.bus.home_loop is setup.loop
        setup.bus.unsubscribe(53)
        assert setup.subscribers(53) == 0
    finally:
        other.stop(5)
