"""Acknowledged delivery across the cluster: ids, receipts and redelivery when the
recipient moves from one server to the other."""

from __future__ import annotations

import threading

from chat.mids import mid_node
from chat.protocol import MsgId
from client.session import ChatSession
from tests.cluster.conftest import Cluster, unique

CHAT = (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG)


def acking_user(cluster: Cluster, server: int) -> ChatSession:
    s = cluster.connect(server)
    reg = s.register(unique("d"), "pw")
    assert s.login(reg["id"], "pw", ack=True)["errno"] == 0
    s.password = "pw"  # type: ignore[attr-defined]
    return s


def test_ids_stay_unique_under_eight_concurrent_senders_on_two_servers(shared: Cluster) -> None:
    receiver = shared.user(0)
    senders = [shared.user(i % 2) for i in range(8)]
    mids: list[list[int]] = [[] for _ in senders]

    def send(i: int) -> None:
        for n in range(100):
            ack = senders[i].chat(receiver.user_id, f"{i}.{n}", seq=n)
            mids[i].append(ack["mid"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [m for per_sender in mids for m in per_sender]
    assert len(every) == 800 and len(set(every)) == 800
    for per_sender in mids:
        assert per_sender == sorted(per_sender)  # later messages of a sender: larger ids
    assert len({mid_node(m) for m in every}) == 2  # each server gives its own
    got = [receiver.expect(MsgId.ONE_CHAT_MSG)["mid"] for _ in range(800)]
    assert sorted(got) == sorted(every)


def test_receipts_cross_servers(shared: Cluster) -> None:
    alice, bob = acking_user(shared, 0), acking_user(shared, 1)
    mid = alice.chat(bob.user_id, "across", seq=1)["mid"]
    got = bob.expect(MsgId.ONE_CHAT_MSG)
    assert got["mid"] == mid
    bob.acknowledge(mid)
    assert alice.expect(MsgId.RECEIPT) == {"msgid": 18, "mid": mid, "to": bob.user_id}
    back = bob.chat(alice.user_id, "and back", seq=2)["mid"]
    assert alice.expect(MsgId.ONE_CHAT_MSG)["mid"] == back
    alice.acknowledge(back)
    assert bob.expect(MsgId.RECEIPT) == {"msgid": 18, "mid": back, "to": alice.user_id}


def test_unacknowledged_messages_follow_the_user_to_the_other_server(shared: Cluster) -> None:
    alice, bob = shared.user(0), acking_user(shared, 1)
    bob_id, password = bob.user_id, bob.password  # type: ignore[attr-defined]
    sent = [alice.chat(bob_id, f"m{i}", seq=i)["mid"] for i in range(6)]
    got = [bob.expect(CHAT) for _ in range(6)]
    assert [m["mid"] for m in got] == sent
    bob.acknowledge(sent[1])
    assert bob.logout()["errno"] == 0
    moved = shared.connect(0)  # the sender's server this time
    ack = moved.login(bob_id, password, ack=True)
    assert ack["pending"] == 4
    again = [moved.expect(CHAT) for _ in range(4)]
    assert [m["mid"] for m in again] == sent[2:] and all(m["stored"] for m in again)
    moved.acknowledge(sent[-1])
    later = alice.chat(bob_id, "after the move", seq="x")
    assert later["state"] == "delivered"
    assert moved.expect(CHAT)["mid"] == later["mid"]


def test_a_stored_message_acknowledged_on_one_server_sends_the_receipt_to_the_other(
        shared: Cluster) -> None:
    alice = acking_user(shared, 0)
    bob = shared.connect(1)
    bob_id = bob.register(unique("d"), "pw")["id"]
    mid = alice.chat(bob_id, "stored for later", seq=1)["mid"]
    ack = bob.login(bob_id, "pw", ack=True)
    assert ack["pending"] == 1
    assert bob.expect(CHAT)["mid"] == mid
    bob.acknowledge(mid)
    assert alice.expect(MsgId.RECEIPT, mid=mid)["to"] == bob_id
