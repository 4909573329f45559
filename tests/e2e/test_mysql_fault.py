"""A running chat server while its MySQL is stopped and started again.

The database is a PRIVATE mariadbd (tests/support/mariadb_server.py), never
the shared one.  The chat server gets short MySQL timeouts through its URL so
that every storage call fails within seconds while the database is down.

What must hold (issue 4):

- online one-to-one chat between two users of this process needs no storage
  and keeps flowing through the outage;
- every request that needs storage is answered with errno 9, quickly;
- nothing needs a manual step afterwards: the same requests work again;
- offline messages acknowledged as ``stored`` before the outage arrive
  exactly once at the next login; those refused with errno 9 were not stored;
- a user whose login or logout failed with errno 9 is not locked out
  (errno 2) afterwards;
- the server log says why requests failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chat.protocol import Errno, Message, MsgId
from client.session import ChatSession
from tests.support.mariadb_server import MariaDBServer
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(90)]

# connect_timeout only matters if the port hangs; a stopped mariadbd refuses at once.
DB_OPTIONS = "?connect_timeout=2&read_timeout=5&write_timeout=5&pool_size=4"
QUICK = 5.0  # seconds: the most any storage request may take during the outage
STORED_BEFORE = 20


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    with MariaDBServer() as db:
        yield db


@pytest.fixture(scope="module")
def server(mariadb: MariaDBServer) -> Iterator[ServerProcess]:
    proc = ServerProcess(mariadb.url + "chat" + DB_OPTIONS, threads=2).start()
    yield proc
    proc.kill()


def _register(server: ServerProcess, name: str) -> int:
    with server.connect() as s:
        ack = s.register(name, "pw")
    assert ack["errno"] == 0, ack
    user_id: int = ack["id"]
    return user_id


def _login(server: ServerProcess, user_id: int) -> ChatSession:
    s = server.connect()
    ack = s.login(user_id, "pw")
    assert ack["errno"] == 0, ack
    s.login_ack = ack  # type: ignore[attr-defined]
    return s


def _timed(call: object, *args: object) -> Message:
    start = time.monotonic()
    reply: Message = call(*args)  # type: ignore[operator]
    assert time.monotonic() - start < QUICK, f"took {time.monotonic() - start:.1f} s"
    return reply


def _assert_unavailable(reply: Message | None, msgid: int) -> None:
    assert reply is not None
    assert reply["msgid"] == msgid, reply
    assert reply["errno"] == Errno.SERVER_ERROR, reply
    assert reply["errmsg"], reply


def _online_chat_flows(alice: ChatSession, bob: ChatSession, tag: str) -> None:
    for i in range(5):
        ack = _timed(alice.chat, bob.user_id, f"{tag} a{i}", f"{tag}-a{i}")
        assert ack["state"] == "delivered", ack
        assert bob.expect(MsgId.ONE_CHAT_MSG, msg=f"{tag} a{i}")["id"] == alice.user_id
        ack = _timed(bob.chat, alice.user_id, f"{tag} b{i}", f"{tag}-b{i}")
        assert ack["state"] == "delivered", ack
        assert alice.expect(MsgId.ONE_CHAT_MSG, msg=f"{tag} b{i}")["id"] == bob.user_id


def test_mysql_restart_under_a_running_server(mariadb: MariaDBServer,
                                              server: ServerProcess) -> None:
    alice_id, bob_id, carol_id, dave_id, erin_id = (
        _register(server, n) for n in ("alice", "bob", "carol", "dave", "erin"))
    alice, bob = _login(server, alice_id), _login(server, bob_id)
    erin = _login(server, erin_id)  # logs out during the outage
    group = alice.create_group("g", "alice, bob and carol")
    assert group["errno"] == 0, group
    for s in (bob, _login(server, carol_id)):
        assert s.join_group(group["groupid"])["errno"] == 0
        if s is not bob:
            s.logout()
            s.close()
    for i in range(STORED_BEFORE):  # carol is offline: stored
        ack = alice.chat(carol_id, f"before {i}", seq=f"before-{i}")
        assert ack is not None and ack["state"] == "stored", ack

    mariadb.stop()
    _online_chat_flows(alice, bob, "during")
    _assert_unavailable(_timed(alice.chat, carol_id, "refused", "refused"), MsgId.ERROR_MSG)
    _assert_unavailable(_timed(alice.group_chat, group["groupid"], "refused", "g-refused"),
                        MsgId.ERROR_MSG)
    _assert_unavailable(_timed(alice.add_friend, dave_id), MsgId.ADD_FRIEND_MSG_ACK)
    _assert_unavailable(_timed(alice.create_group, "g2"), MsgId.CREATE_GROUP_MSG_ACK)
    with server.connect() as s:
        _assert_unavailable(_timed(s.register, "frank", "pw"), MsgId.REG_MSG_ACK)
        _assert_unavailable(_timed(s.login, dave_id, "pw"), MsgId.LOGIN_MSG_ACK)
        _assert_unavailable(_timed(s.login, carol_id, "pw"), MsgId.LOGIN_MSG_ACK)
    assert erin.logout()["errno"] == 0  # offline here; the stale row is taken over later
    erin.close()
    _online_chat_flows(alice, bob, "still")
    assert server.proc is not None and server.proc.poll() is None

    mariadb.start()
    _online_chat_flows(alice, bob, "after")
    with server.connect() as s:  # no manual step: every storage call works again
        assert s.register("frank", "pw")["errno"] == 0
    assert alice.add_friend(dave_id)["errno"] == 0
    assert alice.create_group("g2")["errno"] == 0
    _login(server, dave_id).close()
    _login(server, erin_id).close()

    carol = _login(server, carol_id)
    texts = [m["msg"] for m in carol.login_ack["offlinemsg"]]  # type: ignore[attr-defined]
    assert texts == [f"before {i}" for i in range(STORED_BEFORE)]  # none lost, none twice
    ack = alice.chat(carol_id, "live again", seq="live")
    assert ack is not None and ack["state"] == "delivered"
    assert carol.expect(MsgId.ONE_CHAT_MSG)["msg"] == "live again"  # nothing else queued
    carol.logout()
    again = carol.login(carol_id, "pw")
    assert again["errno"] == 0 and again["offlinemsg"] == [], again
    for s in (alice, bob, carol):
        s.close()

    log = server.log_text()
    assert "unavailable" in log and "available again" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
