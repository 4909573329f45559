"""Storage failing in the middle of a login or a flush, in process.

A real SQLite store whose chosen methods raise StoreUnavailable stands in for
a database that goes away between two calls of one request, which a real
restart can hardly hit on purpose.  The end-to-end outage test is
tests/e2e/test_mysql_fault.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from chat.bus import LocalBus
from chat.limits import Limits
from chat.protocol import Errno, MsgId
from chat.service import ChatService
from chat.session import Session
from chat.store import Store, StoreUnavailable, open_store


class FlakyStore:
    """Delegates to a real store; the methods named in ``failing`` raise instead."""

    def __init__(self, store: Store) -> None:
        self.real = store
        self.failing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name in self.failing:
            def fail(*args: object) -> None:
                raise StoreUnavailable(f"{name}: simulated outage")
            return fail
        return attr


class FakeConn:
    """Writes at once: write-complete follows every send (in the reactor, every flush)."""

    name = "fake"
    peer_address = ("127.0.0.1", 5555)
    connected = True

    def __init__(self) -> None:
        self.context: Session = Session(post=lambda fn: fn())
        self.frames: list[dict[str, Any]] = []
        self.written: Callable[[Any], None] | None = None

    def send(self, data: bytes) -> None:
        self.frames.extend(orjson.loads(line) for line in data.split(b"\n") if line)
        if self.written is not None:
            self.written(self)

    def set_write_complete_callback(self, cb: Callable[[Any], None] | None) -> None:
        self.written = cb

    def run(self, cb: Callable[[], None]) -> None:
        cb()

    def post(self, cb: Callable[[], None]) -> None:
        cb()

    def owned_here(self) -> bool:
        return True

    def queued_bytes(self) -> int:
        return 0

    def talks_to(self, peer: Any) -> None:
        pass

    def talks_to_loop(self, loop: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_close(self) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[ChatService, FlakyStore, int]]:
    store = open_store(f"sqlite:///{tmp_path / 'chat.db'}", password_cost=4)
    flaky = FlakyStore(store)
    # No hash workers: a login is answered before handle() returns, as the checks expect.
    service = ChatService(flaky, LocalBus(), "s1", Limits(hash_workers=0))  # type: ignore[arg-type]
    service.start()
    uid = store.register("carol", "pw")
    store.store_offline_many([(uid, orjson.dumps({"msgid": 5, "msg": f"m{i}"}).decode())
                              for i in range(3)])
    yield service, flaky, uid
    store.close()


def _login(service: ChatService, conn: FakeConn, uid: int) -> dict[str, Any]:
    service.handle(conn, conn.context, {"msgid": int(MsgId.LOGIN_MSG), "id": uid, "password": "pw"})
    acks = [f for f in conn.frames if f["msgid"] == MsgId.LOGIN_MSG_ACK]
    assert len(acks) == 1, conn.frames  # exactly one ACK per login request
    return acks[0]


@pytest.mark.parametrize("midway", ["offline_page", "friends_of", "groups_of"])
def test_login_failing_midway_can_be_retried(
        world: tuple[ChatService, FlakyStore, int], midway: str) -> None:
    service, flaky, uid = world
    flaky.failing = {midway, "mark_offline"}  # the database is gone for the rest
    conn = FakeConn()
    ack = _login(service, conn, uid)
    assert ack["errno"] == Errno.SERVER_ERROR and ack["errmsg"]
    assert conn.context.user_id is None and service.online_count() == 0
    assert service.presence.settle()
    assert flaky.real.holder(uid) == "s1"  # the row is stale ...

    flaky.failing = set()
    retry = FakeConn()
    ack = _login(service, retry, uid)  # ... and taken over, not errno 2
    assert ack["errno"] == 0, ack
    assert [m["msg"] for m in ack["offlinemsg"]] == ["m0", "m1", "m2"]
    assert flaky.real.offline_count(uid) == 0


def test_login_elsewhere_is_still_refused(world: tuple[ChatService, FlakyStore, int]) -> None:
    service, flaky, uid = world
    assert flaky.real.mark_online(uid, "another-server")
    ack = _login(service, FakeConn(), uid)
    assert ack["errno"] == Errno.ALREADY_ONLINE


def test_second_login_on_this_server_is_refused(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    service, _, uid = world
    assert _login(service, FakeConn(), uid)["errno"] == 0
    assert _login(service, FakeConn(), uid)["errno"] == Errno.ALREADY_ONLINE


def _logout_during_outage(service: ChatService, flaky: FlakyStore, uid: int) -> FakeConn:
    """Log in, then log out while mark_offline fails (and keeps failing)."""
    conn = FakeConn()
    assert _login(service, conn, uid)["errno"] == 0
    flaky.failing = {"mark_offline"}
    service.handle(conn, conn.context, {"msgid": int(MsgId.LOGINOUT_MSG)})
    assert service.presence.settle()
    return conn


def test_logout_during_outage_leaves_no_lockout(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    service, flaky, uid = world
    conn = _logout_during_outage(service, flaky, uid)
    assert conn.frames[-1] == {"msgid": MsgId.LOGINOUT_MSG_ACK, "errno": 0}
    flaky.failing = set()
    assert _login(service, FakeConn(), uid)["errno"] == 0


def test_failed_delete_after_login_keeps_messages_and_retries_at_logout(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    service, flaky, uid = world
    flaky.failing = {"delete_offline"}
    conn = FakeConn()
    ack = _login(service, conn, uid)
    assert ack["errno"] == 0 and len(ack["offlinemsg"]) == 3
    assert flaky.real.offline_count(uid) == 3  # delivered, not deleted yet
    flaky.failing = set()
    service.handle(conn, conn.context, {"msgid": int(MsgId.LOGINOUT_MSG)})
    assert flaky.real.offline_count(uid) == 0  # deleted when the session ended
    assert service.presence.settle()


def test_a_kick_sends_only_what_the_login_did_not(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    service, flaky, uid = world
    conn = FakeConn()
    flaky.failing = {"delete_offline"}
    assert len(_login(service, conn, uid)["offlinemsg"]) == 3
    flaky.failing = set()
    flaky.real.store_offline(uid, orjson.dumps({"msgid": 5, "msg": "late"}).decode())
    assert service.router.kick(uid)
    assert service.router.kick(uid)
    pushed = [f["msg"] for f in conn.frames if f["msgid"] == MsgId.ONE_CHAT_MSG]
    assert pushed == ["late"]
    assert flaky.real.offline_count(uid) == 0


def test_unwritten_offline_messages_stay_stored(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    """The delete waits for the write: a connection that never drains loses nothing."""
    service, flaky, uid = world
    conn = FakeConn()
    conn.set_write_complete_callback = lambda cb: None  # type: ignore[method-assign]
    assert len(_login(service, conn, uid)["offlinemsg"]) == 3
    assert flaky.real.offline_count(uid) == 3


def test_a_failed_logout_is_retried_so_other_servers_can_log_the_user_in(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    service, flaky, uid = world
    _logout_during_outage(service, flaky, uid)
    assert flaky.real.holder(uid) == "s1"  # pinned to this server ...
    service.presence.retry_releases()  # ... while the database is still down
    assert flaky.real.holder(uid) == "s1"
    flaky.failing = set()
    service.presence.retry_releases()
    assert flaky.real.holder(uid) is None
    assert flaky.real.mark_online(uid, "another-server")


def test_retry_leaves_alone_a_user_who_came_back(
        world: tuple[ChatService, FlakyStore, int]) -> None:
    service, flaky, uid = world
    _logout_during_outage(service, flaky, uid)
    flaky.failing = set()
    assert _login(service, FakeConn(), uid)["errno"] == 0
    service.presence.retry_releases()
    assert flaky.real.holder(uid) == "s1"
