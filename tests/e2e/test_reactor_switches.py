"""The reactor's A/B switches (--no-deferred-writes, --no-moves, --no-turns) change
how the server writes and where connections live, never what clients get."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.session import ChatSession
from tests.support.server import ServerProcess

SWITCHES = ["--no-deferred-writes", "--no-moves", "--no-turns"]


@pytest.fixture(scope="module")
def switched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = f"sqlite:///{tmp_path_factory.mktemp('db') / 'chat.db'}"
    limits = ["--rate", "1e9", "--burst", "1000000000", "--max-offline", "100000"]
    proc = ServerProcess(db, threads=2, extra=[*SWITCHES, *limits]).start()
    yield proc
    proc.kill()


def _user(server: ServerProcess, name: str) -> tuple[ChatSession, int]:
    s = server.connect()
    ack = s.register(name, "pw")
    assert ack["errno"] == 0, ack
    assert s.login(ack["id"], "pw")["errno"] == 0
    return s, ack["id"]


def test_a_large_backlog_pages_out_in_order_when_each_send_writes_at_once(
        switched: ServerProcess, tmp_path: Path) -> None:
    # Written at each send, a write-complete that paged the next messages from
    # inside the write would nest once per page: deep enough, with a backlog
    # this size, to end in a RecursionError if it were called and not posted.
    alice, _ = _user(switched, "sw_alice")
    bob_reg = switched.connect()
    bob_id = bob_reg.register("sw_bob", "pw")["id"]
    count = 12_000
    for i in range(count):
        alice.send({"msgid": 5, "to": bob_id, "msg": f"m{i}"})
    assert alice.chat(bob_id, "last", seq="end")["state"] == "stored"
    bob = switched.connect()
    ack = bob.login(bob_id, "pw")
    got = bob.backlog(ack, timeout=60)
    assert [m["msg"] for m in got] == [f"m{i}" for i in range(count)] + ["last"]


def test_live_chat_both_ways(switched: ServerProcess) -> None:
    carol, carol_id = _user(switched, "sw_carol")
    dave, dave_id = _user(switched, "sw_dave")
    for i in range(40):  # past the placement's streak: a move would be asked for
        assert carol.chat(dave_id, f"c{i}", seq=i)["state"] == "delivered"
        assert dave.expect(5)["msg"] == f"c{i}"
        dave.send({"msgid": 5, "to": carol_id, "msg": f"d{i}"})
        assert carol.expect(5)["msg"] == f"d{i}"
