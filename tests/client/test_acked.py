"""The client's acknowledged delivery end to end, against a scripted server.

The chat server does not give mids yet (the lead builds that side), so a
scripted peer on a real socket plays the server of PROTOCOL.md "Message ids,
acknowledged delivery and receipts" for ``python -m client`` run as a
process; against the real server, tests/client/test_cli.py shows the same
client working with a server that ignores ``"ack"``.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from chat.protocol import FrameDecoder, Message, MsgId, encode
from tests.client.conftest import Cli

pytestmark = pytest.mark.timeout(30)

T = "2026-11-29 12:00:00"


class ScriptedServer:
    """Accepts one client; the test reads its requests and writes the replies."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: queue.Queue[Message] = queue.Queue()
        self.conn: socket.socket | None = None
        self._accepted = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.conn, _ = self.listener.accept()
        self._accepted.set()
        decoder = FrameDecoder()
        while data := self.conn.recv(65536):
            for item in decoder.feed(data):
                assert isinstance(item, dict)
                self.requests.put(item)

    def next_request(self, msgid: int | None = None) -> Message:
        """The next request (of this msgid: others on the way are dropped)."""
        while True:
            msg = self.requests.get(timeout=5)
            if msgid is None or msg["msgid"] == msgid:
                return msg

    def send(self, *messages: Message) -> None:
        assert self._accepted.wait(5) and self.conn is not None
        self.conn.sendall(b"".join(encode(m) for m in messages))

    def acks_until(self, mid: int) -> list[int]:
        """The mids of the DELIVERY_ACKs received, up to the one of ``mid``."""
        mids = []
        while not mids or mids[-1] != mid:
            request = self.next_request()
            assert request["msgid"] == MsgId.DELIVERY_ACK and set(request) == {"msgid", "mid"}
            mids.append(request["mid"])
        return mids

    def answer(self, request: Message, reply: Message) -> None:
        self.send({**reply, "seq": request["seq"]})

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


def chat(mid: int, text: str, **extra: object) -> Message:
    return {"msgid": MsgId.ONE_CHAT_MSG, "id": 2, "name": "bob", "to": 1, "msg": text,
            "time": T, "mid": mid, **extra}


def log_in(cli: Cli, srv: ScriptedServer, pending: int) -> Message:
    cli.send("1", "alice", "pw")
    login = srv.next_request(MsgId.LOGIN_MSG)
    srv.answer(login, {"msgid": MsgId.LOGIN_MSG_ACK, "errno": 0, "id": 1, "name": "alice",
                       "offlinemsg": [], "pending": pending, "friends": [], "groups": []})
    cli.expect(r"^login success: id=1 name=alice$")
    return login


def test_stored_messages_repeats_and_batched_acknowledgements(
    scripted: ScriptedServer, spawn: Callable[..., Cli]
) -> None:
    cli = spawn(scripted.port)
    login = log_in(cli, scripted, pending=2)
    assert login["ack"] is True and login["name"] == "alice" and "id" not in login
    cli.expect(r"^offline messages: 2$")
    scripted.send(chat(70, "first", stored=True), chat(71, "second", stored=True),
                  chat(70, "first", stored=True), chat(9, "live one"))
    cli.expect(rf"^\[offline\] \[{T}\] 2 bob: first$")
    cli.expect(rf"^\[offline\] \[{T}\] 2 bob: second$")
    cli.expect(rf"^\[{T}\] 2 bob: live one$")
    # Acknowledged in a batch (one ack, unless the machine stalled the reader), up to
    # the last one received, whose mid is not the largest.
    acks = scripted.acks_until(9)
    assert len(acks) <= 2 and set(acks) <= {70, 71, 9}
    scripted.send(*(chat(100 + i, f"m{i}") for i in range(32)))
    acks = scripted.acks_until(131)
    assert len(acks) <= 2 and set(acks) <= set(range(100, 132))
    cli.expect(rf"^\[{T}\] 2 bob: m31$")
    cli.send("quit")
    logout = scripted.next_request()
    assert logout["msgid"] == MsgId.LOGINOUT_MSG
    scripted.answer(logout, {"msgid": MsgId.LOGINOUT_MSG_ACK, "errno": 0})
    cli.expect("^bye$")
    assert cli.wait() == 0
    shown = [line for line in cli.transcript if "bob: first" in line]
    assert shown == [f"[offline] [{T}] 2 bob: first"]  # the repeat was not shown


def test_logout_acknowledges_what_was_received_first(
    scripted: ScriptedServer, spawn: Callable[..., Cli]
) -> None:
    cli = spawn(scripted.port)
    log_in(cli, scripted, pending=0)
    scripted.send(chat(5, "just before"))
    cli.expect("bob: just before$")
    cli.send("loginout")
    first = scripted.next_request()
    if first["msgid"] == MsgId.DELIVERY_ACK:  # the timer may have been first
        assert first["mid"] == 5
        first = scripted.next_request()
    assert first["msgid"] == MsgId.LOGINOUT_MSG
    scripted.answer(first, {"msgid": MsgId.LOGINOUT_MSG_ACK, "errno": 0})
    cli.expect("^logged out$")


def test_sender_sees_one_tick_then_two(
    scripted: ScriptedServer, spawn: Callable[..., Cli]
) -> None:
    cli = spawn(scripted.port)
    log_in(cli, scripted, pending=0)
    cli.send("chat:3:see you at noon")
    request = scripted.next_request(MsgId.ONE_CHAT_MSG)
    assert (request["to"], request["msg"]) == (3, "see you at noon")
    scripted.answer(request, {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 5,
                              "state": "stored", "mid": 555})
    cli.expect(r"^sent to 3: ✓ stored$")
    cli.send("groupchat:4:all")
    request = scripted.next_request(MsgId.GROUP_CHAT_MSG)
    scripted.answer(request, {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 9,
                              "state": "delivered", "live": 2, "stored": 3, "mid": 556})
    cli.expect(r"^sent to group 4: ✓ 2 live, 3 at next login$")
    scripted.send({"msgid": MsgId.RECEIPT, "mid": 555, "to": 3},
                  {"msgid": MsgId.RECEIPT, "mid": 999, "to": 8})
    cli.expect(r"^✓✓ 3 received: see you at noon$")
    cli.expect(r"^✓✓ 8 received message #999$")
