"""Two servers behave as one: chat, groups, presence and offline messages across them."""

from __future__ import annotations

from chat.protocol import MsgId
from tests.cluster.conftest import Cluster, unique


def test_one_to_one_both_ways(shared: Cluster) -> None:
    a, b = shared.user(0), shared.user(1)
    ack = a.chat(b.user_id, "hello from 0", seq=1)
    assert ack == {"msgid": MsgId.CHAT_MSG_ACK, "seq": 1, "errno": 0, "ref": 5,
                   "state": "delivered", "mid": ack["mid"]}
    got = b.expect(MsgId.ONE_CHAT_MSG)
    assert got["mid"] == ack["mid"]  # the same id through the other server
    assert (got["id"], got["name"], got["to"], got["msg"]) == (a.user_id, a.name, b.user_id,
                                                               "hello from 0")
    assert b.chat(a.user_id, "hello from 1", seq="x")["state"] == "delivered"
    assert a.expect(MsgId.ONE_CHAT_MSG)["msg"] == "hello from 1"


def test_order_is_kept_across_servers(shared: Cluster) -> None:
    a, b = shared.user(0), shared.user(1)
    for n in range(50):
        a.chat(b.user_id, f"m{n}")
    assert [b.expect(MsgId.ONE_CHAT_MSG)["msg"] for _ in range(50)] == [
        f"m{n}" for n in range(50)]


def test_group_chat_both_ways(shared: Cluster) -> None:
    a, b, c = shared.user(0), shared.user(1), shared.user(1)
    gid = a.create_group(unique("g"), "cluster")["groupid"]
    assert b.join_group(gid)["errno"] == 0
    assert c.join_group(gid)["errno"] == 0
    assert a.group_chat(gid, "from 0", seq=1)["state"] == "delivered"
    for s in (b, c):
        got = s.expect(MsgId.GROUP_CHAT_MSG)
        assert (got["id"], got["groupid"], got["msg"]) == (a.user_id, gid, "from 0")
    b.group_chat(gid, "from 1")
    assert a.expect(MsgId.GROUP_CHAT_MSG)["msg"] == "from 1"
    assert c.expect(MsgId.GROUP_CHAT_MSG)["msg"] == "from 1"


def test_already_online_on_the_other_server(shared: Cluster) -> None:
    a = shared.user(0)
    a_id, password = a.user_id, a.password  # type: ignore[attr-defined]
    again = shared.connect(1)
    ack = again.login(a_id, password)
    assert ack["errno"] == 2
    assert ack["errmsg"] == "this account is already logged in, on this or another device"
    a.logout()
    assert again.login(a_id, password)["errno"] == 0


def test_presence_in_login_ack_is_cluster_wide(shared: Cluster) -> None:
    a, b = shared.user(0), shared.user(1)
    assert a.add_friend(b.user_id)["friend"]["state"] == "online"
    b_id = b.user_id
    b.logout()
    ack = b.login(b_id, b.password)  # type: ignore[attr-defined]
    assert ack["friends"] == [{"id": a.user_id, "name": a.name, "state": "online"}]


def test_offline_message_from_the_other_server(shared: Cluster) -> None:
    a, b = shared.user(0), shared.user(1)
    b_id = b.user_id
    b.logout()
    assert a.chat(b_id, "while you were out", seq=1)["state"] == "stored"
    later = shared.connect(0)  # logs in on the sender's server this time
    ack = later.login(b_id, b.password)  # type: ignore[attr-defined]
    assert [m["msg"] for m in ack["offlinemsg"]] == ["while you were out"]


def test_unknown_recipient_across_the_cluster(shared: Cluster) -> None:
    a = shared.user(1)
    reply = a.chat(10**9, "nobody", seq=3)
    assert reply["msgid"] == MsgId.ERROR_MSG and reply["errno"] == 5


def test_user_who_moves_between_servers_gets_everything(shared: Cluster) -> None:
    """Chat while the recipient hops between servers: each message arrives exactly once."""
    a, b = shared.user(0), shared.user(1)
    b_id, password = b.user_id, b.password  # type: ignore[attr-defined]
    received: list[str] = []
    sessions = [b]
    for hop in range(6):
        for n in range(5):
            a.chat(b_id, f"{hop}.{n}")
        assert b.logout()["errno"] == 0
        b = shared.connect(hop % 2)
        sessions.append(b)
        ack = b.login(b_id, password)
        assert ack["errno"] == 0, ack
        received += [m["msg"] for m in ack["offlinemsg"]]
    a.chat(b_id, "last")
    for s in sessions:  # live deliveries queued before each logout
        received += [m["msg"] for m in s.pushed if m["msgid"] == MsgId.ONE_CHAT_MSG]
        s.pushed.clear()
        try:
            while "last" not in received or s is not b:
                msg = s.recv(timeout=0.2 if s is not b else 5)
                received.append(msg["msg"])
        except TimeoutError:
            pass
    expected = [f"{h}.{n}" for h in range(6) for n in range(5)] + ["last"]
    assert sorted(received) == sorted(expected)
