"""Messages to offline users are stored and delivered intact, in order, once."""

from __future__ import annotations

from chat.protocol import MsgId

AWKWARD = [
    "你好，世界！这是一条离线消息。",
    'quotes " and \' and \\ backslashes \\" and {"json": [1]}',
    "emoji 😀🎉 and zero\u200bwidth and \u0000 NUL inside",
    "newlines\nand\r\ntabs\t",
    "x" * 10_000,
]


def test_awkward_texts_survive_offline_storage(user, account, sessions):
    alice, bob = user(), account()
    for text in AWKWARD:
        assert alice.chat(bob.id, text, seq=text[:5])["state"] == "stored"
    ack = sessions().login(bob.id, bob.password)
    assert [m["msg"] for m in ack["offlinemsg"]] == AWKWARD


def test_a_thousand_offline_messages_in_order_then_gone(user, account, sessions):
    alice, bob = user(), account()
    for i in range(1000):
        alice.chat(bob.id, f"m{i}")
    assert alice.chat(bob.id, "last", seq="end")["state"] == "stored"
    s = sessions()
    ack = s.login(bob.id, bob.password)
    assert len(ack["offlinemsg"]) == 100 and ack["pending"] == 901  # --login-batch
    got = s.backlog(ack)
    assert [m["msg"] for m in got] == [f"m{i}" for i in range(1000)] + ["last"]
    mids = [m["mid"] for m in got]
    assert mids == sorted(set(mids))
    s.logout()
    again = s.login(bob.id, bob.password)
    assert again["offlinemsg"] == [] and again["pending"] == 0


def test_offline_messages_keep_sender_and_group(user, account, sessions):
    alice = user()
    bob = account()
    s = sessions()
    s.login(bob.id, bob.password)
    gid = alice.create_group(f"og-{bob.name}", "")["groupid"]
    s.join_group(gid)
    s.logout()
    alice.chat(bob.id, "one")
    alice.group_chat(gid, "two", seq=1)
    ack = s.login(bob.id, bob.password)
    one, two = ack["offlinemsg"]
    assert one["msgid"] == MsgId.ONE_CHAT_MSG and one["id"] == alice.account.id
    assert one["name"] == alice.account.name and one["to"] == bob.id
    assert two["msgid"] == MsgId.GROUP_CHAT_MSG and two["groupid"] == gid
    assert two["msg"] == "two" and two["id"] == alice.account.id


def test_messages_racing_a_login_are_neither_lost_nor_doubled(user, account, sessions):
    alice, bob = user(), account()
    b = sessions()
    n = 300
    for i in range(n // 2):
        alice.chat(bob.id, str(i))
    b.send({"msgid": MsgId.LOGIN_MSG, "id": bob.id, "password": bob.password})
    for i in range(n // 2, n):
        alice.chat(bob.id, str(i))
    assert alice.chat(bob.id, "sync", seq=1)["errno"] == 0
    ack = b.expect(MsgId.LOGIN_MSG_ACK)
    got = [m["msg"] for m in ack["offlinemsg"]]
    while "sync" not in got:
        got.append(b.expect(MsgId.ONE_CHAT_MSG)["msg"])
    assert sorted(got[:-1], key=int) == [str(i) for i in range(n)]
    assert got[:-1] == [str(i) for i in range(n)]
