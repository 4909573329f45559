"""Acknowledged delivery: message ids, the window, redelivery after any close, receipts,
and a paged backlog that never locks a user out (PROTOCOL.md, "Message ids...")."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from chat.protocol import Dialect, Errno, MsgId
from client.session import ChatSession
from tests.support.server import ServerProcess

WINDOW = 4
BATCH = 5
CHAT = (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG)


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(db_url, threads=2, extra=[
        "--ack-window", str(WINDOW), "--login-batch", str(BATCH),
        "--max-backlog", str(256 * 1024), "--high-water-mark", str(128 * 1024),
    ]).start()
    yield proc
    proc.kill()


def reset(session: ChatSession) -> None:
    """Close with a RST, as a crashed client's kernel does: nothing more is read."""
    session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.close()


def login_again(sessions, acct, **kwargs) -> tuple[ChatSession, dict]:
    """Log in once the server has seen the last connection go (a reset races it)."""
    for _ in range(100):
        s = sessions()
        ack = s.login(acct.id, acct.password, **kwargs)
        if ack["errno"] != Errno.ALREADY_ONLINE:
            assert ack["errno"] == 0, ack
            return s, ack
        s.close()
        time.sleep(0.02)  # no event tells a client that the server saw the reset: retry
    raise AssertionError("the old login never went away")


def stored_for(sender: ChatSession, to: int, texts: list[str]) -> list[int]:
    """Send ``texts`` to an offline user; return their mids."""
    mids = []
    for n, text in enumerate(texts):
        ack = sender.chat(to, text, seq=n)
        assert ack["state"] == "stored", ack
        mids.append(ack["mid"])
    return mids


def read_acking(session: ChatSession, count: int) -> list[dict]:
    """``count`` chat messages, each acknowledged as it comes (as a client would batch)."""
    got = []
    for _ in range(count):
        got.append(session.expect(CHAT, timeout=20))
        session.acknowledge(got[-1]["mid"])
    return got


def no_frame(session: ChatSession, timeout: float = 0.3) -> bool:
    try:
        session.recv(timeout)
    except TimeoutError:
        return True
    return False


def test_an_acknowledged_login_gets_its_backlog_as_frames_within_the_window(
        user, account, sessions):
    alice, bob = user(), account()
    mids = stored_for(alice, bob.id, [f"m{i}" for i in range(10)])
    b = sessions()
    ack = b.login(bob.id, bob.password, ack=True)
    assert ack["offlinemsg"] == [] and ack["pending"] == 10
    first = [b.expect(CHAT) for _ in range(WINDOW)]
    assert [m["mid"] for m in first] == mids[:WINDOW]
    assert all(m["stored"] is True for m in first)
    assert no_frame(b)  # the window is full until an acknowledgement
    b.acknowledge(first[1]["mid"])  # two of them: two more come
    assert [b.expect(CHAT)["mid"] for _ in range(2)] == mids[WINDOW:WINDOW + 2]
    assert no_frame(b)


def test_unacknowledged_messages_come_again_with_the_same_mids(user, account, sessions):
    alice, bob = user(), account()
    mids = stored_for(alice, bob.id, ["a", "b", "c"])
    b = sessions()
    b.login(bob.id, bob.password, ack=True)
    got = [b.expect(CHAT) for _ in range(3)]
    b.acknowledge(got[0]["mid"])
    b.logout()  # b and c were delivered, not acknowledged
    again = b.login(bob.id, bob.password, ack=True)
    assert again["pending"] == 2
    assert [b.expect(CHAT)["mid"] for _ in range(2)] == mids[1:]


@pytest.mark.parametrize("when", ["before reading", "mid-read", "after reading"])
def test_a_reset_loses_nothing(user, account, sessions, when):
    alice, bob = user(), account()
    texts = [f"{when} {i} " + "x" * 3000 for i in range(WINDOW)]
    mids = stored_for(alice, bob.id, texts)
    b = sessions()
    b.send({"msgid": MsgId.LOGIN_MSG, "id": bob.id, "password": bob.password, "ack": True})
    if when == "mid-read":
        b.sock.recv(5000)  # the ack and a part of the messages
    elif when == "after reading":
        b.expect(MsgId.LOGIN_MSG_ACK)
        assert [b.expect(CHAT)["mid"] for _ in range(WINDOW)] == mids
    reset(b)
    alice.chat(bob.id, "live while away", seq=1)  # into the old outbox or storage: behind
    c, ack = login_again(sessions, bob, ack=True)
    assert ack["pending"] == WINDOW + 1
    got = [c.expect(CHAT) for _ in range(WINDOW)]
    assert [m["mid"] for m in got] == mids and [m["msg"] for m in got] == texts
    c.acknowledge(mids[-1])
    assert c.expect(CHAT)["msg"] == "live while away"


def test_live_messages_not_acknowledged_are_stored_when_the_connection_closes(
        user, sessions, account):
    alice = user()
    bob = account()
    b = sessions()
    b.login(bob.id, bob.password, ack=True)
    sent = [alice.chat(bob.id, f"live {i}", seq=i)["mid"] for i in range(3)]
    got = [b.expect(CHAT) for _ in range(3)]
    assert [m["mid"] for m in got] == sent and "stored" not in got[0]
    b.acknowledge(sent[0])
    reset(b)
    c, ack = login_again(sessions, bob, ack=True)
    assert ack["pending"] == 2
    again = [c.expect(CHAT) for _ in range(2)]
    assert [m["mid"] for m in again] == sent[1:] and again[0]["stored"] is True


def test_messages_over_the_window_wait_in_storage_in_order(user, account, sessions):
    alice, bob = user(), account()
    b = sessions()
    b.login(bob.id, bob.password, ack=True)
    sent = [alice.chat(bob.id, str(i), seq=i)["mid"] for i in range(3 * WINDOW)]
    got = [b.expect(CHAT) for _ in range(WINDOW)]
    assert no_frame(b)
    b.acknowledge(got[-1]["mid"])
    got += [b.expect(CHAT) for _ in range(WINDOW)]
    reset(b)  # the second window delivered, not acknowledged; the third never sent
    c, ack = login_again(sessions, bob, ack=True)
    assert ack["pending"] == 2 * WINDOW
    rest = []
    while len(rest) < 2 * WINDOW:
        rest.append(c.expect(CHAT))
        if len(rest) % WINDOW == 0:
            c.acknowledge(rest[-1]["mid"])
    assert [m["mid"] for m in got] == sent[:2 * WINDOW]
    # The unacknowledged second window again, with the same ids, then the third.
    assert [m["mid"] for m in rest] == sent[WINDOW:]


def test_receipts_reach_an_acknowledging_sender_once(user, account, sessions):
    a, b = sessions(), sessions()
    alice, bob = account(), account()
    a.login(alice.id, alice.password, ack=True)
    b.login(bob.id, bob.password, ack=True)
    mid = a.chat(bob.id, "read me", seq=1)["mid"]
    assert b.expect(CHAT)["mid"] == mid
    b.acknowledge(mid)
    assert a.expect(MsgId.RECEIPT) == {"msgid": 18, "mid": mid, "to": bob.id}
    b.acknowledge(mid)  # again: no longer in flight, ignored
    assert a.chat(bob.id, "sync", seq=2)["errno"] == 0
    assert a.pushed == []
    b.acknowledge(b.expect(CHAT, msg="sync")["mid"])
    plain = user()  # a sender without acknowledgements gets no receipts
    mid = plain.chat(bob.id, "from plain", seq=3)["mid"]
    assert b.expect(CHAT)["mid"] == mid
    b.acknowledge(mid)
    assert plain.chat(bob.id, "sync", seq=4)["errno"] == 0
    assert plain.pushed == []
    assert a.expect(MsgId.RECEIPT)["to"] == bob.id  # the first sync's, and no other
    assert no_frame(a)


def test_a_stored_message_acknowledged_sends_its_receipt_too(account, sessions):
    alice, bob = account(), account()
    a = sessions()
    a.login(alice.id, alice.password, ack=True)
    mid = a.chat(bob.id, "while you were out", seq=1)["mid"]
    b = sessions()
    b.login(bob.id, bob.password, ack=True)
    assert b.expect(CHAT)["mid"] == mid
    b.acknowledge(mid)
    assert a.expect(MsgId.RECEIPT, mid=mid)["to"] == bob.id


def test_delivery_ack_needs_an_acknowledged_login(user, sessions):
    anonymous = sessions()
    anonymous.send({"msgid": MsgId.DELIVERY_ACK, "mid": 1})
    assert anonymous.expect(MsgId.ERROR_MSG)["errno"] == Errno.NOT_LOGGED_IN
    plain = user()
    plain.send({"msgid": MsgId.DELIVERY_ACK, "mid": 1})
    assert plain.expect(MsgId.ERROR_MSG)["errno"] == Errno.BAD_REQUEST
    acking = sessions()
    acct = plain.account
    plain.logout()
    acking.login(acct.id, acct.password, ack=True)
    acking.send({"msgid": MsgId.DELIVERY_ACK, "mid": "1"})
    assert acking.expect(MsgId.ERROR_MSG)["errno"] == Errno.BAD_REQUEST
    acking.acknowledge(12345)  # never delivered here: ignored, no reply
    assert acking.chat(acct.id, "to myself", seq=1)["errno"] == 0


def test_a_backlog_far_over_the_queue_limit_never_locks_a_login_out(user, account, sessions):
    # 300 messages of 4 KiB: 1.2 MB, over --max-backlog (256 KiB) five times.
    alice, bob = user(), account()
    texts = [f"{i:04d}" + "b" * 4096 for i in range(300)]
    for text in texts:
        alice.chat(bob.id, text)
    assert alice.chat(bob.id, "end", seq=1)["state"] == "stored"
    s = sessions()
    ack = s.login(bob.id, bob.password)
    assert len(ack["offlinemsg"]) <= BATCH and ack["pending"] > 250
    got = s.backlog(ack, timeout=20)
    assert [m["msg"] for m in got] == texts + ["end"]
    s.logout()  # everything was written: nothing is left stored
    assert s.login(bob.id, bob.password)["pending"] == 0


@pytest.mark.parametrize("acking", [False, True])
def test_a_client_that_stops_reading_is_not_locked_out_at_its_next_login(
        user, account, sessions, acking):
    alice, bob = user(), account()
    b = sessions()
    b.login(bob.id, bob.password, ack=acking)
    texts = [f"{i:03d} " + "s" * 30_000 for i in range(60)]  # 1.8 MB it never reads
    for text in texts:
        alice.chat(bob.id, text)
    assert alice.chat(bob.id, "end", seq=1)["state"] == "delivered"
    reset(b)
    c, ack = login_again(sessions, bob, ack=acking)
    if acking:
        got = [m["msg"] for m in read_acking(c, ack["pending"])]
    else:
        got = [m["msg"] for m in c.backlog(ack, timeout=20)]
    if acking:  # nothing was acknowledged: everything comes again
        assert got == texts + ["end"]
    else:  # what the kernel took for the reset client is gone with it; nothing else is
        assert got == (texts + ["end"])[len(texts) + 1 - len(got):]


def test_the_legacy_dialect_receives_a_backlog_of_a_thousand(user, account, server):
    alice, bob = user(), account()
    for i in range(1000):
        alice.chat(bob.id, f"legacy {i}")
    assert alice.chat(bob.id, "end", seq=1)["state"] == "stored"
    with ChatSession("127.0.0.1", server.port, dialect=Dialect.LEGACY) as old:
        old.send({"msgid": 1, "id": bob.id, "password": bob.password, "ack": True})
        ack = old.expect(MsgId.LOGIN_MSG_ACK)
        first = [_legacy(item) for item in ack["offlinemsg"]]
        rest = [old.expect(CHAT, timeout=20) for _ in range(ack["pending"])]
    assert [m["msg"] for m in first + rest] == [f"legacy {i}" for i in range(1000)] + ["end"]


def _legacy(item: object) -> dict[str, object]:
    import orjson

    assert isinstance(item, str)  # the original sent each element as JSON text
    value = orjson.loads(item)
    assert isinstance(value, dict)
    return value


def test_a_message_racing_a_close_is_kept_for_the_next_login(user, account, sessions):
    alice, bob = user(), account()
    b = sessions()
    b.login(bob.id, bob.password, ack=True)
    b.close()
    # Delivered to the closing connection, or stored: either way kept, once.
    assert alice.chat(bob.id, "after close", seq=1)["errno"] == 0
    c, ack = login_again(sessions, bob, ack=True)
    msgs = [c.expect(CHAT) for _ in range(ack["pending"])]
    assert [m["msg"] for m in msgs] == ["after close"]
