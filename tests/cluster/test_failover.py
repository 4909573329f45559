"""Crashes and outages: a killed server, a killed Redis, a server shut down cleanly."""

from __future__ import annotations

import signal
import time

from chat.protocol import MsgId
from client.session import ChatSession
from tests.cluster.conftest import MakeCluster

TAKEOVER_LIMIT = 15.0


def login_until(s: ChatSession, user_id: int, password: str, limit: float) -> dict:
    """Log in, retrying while the answer is errno 2; the last ack."""
    deadline = time.monotonic() + limit
    while True:
        ack = s.login(user_id, password)
        if ack["errno"] != 2 or time.monotonic() > deadline:
            return ack
        time.sleep(0.2)  # a heartbeat has to expire: nothing to wait on but the clock


def test_killed_server_releases_its_users_within_15_s(make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    victim, peer = c.user(0), c.user(1)
    victim_id, password = victim.user_id, victim.password  # type: ignore[attr-defined]
    c.servers[0].terminate(signal.SIGKILL)
    killed_at = time.monotonic()
    # Sent while nobody holds the victim any more: stored, and not lost.
    ack = peer.chat(victim_id, "while you were down", seq=1)
    assert ack["state"] == "stored"
    again = c.connect(1)
    ack = login_until(again, victim_id, password, TAKEOVER_LIMIT)
    assert ack["errno"] == 0, ack
    assert time.monotonic() - killed_at < TAKEOVER_LIMIT
    assert [m["msg"] for m in ack["offlinemsg"]] == ["while you were down"]
    # Live again, on the surviving server, with the peer's state right.
    peer.chat(victim_id, "welcome back")
    assert again.expect(MsgId.ONE_CHAT_MSG)["msg"] == "welcome back"
    assert c.servers[1].log_text().count("which is dead") == 1


def test_graceful_shutdown_leaves_the_other_servers_users_online(
        make_cluster: MakeCluster) -> None:
    c = make_cluster(2)
    leaving, staying, friend = c.user(0), c.user(1), c.user(1)
    leaving_id = leaving.user_id
    assert staying.add_friend(friend.user_id)["friend"]["state"] == "online"
    assert c.servers[0].terminate(signal.SIGTERM) == 0
    # The stopped server's user is offline (it may log in on the other one) ...
    again = c.connect(1)
    assert again.login(leaving_id, leaving.password)["errno"] == 0  # type: ignore[attr-defined]
    # ... and the other server's users are still online and chatting.
    relog = c.connect(1)
    assert relog.login(staying.user_id, "pw")["errno"] == 2
    assert staying.chat(friend.user_id, "still here", seq=1)["state"] == "delivered"
    assert friend.expect(MsgId.ONE_CHAT_MSG)["msg"] == "still here"
    third = c.user(1)
    assert third.add_friend(staying.user_id)["friend"]["state"] == "online"


def test_redis_outage_local_chat_goes_on_and_nothing_is_lost(make_cluster: MakeCluster) -> None:
    c = make_cluster(2, own_redis=True)
    a1, a2, b1 = c.user(0), c.user(0), c.user(1)
    assert a1.chat(b1.user_id, "before", seq=0)["state"] == "delivered"
    assert b1.expect(MsgId.ONE_CHAT_MSG)["msg"] == "before"

    c.redis.kill()
    sent_to_b: list[str] = []
    sent_to_a: list[str] = []
    for n in range(10):
        # Local chat never stops.
        assert a1.chat(a2.user_id, f"local {n}", seq=n)["state"] == "delivered"
        assert a2.expect(MsgId.ONE_CHAT_MSG)["msg"] == f"local {n}"
        # Cross-server chat is stored, not dropped (the peer looks offline from here).
        assert a1.chat(b1.user_id, f"a->b {n}", seq=100 + n)["errno"] == 0
        assert b1.chat(a1.user_id, f"b->a {n}", seq=200 + n)["errno"] == 0
        sent_to_b.append(f"a->b {n}")
        sent_to_a.append(f"b->a {n}")

    c.redis.start()
    deadline = time.monotonic() + 20
    for sender, to, sent in ((a1, b1, sent_to_b), (b1, a1, sent_to_a)):
        n = 0
        while True:  # cross-server chat comes back by itself, both ways
            n += 1
            text = f"{sender.user_id} again {n}"
            sent.append(text)
            if sender.chat(to.user_id, text, seq=f"again{n}")["state"] == "delivered":
                break
            assert time.monotonic() < deadline, "cross-server chat did not come back"
            time.sleep(0.1)

    # Everything sent during the outage arrives: stored, then flushed once Redis is back.
    for session, sent in ((b1, sent_to_b), (a1, sent_to_a)):
        got: list[str] = []
        while sorted(got) != sorted(sent):
            msg = session.expect(MsgId.ONE_CHAT_MSG, timeout=10)
            got.append(msg["msg"])
        assert len(got) == len(set(got)), "a message arrived twice"
