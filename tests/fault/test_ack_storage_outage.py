"""An acknowledging client that resets its connection while the database is down
must not lose a message acknowledged ``delivered`` to its sender (PROTOCOL.md:
"When the connection closes, in any way, every message delivered and not
acknowledged ... is kept and delivered again at the next acknowledged login").

Found by the soak (benchmarks/soak.py: a client reset during the MariaDB
restart; the server logged "unconfirmed message(s) lost, storage unavailable").
The database is a PRIVATE mariadbd, never the shared one."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from chat.protocol import Errno, MsgId
from client.session import ChatSession
from tests.support.mariadb_server import MariaDBServer
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(120)]

DB_OPTIONS = "?connect_timeout=2&read_timeout=5&write_timeout=5&pool_size=4"


@pytest.fixture
def mariadb() -> Iterator[MariaDBServer]:
    with MariaDBServer() as db:
        yield db


@pytest.fixture
def server(mariadb: MariaDBServer) -> Iterator[ServerProcess]:
    proc = ServerProcess(mariadb.url + "chat" + DB_OPTIONS, threads=2).start()
    yield proc
    proc.kill()


def login_when_the_database_answers(server: ServerProcess, user_id: int) -> tuple[
        ChatSession, dict]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = server.connect()
        ack = s.login(user_id, "pw", ack=True)
        if ack["errno"] == 0:
            return s, ack
        assert ack["errno"] in (Errno.ALREADY_ONLINE, Errno.SERVER_ERROR), ack
        s.close()
        time.sleep(0.2)  # the database's return is no event a client can wait for
    raise AssertionError("no login after the database came back")


def test_a_reset_during_a_database_outage_loses_no_delivered_message(
        mariadb: MariaDBServer, server: ServerProcess) -> None:
    with server.connect() as s:
        alice, bob = s.register("alice", "pw")["id"], s.register("bob", "pw")["id"]
    a, b = server.connect(), server.connect()
    assert a.login(alice, "pw")["errno"] == 0
    assert b.login(bob, "pw", ack=True)["errno"] == 0
    sent = a.chat(bob, "in flight", seq=1)
    assert sent["state"] == "delivered"
    assert b.expect(MsgId.ONE_CHAT_MSG)["mid"] == sent["mid"]  # read, not acknowledged
    mariadb.stop()
    try:
        b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.close()  # a crashed client: the server closes the login while it cannot store
        server.wait_for_log(rf"user {bob} left, but is still marked online", timeout=30)
    finally:
        mariadb.start()
    c, ack = login_when_the_database_answers(server, bob)
    try:
        assert ack["pending"] == 1, "the unacknowledged message was dropped"
        assert c.expect(MsgId.ONE_CHAT_MSG)["mid"] == sent["mid"]
    finally:
        a.close()
        c.close()
