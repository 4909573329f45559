"""With sub-reactors taking turns, a loop that waits on the database gives its
turn up: users on the other loop keep chatting meanwhile.

The wait is made real with a row lock: the test holds ``SELECT ... FOR
UPDATE`` on a user's row, so that user's login blocks inside the server's
``UPDATE`` (the presence claim) until the test lets go.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chat.protocol import Errno, MsgId
from client.session import ChatSession
from tests.support.mysqldb import connect
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(60)]

WAIT = 20.0


@pytest.fixture
def server(mysql_url: str) -> Iterator[ServerProcess]:
    # A fresh server per test: the round-robin placement below counts from zero.
    proc = ServerProcess(mysql_url, threads=2).start()
    yield proc
    proc.kill()


def _lock_waits(con: object) -> int:
    cur = con.cursor()  # type: ignore[attr-defined]
    cur.execute("SELECT COUNT(*) FROM information_schema.innodb_trx"
                " WHERE trx_state = 'LOCK WAIT'")
    return int(cur.fetchone()[0])


def _wait_for_lock_wait(con: object) -> None:
    # MySQL has no notification for "a statement now waits for a lock": poll it,
    # slower than every 0.1 s, since InnoDB refreshes innodb_trx only when it has
    # not been read for that long.
    deadline = time.monotonic() + WAIT
    while _lock_waits(con) == 0:
        assert time.monotonic() < deadline, "the login never waited for the row lock"
        time.sleep(0.25)


def test_a_loop_waiting_on_the_database_lets_the_other_loop_run(
    server: ServerProcess, mysql_url: str
) -> None:
    with server.connect() as setup:  # connection 0: loop 0
        ids = [setup.register(name, "pw")["id"] for name in ("blocked", "alice", "bob")]
    blocked_id, alice_id, bob_id = ids

    holder = connect(mysql_url)
    holder.autocommit(False)
    opened: list[ChatSession] = []
    try:
        cur = holder.cursor()
        cur.execute("SELECT id FROM user WHERE id = %s FOR UPDATE", (blocked_id,))

        # Round robin over 2 loops: connections 1 and 3 share a loop, 2 and 4 the other.
        blocked = server.connect()  # 1
        alice = server.connect()  # 2
        filler = server.connect()  # 3
        bob = server.connect()  # 4
        opened += [blocked, alice, filler, bob]
        assert alice.login(alice_id, "pw")["errno"] == 0
        assert bob.login(bob_id, "pw")["errno"] == 0

        blocked.send({"msgid": MsgId.LOGIN_MSG, "id": blocked_id, "password": "pw"})
        _wait_for_lock_wait(holder)

        # The blocked loop is inside a database call now; the other one must serve.
        ack = alice.chat(bob_id, "while the other loop waits", seq=1)
        assert ack is not None and ack["errno"] == 0, ack
        got = bob.expect(MsgId.ONE_CHAT_MSG, timeout=WAIT)
        assert got["msg"] == "while the other loop waits" and got["id"] == alice_id
        assert bob.chat(alice_id, "and back", seq=2)["errno"] == 0  # type: ignore[index]
        assert alice.expect(MsgId.ONE_CHAT_MSG, timeout=WAIT)["msg"] == "and back"
        time.sleep(0.25)  # see _wait_for_lock_wait
        assert _lock_waits(holder) == 1, "the login stopped waiting before the chat ended"

        holder.rollback()
        ack = blocked.expect((MsgId.LOGIN_MSG_ACK, MsgId.ERROR_MSG), timeout=WAIT)
        assert ack["msgid"] == MsgId.LOGIN_MSG_ACK and ack["errno"] == Errno.OK, ack
    finally:
        holder.rollback()
        holder.close()
        for s in opened:
            s.close()
