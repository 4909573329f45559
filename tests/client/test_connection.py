"""The reader thread / semaphore hand-off of `Connection`, over a socketpair.

The test plays the server on the other end of the pair.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from chat.protocol import FrameDecoder, FrameError, Message, MsgId, encode
from client.connection import BadRequest, Connection, ConnectionLost, ReplyTimeout

pytestmark = pytest.mark.timeout(10)


class Peer:
    """The server's end: reads request frames, writes raw bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self.decoder = FrameDecoder()
        self.frames: list[Message | FrameError] = []

    def next_request(self) -> Message:
        while not self.frames:
            data = self.sock.recv(65536)
            assert data, "client closed"
            self.frames += self.decoder.feed(data)
        item = self.frames.pop(0)
        assert isinstance(item, dict)
        return item

    def send(self, msg: Message) -> None:
        self.sock.sendall(encode(msg))


class Harness:
    def __init__(self, timeout: float = 5.0) -> None:
        mine, theirs = socket.socketpair()
        self.peer = Peer(theirs)
        self.pushed: list[Message | FrameError] = []
        self.got_push = threading.Semaphore(0)
        self.lost = threading.Event()
        self.lost_calls = 0
        self.conn = Connection(mine, self._on_push, self._on_lost, timeout=timeout)
        self.conn.start()
        self.pool = ThreadPoolExecutor(4)

    def _on_push(self, item: Message | FrameError) -> None:
        self.pushed.append(item)
        self.got_push.release()

    def _on_lost(self) -> None:
        self.lost_calls += 1
        self.lost.set()

    def request(self, msg: Message, timeout: float | None = None) -> Future[Message]:
        return self.pool.submit(self.conn.request, msg, timeout)

    def wait_push(self) -> Message | FrameError:
        assert self.got_push.acquire(timeout=5)
        return self.pushed[-1]


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.pool.shutdown(wait=False, cancel_futures=True)
    harness.peer.sock.close()


def test_reply_is_handed_over_by_seq_and_pushes_go_aside(h: Harness) -> None:
    reply = h.request({"msgid": MsgId.REG_MSG, "name": "a", "password": "p"})
    req = h.peer.next_request()
    assert req["msgid"] == MsgId.REG_MSG and type(req["seq"]) is int
    chat = {"msgid": MsgId.ONE_CHAT_MSG, "id": 2, "name": "b", "to": 1, "msg": "hi"}
    data = encode(chat) + encode({"msgid": MsgId.REG_MSG_ACK, "errno": 0, "id": 9,
                                  "seq": req["seq"]})
    for i in range(len(data)):  # one byte at a time
        h.peer.sock.sendall(data[i : i + 1])
    assert reply.result(5)["id"] == 9
    assert h.pushed == [chat]


def test_each_waiter_gets_its_own_reply_in_any_order(h: Harness) -> None:
    first = h.request({"msgid": MsgId.ADD_GROUP_MSG, "groupid": 1})
    req1 = h.peer.next_request()
    second = h.request({"msgid": MsgId.ADD_GROUP_MSG, "groupid": 2})
    req2 = h.peer.next_request()
    assert req1["seq"] != req2["seq"]
    h.peer.send({"msgid": MsgId.ADD_GROUP_MSG_ACK, "errno": 0, "groupid": 2, "seq": req2["seq"]})
    h.peer.send({"msgid": MsgId.ERROR_MSG, "errno": 5, "errmsg": "no", "seq": req1["seq"]})
    assert second.result(5)["groupid"] == 2
    assert first.result(5)["errno"] == 5
    assert h.pushed == []


def test_a_huge_reply_arrives_whole(h: Harness) -> None:
    reply = h.request({"msgid": MsgId.LOGIN_MSG, "id": 1, "password": "p"})
    req = h.peer.next_request()
    offline = [{"msgid": 5, "id": 2, "name": "b", "msg": "x" * 1000, "time": "t"}] * 3000
    ack = {"msgid": MsgId.LOGIN_MSG_ACK, "errno": 0, "id": 1, "name": "a",
           "offlinemsg": offline, "friends": [], "groups": [], "seq": req["seq"]}
    h.peer.sock.settimeout(None)
    sender = threading.Thread(target=h.peer.send, args=(ack,))
    sender.start()
    assert len(reply.result(5)["offlinemsg"]) == 3000
    sender.join(5)


def test_timeout_then_the_late_reply_is_dropped_or_shown(h: Harness) -> None:
    reply = h.request({"msgid": MsgId.ADD_FRIEND_MSG, "friendid": 2}, 0.05)
    req = h.peer.next_request()
    with pytest.raises(ReplyTimeout):
        reply.result(5)
    h.peer.send({"msgid": MsgId.ADD_FRIEND_MSG_ACK, "errno": 0, "seq": req["seq"]})
    late_error = {"msgid": MsgId.ERROR_MSG, "errno": 9, "errmsg": "db", "seq": req["seq"]}
    h.peer.send(late_error)
    assert h.wait_push() == late_error
    assert h.pushed == [late_error]


def test_server_closing_wakes_the_waiter_and_reports_once(h: Harness) -> None:
    reply = h.request({"msgid": MsgId.LOGINOUT_MSG})
    h.peer.next_request()
    h.peer.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(ConnectionLost):
        reply.result(5)
    assert h.lost.wait(5)
    assert h.conn.lost and h.lost_calls == 1
    with pytest.raises(ConnectionLost):
        h.conn.request({"msgid": MsgId.LOGINOUT_MSG})


def test_close_on_purpose_is_not_reported_as_lost(h: Harness) -> None:
    h.conn.close()
    assert not h.lost.is_set()
    assert h.lost_calls == 0


def test_errors_and_bad_frames_without_a_waiter_are_pushed(h: Harness) -> None:
    error = {"msgid": MsgId.ERROR_MSG, "errno": 4, "errmsg": "bad", "ref": None}
    h.peer.send(error)
    assert h.wait_push() == error
    h.peer.sock.sendall(b"[1]\n")
    assert isinstance(h.wait_push(), FrameError)


def test_unencodable_request_is_refused_before_sending(h: Harness) -> None:
    with pytest.raises(BadRequest):
        h.conn.request({"msgid": MsgId.ADD_FRIEND_MSG, "friendid": 2**70})
