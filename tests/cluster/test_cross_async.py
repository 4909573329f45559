"""Chat across servers leaves without the loop waiting on Redis: the same guarantees.

The sender's connection waits for its message's fate (published, or stored
when nobody took it) before its next request is served, so order per sender
and the acks' states are as they were with a synchronous PUBLISH; these tests
check them under load, while the recipient moves, and across a Redis stall.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from chat.protocol import MsgId
from client.session import ChatSession
from tests.cluster.conftest import Cluster, MakeCluster, unique


def drain_chat(s: ChatSession, until: str | None = None, quiet: float = 0.3,
               limit: float = 20.0) -> list[str]:
    """The chat texts ``s`` got (its pushed ones first): until ``until`` arrived,
    or else until nothing came for ``quiet`` seconds."""
    got = [m["msg"] for m in s.pushed if m.get("msgid") == MsgId.ONE_CHAT_MSG]
    s.pushed.clear()
    deadline = time.monotonic() + limit
    while until not in got:
        assert time.monotonic() < deadline, f"{until!r} did not arrive; got {got[-5:]}"
        try:
            msg = s.recv(timeout=quiet if until is None else 5)
        except TimeoutError:
            if until is None:
                return got
            raise
        if msg.get("msgid") == MsgId.ONE_CHAT_MSG:
            got.append(msg["msg"])
    return got


def test_acks_say_delivered_or_stored_and_carry_the_mid(shared: Cluster) -> None:
    a, b = shared.user(0), shared.user(1)
    ack = a.chat(b.user_id, "live", seq="s1")
    assert (ack["msgid"], ack["seq"], ack["errno"], ack["state"]) == (
        MsgId.CHAT_MSG_ACK, "s1", 0, "delivered")
    assert b.expect(MsgId.ONE_CHAT_MSG)["mid"] == ack["mid"]
    b_id, password = b.user_id, b.password  # type: ignore[attr-defined]
    b.logout()
    ack = a.chat(b_id, "offline", seq=2)
    assert (ack["seq"], ack["state"]) == (2, "stored")
    again = shared.connect(1)
    assert [m["mid"] for m in again.login(b_id, password)["offlinemsg"]] == [ack["mid"]]


def test_a_group_ack_counts_members_reached_on_each_server_and_stored(shared: Cluster) -> None:
    a, here, there, gone = shared.user(0), shared.user(0), shared.user(1), shared.user(1)
    gid = a.create_group(unique("g"), "counts")["groupid"]
    for s in (here, there, gone):
        assert s.join_group(gid)["errno"] == 0
    gone.logout()
    ack = a.group_chat(gid, "to all", seq=9)
    assert (ack["seq"], ack["state"], ack["live"], ack["stored"]) == (9, "delivered", 2, 1)
    for s in (here, there):
        assert s.expect(MsgId.GROUP_CHAT_MSG)["mid"] == ack["mid"]


def test_requests_behind_a_cross_server_message_are_answered_in_order(shared: Cluster) -> None:
    a, b, c = shared.user(0), shared.user(1), shared.user(0)
    for n in range(20):  # sent at once: each reply in the order of its request
        a.send({"msgid": MsgId.ONE_CHAT_MSG, "to": b.user_id if n % 2 else c.user_id,
                "msg": f"m{n}", "seq": n})
    acks = [a.expect(MsgId.CHAT_MSG_ACK) for _ in range(20)]
    assert [ack["seq"] for ack in acks] == list(range(20))
    assert all(ack["state"] == "delivered" for ack in acks)
    assert drain_chat(b, "m19") == [f"m{n}" for n in range(1, 20, 2)]


def test_order_under_load_while_the_recipient_moves_between_servers(shared: Cluster) -> None:
    """One sender pipelines messages to a recipient who logs out and in again on
    either server meanwhile: every message arrives once, in the order sent."""
    a, b = shared.user(0), shared.user(1)
    b_id, password = b.user_id, b.password  # type: ignore[attr-defined]
    total = 600
    sending = threading.Thread(target=lambda: [a.chat(b_id, f"n{n}") for n in range(total)])
    sending.start()
    received: list[str] = []
    for hop in range(6):
        time.sleep(0.05)  # let some messages go to this login (not an event: the load's pace)
        logout = b.logout()  # what came before its ack was this login's
        assert logout["errno"] == 0
        received += drain_chat(b, quiet=0.0) if b.pushed else []
        b = shared.connect((hop + 1) % 2)
        ack = b.login(b_id, password)
        assert ack["errno"] == 0, ack
        received += [m["msg"] for m in ack["offlinemsg"]]
    sending.join(30)
    assert not sending.is_alive()
    a.chat(b_id, "last")
    received += drain_chat(b, "last")
    expected = [f"n{n}" for n in range(total)] + ["last"]
    assert received == expected, _first_difference(received, expected)


def _first_difference(got: list[str], want: list[str]) -> str:
    for i, (x, y) in enumerate(zip(got, want, strict=False)):
        if x != y:
            return f"at {i}: got {got[i:i + 5]}, want {want[i:i + 5]}"
    return f"lengths {len(got)} and {len(want)}"


def test_a_redis_stall_stores_cross_server_chat_and_it_arrives_later_in_order(
        make_cluster: MakeCluster) -> None:
    c = make_cluster(2, own_redis=True)
    a, b = c.user(0), c.user(1)
    assert a.chat(b.user_id, "before", seq=0)["state"] == "delivered"
    assert b.expect(MsgId.ONE_CHAT_MSG)["msg"] == "before"
    assert c.redis.process is not None
    os.kill(c.redis.process.pid, signal.SIGSTOP)  # every Redis reply waits now
    try:
        states = [a.chat(b.user_id, f"stalled {n}", seq=n)["state"] for n in range(6)]
    finally:
        os.kill(c.redis.process.pid, signal.SIGCONT)
    assert states == ["stored"] * 6
    # Back: new messages follow the stored ones, and nothing is lost or repeated.
    sent = [f"stalled {n}" for n in range(6)]
    deadline = time.monotonic() + 20
    n = 0
    while True:
        n += 1
        sent.append(f"again {n}")
        if a.chat(b.user_id, f"again {n}", seq=100 + n)["state"] == "delivered":
            break
        assert time.monotonic() < deadline, "cross-server chat did not come back"
        time.sleep(0.1)
    got = drain_chat(b, sent[-1], limit=30)
    # A PUBLISH that timed out was stored, yet a stalled (not dead) Redis runs
    # it once it resumes: that one message may come twice, with one mid, which
    # clients drop (the same as a synchronous PUBLISH timing out did).
    once = list(dict.fromkeys(got))
    assert once == sent, _first_difference(once, sent)
    assert len(got) - len(once) <= 1
