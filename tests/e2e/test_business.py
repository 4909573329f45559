"""Every request of PROTOCOL.md and its reply, over a real server."""

from __future__ import annotations

import re

from chat.protocol import Errno, MsgId


def test_register_returns_a_new_id_and_refuses_a_taken_name(sessions):
    s = sessions()
    first = s.register("名前 " + s.sock.getsockname().__repr__(), "pw")
    assert first["msgid"] == MsgId.REG_MSG_ACK and first["errno"] == 0
    assert isinstance(first["id"], int)
    again = s.register("名前 " + s.sock.getsockname().__repr__(), "other")
    assert again["errno"] == Errno.INVALID and again["errmsg"]


def test_login_ack_carries_user_friends_groups_and_offline(user, account, sessions):
    alice, bob = user(), account()
    alice.add_friend(bob.id)
    group = alice.create_group(f"g-{bob.name}", "desc")["groupid"]
    b = sessions()
    b.login(bob.id, bob.password)
    b.join_group(group)
    b.logout()
    alice.chat(bob.id, "while you were away", seq=1)
    ack = b.login(bob.id, bob.password)
    assert ack["errno"] == 0 and ack["id"] == bob.id and ack["name"] == bob.name
    assert ack["friends"] == [{"id": alice.account.id, "name": alice.account.name,
                               "state": "online"}]
    assert ack["groups"] == [{
        "id": group, "groupname": f"g-{bob.name}", "groupdesc": "desc",
        "users": [
            {"id": alice.account.id, "name": alice.account.name, "state": "online",
             "role": "creator"},
            {"id": bob.id, "name": bob.name, "state": "online", "role": "normal"},
        ],
    }]
    [offline] = ack["offlinemsg"]
    assert offline["msgid"] == MsgId.ONE_CHAT_MSG and offline["msg"] == "while you were away"
    assert offline["id"] == alice.account.id and offline["to"] == bob.id


def test_login_errors(account, sessions, user):
    acct = account()
    s = sessions()
    assert s.login(acct.id, "wrong")["errno"] == Errno.INVALID
    assert s.login(10**9, "x")["errmsg"] == "wrong user id, name or password"
    assert s.login(acct.id, acct.password)["errno"] == 0
    other = sessions()
    dup = other.login(acct.id, acct.password)
    assert dup["errno"] == Errno.ALREADY_ONLINE
    assert dup["errmsg"] == "this account is already logged in, on this or another device"
    # A logged-in connection must log out first.
    again = s.request({"msgid": 1, "id": user().account.id, "password": "secret"}, 2)
    assert again["errno"] == Errno.BAD_REQUEST


def test_login_by_name(account, sessions):
    acct = account()
    s = sessions()
    by_name = {"msgid": MsgId.LOGIN_MSG, "name": acct.name, "password": acct.password}
    assert s.request({**by_name, "password": "wrong"}, MsgId.LOGIN_MSG_ACK)["errno"] == (
        Errno.INVALID)
    unknown = s.request({**by_name, "name": acct.name + "-nobody"}, MsgId.LOGIN_MSG_ACK)
    assert unknown["errno"] == Errno.INVALID
    assert unknown["errmsg"] == "wrong user id, name or password"
    ack = s.request(by_name, MsgId.LOGIN_MSG_ACK)
    assert (ack["errno"], ack["id"], ack["name"]) == (0, acct.id, acct.name)
    dup = sessions().request(by_name, MsgId.LOGIN_MSG_ACK)
    assert dup["errno"] == Errno.ALREADY_ONLINE


def test_login_wants_exactly_one_of_id_and_name(account, sessions):
    acct = account()
    s = sessions()
    for fields in ({"id": acct.id, "name": acct.name}, {}, {"name": 7}, {"id": acct.name}):
        ack = s.request({"msgid": MsgId.LOGIN_MSG, "password": acct.password, **fields},
                        MsgId.LOGIN_MSG_ACK)
        assert ack["errno"] == Errno.BAD_REQUEST and ack["errmsg"], fields
    assert s.login(acct.id, acct.password)["errno"] == 0  # the connection is still usable


def test_presence_states_follow_login_and_logout(user, account, sessions):
    alice, bob = user(), account()
    alice.add_friend(bob.id)
    b = sessions()
    assert b.login(bob.id, bob.password)["friends"][0]["state"] == "online"
    alice.logout()
    b.logout()
    assert b.login(bob.id, bob.password)["friends"][0]["state"] == "offline"


def test_friend_states_in_login_ack(user, account, sessions):
    alice, carol = user(), user()
    bob = account()
    for friend in (bob.id, carol.account.id):
        alice.add_friend(friend)
    alice.logout()
    ack = alice.login(alice.account.id, alice.account.password)
    states = {f["id"]: f["state"] for f in ack["friends"]}
    assert states == {bob.id: "offline", carol.account.id: "online"}


def test_add_friend_is_mutual_idempotent_and_checked(user, account, sessions):
    alice, bob = user(), account()
    ack = alice.add_friend(bob.id)
    assert ack == {"msgid": MsgId.ADD_FRIEND_MSG_ACK, "errno": 0,
                   "friend": {"id": bob.id, "name": bob.name, "state": "offline"}}
    assert alice.add_friend(bob.id)["errno"] == 0
    assert alice.add_friend(alice.account.id)["errno"] == Errno.BAD_REQUEST
    assert alice.add_friend(10**9)["errno"] == Errno.NOT_FOUND
    ack = sessions().login(bob.id, bob.password)
    assert [f["id"] for f in ack["friends"]] == [alice.account.id]


def test_one_to_one_chat_live_both_ways(user):
    alice, bob = user(), user()
    alice.chat(bob.account.id, "hi bob", seq=7)
    got = bob.expect(MsgId.ONE_CHAT_MSG)
    assert got["id"] == alice.account.id and got["name"] == alice.account.name
    assert got["to"] == bob.account.id and got["msg"] == "hi bob"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", got["time"])
    assert "seq" not in got
    bob.send({"msgid": 5, "toid": alice.account.id, "msg": "hi alice", "time": "yesterday"})
    back = alice.expect(MsgId.ONE_CHAT_MSG)
    assert back["to"] == alice.account.id and back["time"] == "yesterday"


def test_chat_ack_states_and_silence_without_seq(user, account):
    alice, bob, carol = user(), user(), account()
    ack = alice.chat(bob.account.id, "x", seq=1)
    assert ack == {"msgid": 16, "errno": 0, "ref": 5, "state": "delivered", "seq": 1,
                   "mid": ack["mid"]}
    assert bob.expect(MsgId.ONE_CHAT_MSG)["mid"] == ack["mid"]
    stored = alice.chat(carol.id, "x", seq="s")
    assert stored["state"] == "stored" and stored["mid"] > ack["mid"]
    alice.chat(bob.account.id, "no seq")
    # The only frame alice gets next is the reply to a later request.
    assert alice.chat(bob.account.id, "y", seq=2)["seq"] == 2
    assert alice.pushed == []


def test_chat_to_unknown_user_is_errno_5(user):
    alice = user()
    err = alice.chat(10**9, "anyone?", seq=9)
    assert err == {"msgid": 15, "errno": 5, "errmsg": err["errmsg"], "ref": 5, "seq": 9}


def test_messages_from_one_sender_arrive_in_order(user):
    alice, bob = user(), user()
    for i in range(200):
        alice.chat(bob.account.id, str(i))
    got = [bob.expect(MsgId.ONE_CHAT_MSG)["msg"] for _ in range(200)]
    assert got == [str(i) for i in range(200)]


def test_groups_create_join_and_fan_out(user):
    owner = user()
    members = [user() for _ in range(4)]
    name = f"team-{owner.account.name}"
    ack = owner.create_group(name, "the team")
    assert ack["msgid"] == MsgId.CREATE_GROUP_MSG_ACK and ack["errno"] == 0
    gid = ack["groupid"]
    for m in members:
        assert m.join_group(gid) == {"msgid": 13, "errno": 0, "groupid": gid}
    assert members[0].join_group(gid)["errno"] == 0
    assert owner.create_group(name, "again")["errno"] == Errno.CONFLICT
    assert members[0].join_group(10**9)["errno"] == Errno.NOT_FOUND
    ack = members[1].group_chat(gid, "hello all", seq="g1")
    assert ack == {"msgid": 16, "errno": 0, "ref": 9, "state": "delivered", "seq": "g1",
                   "mid": ack["mid"], "live": 4, "stored": 0}
    for receiver in [owner, members[0], members[2], members[3]]:
        got = receiver.expect(MsgId.GROUP_CHAT_MSG)
        assert got["groupid"] == gid and got["msg"] == "hello all"
        assert got["mid"] == ack["mid"]  # every member gets the same id
        assert got["id"] == members[1].account.id and got["name"] == members[1].account.name
    assert members[1].pushed == []


def test_group_chat_reaches_offline_members_at_login(user, account, sessions):
    owner = user()
    gid = owner.create_group(f"off-{owner.account.name}", "")["groupid"]
    later = account()
    s = sessions()
    s.login(later.id, later.password)
    s.join_group(gid)
    s.logout()
    sent = owner.group_chat(gid, "you missed this", seq=1)
    assert (sent["live"], sent["stored"]) == (0, 1)
    ack = sessions().login(later.id, later.password)
    assert [m["msg"] for m in ack["offlinemsg"]] == ["you missed this"]
    assert ack["groups"][0]["users"][1] == {"id": later.id, "name": later.name,
                                            "state": "online", "role": "normal"}


def test_group_chat_by_non_member_or_unknown_group(user):
    owner, stranger = user(), user()
    gid = owner.create_group(f"closed-{owner.account.name}", "")["groupid"]
    assert stranger.group_chat(gid, "let me in", seq=1)["errno"] == Errno.FORBIDDEN
    assert stranger.group_chat(10**9, "?", seq=2)["errno"] == Errno.NOT_FOUND
    assert owner.pushed == []


def test_create_group_field_limits(user):
    alice = user()
    assert alice.create_group("x" * 51, "")["errno"] == Errno.BAD_REQUEST
    assert alice.create_group("", "")["errno"] == Errno.BAD_REQUEST
    assert alice.create_group(f"d-{alice.account.name}", "d" * 201)["errno"] == Errno.BAD_REQUEST
    assert alice.create_group(f"d-{alice.account.name}", "d" * 200)["errno"] == 0


def test_logout_keeps_the_connection_and_allows_login_again(user):
    alice = user()
    assert alice.logout() == {"msgid": 14, "errno": 0}
    assert alice.chat(1, "x", seq=1)["errno"] == Errno.NOT_LOGGED_IN
    assert alice.login(alice.account.id, alice.account.password)["errno"] == 0


def test_relogin_after_disconnect(account, sessions):
    acct = account()
    s = sessions()
    s.login(acct.id, acct.password)
    s.close()
    # The server marks the user offline as soon as it sees the close.
    for _ in range(100):
        ack = sessions().login(acct.id, acct.password)
        if ack["errno"] == 0:
            break
        assert ack["errno"] == Errno.ALREADY_ONLINE
    assert ack["errno"] == 0
