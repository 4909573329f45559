"""One-to-one chat gathers its two users into one loop of the server, and a
third user's messages to one of them keep their order through the moves."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.protocol import MsgId
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(60)

ROUNDS = 40  # well over FOLLOW_AFTER in each direction
FLOOD = 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # A fresh server: the round robin below counts connections from zero.
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=2,
                         extra=["--log-level", "DEBUG"]).start()
    yield proc
    proc.kill()


def test_a_conversation_moves_into_one_loop_and_loses_nothing(server: ServerProcess) -> None:
    with server.connect() as setup:
        a_id, b_id, c_id = (setup.register(name, "pw")["id"] for name in "abc")
    # Round robin over two loops: A and C on one, B on the other.
    a, b, c = server.connect(), server.connect(), server.connect()
    try:
        for session, uid in ((a, a_id), (b, b_id), (c, c_id)):
            assert session.login(uid, "pw")["errno"] == 0

        def flood() -> None:
            for i in range(FLOOD):
                c.chat(b_id, f"c{i}")

        flooder = threading.Thread(target=flood)
        flooder.start()
        for i in range(ROUNDS):
            a.chat(b_id, f"a{i}")
            assert b.expect(MsgId.ONE_CHAT_MSG, id=a_id)["msg"] == f"a{i}"
            b.chat(a_id, f"b{i}")
            assert a.expect(MsgId.ONE_CHAT_MSG, id=b_id)["msg"] == f"b{i}"
        flooder.join(20)
        from_c = [m["msg"] for m in b.pushed if m.get("id") == c_id]
        others = [m for m in b.pushed if m.get("id") != c_id]
        b.pushed.clear()
        while len(from_c) < FLOOD:
            from_c.append(b.expect(MsgId.ONE_CHAT_MSG, id=c_id)["msg"])
        assert from_c == [f"c{i}" for i in range(FLOOD)]
        assert others == [] and b.pushed == [] and a.pushed == []
        server.wait_for_log(r"moves to loop")
    finally:
        for session in (a, b, c):
            session.close()
