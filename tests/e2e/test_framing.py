"""Framing and bad input over a real connection: clear errors, nothing lost."""

from __future__ import annotations

import orjson

from chat.protocol import ACKED_REQUESTS, Errno, MsgId


def frame(msg: dict) -> bytes:
    return orjson.dumps(msg) + b"\n"


def test_request_split_byte_by_byte(sessions):
    s = sessions()
    data = frame({"msgid": 3, "name": f"bytewise-{id(s)}", "password": "pw"})
    for i in range(len(data)):
        s.send_raw(data[i : i + 1])
    assert s.expect(MsgId.REG_MSG_ACK)["errno"] == 0


def test_coalesced_frames_all_answered_in_order(sessions):
    s = sessions()
    names = [f"coal-{id(s)}-{i}" for i in range(20)]
    s.send_raw(b"".join(frame({"msgid": 3, "name": n, "password": "p", "seq": i})
                        for i, n in enumerate(names)))
    replies = [s.recv() for _ in names]
    assert [r["seq"] for r in replies] == list(range(20))
    assert all(r["errno"] == 0 for r in replies)


def test_crlf_and_blank_keepalive_lines(sessions):
    s = sessions()
    s.send_raw(b"\n\r\n   \n" + orjson.dumps({"msgid": 3, "name": f"crlf-{id(s)}",
                                                "password": "p"}) + b"\r\n\n")
    assert s.recv()["msgid"] == MsgId.REG_MSG_ACK


def test_malformed_json_then_a_valid_frame(sessions):
    s = sessions()
    s.send_raw(b'{"msgid": 3, "name": \n[1,2]\n42\n\xff\xfe\n')
    errors = [s.recv() for _ in range(4)]
    assert all(e == {"msgid": 15, "errno": 4, "errmsg": e["errmsg"], "ref": None}
               for e in errors)
    assert s.register(f"after-junk-{id(s)}", "pw")["errno"] == 0


def test_oversized_frame_gets_errno_7_and_the_connection_closes(sessions):
    s = sessions()
    s.send_raw(b'{"msgid":3,"name":"' + b"x" * 70_000 + b'"}\n')
    err = s.recv()
    assert err["msgid"] == MsgId.ERROR_MSG and err["errno"] == Errno.FRAME_TOO_LARGE
    assert s.closed_by_server(timeout=5)


def test_oversized_frame_without_terminator_closes_too(sessions):
    s = sessions()
    s.send_raw(b"{" + b" " * 10 + b'"k":"' + b"y" * 66_000)
    assert s.recv()["errno"] == Errno.FRAME_TOO_LARGE
    assert s.closed_by_server(timeout=5)


def test_wrong_types_and_missing_fields_are_errno_4(user, sessions):
    s = sessions()
    for bad in ({"msgid": 3, "name": 5, "password": "p"},
                {"msgid": 3, "password": "p"},
                {"msgid": 3, "name": "n", "password": ""},
                {"msgid": 3, "name": "n", "password": "p" * 129},
                {"msgid": 3, "name": "n" * 51, "password": "p"},
                {"msgid": 1, "id": "7", "password": "p"},
                {"msgid": 1, "id": True, "password": "p"}):
        reply = s.request(bad, bad["msgid"] + 1)
        assert reply["msgid"] == bad["msgid"] + 1 and reply["errno"] == Errno.BAD_REQUEST, bad
        assert reply["errmsg"]
    alice = user()
    for bad in ({"msgid": 5, "to": "1", "msg": "x", "seq": 1},
                {"msgid": 5, "to": 1, "seq": 2},
                {"msgid": 5, "to": 1, "msg": ["x"], "seq": 3},
                {"msgid": 9, "groupid": 1.5, "msg": "x", "seq": 4}):
        reply = alice.request(bad, 0)
        assert reply["msgid"] == MsgId.ERROR_MSG and reply["errno"] == Errno.BAD_REQUEST, bad
        assert reply["ref"] == bad["msgid"]
    for bad in ({"msgid": 6, "friendid": "2"}, {"msgid": 7, "groupname": "g"},
                {"msgid": 8}, {"msgid": 10, "id": "x"}):
        ack = ACKED_REQUESTS[bad["msgid"]]
        reply = alice.request(bad, ack)
        assert reply["msgid"] == ack and reply["errno"] == Errno.BAD_REQUEST, bad


def test_unknown_or_server_side_msgid(sessions):
    s = sessions()
    for msgid in (0, 2, 11, 16, 99, "1", None, True):
        reply = s.request({"msgid": msgid, "seq": str(msgid)}, 0)
        assert reply["errno"] == Errno.BAD_REQUEST and reply["seq"] == str(msgid)
        assert reply["ref"] == (msgid if type(msgid) is int else None)
    assert s.request({"no": "msgid"}, 0)["errno"] == Errno.BAD_REQUEST


def test_requests_before_login_are_errno_3(sessions):
    s = sessions()
    for msgid, ack in ((6, 11), (7, 12), (8, 13), (10, 14)):
        reply = s.request({"msgid": msgid, "seq": msgid}, ack)
        assert reply["msgid"] == ack and reply["errno"] == Errno.NOT_LOGGED_IN, reply
    for msgid in (5, 9):
        reply = s.request({"msgid": msgid, "to": 1, "msg": "x", "seq": msgid}, 0)
        assert reply["msgid"] == MsgId.ERROR_MSG and reply["errno"] == Errno.NOT_LOGGED_IN


def test_check_order_unknown_msgid_before_login_and_login_before_fields(sessions):
    s = sessions()
    assert s.request({"msgid": 42}, 0)["errno"] == Errno.BAD_REQUEST
    assert s.request({"msgid": 6, "friendid": "bad"}, 11)["errno"] == Errno.NOT_LOGGED_IN


def test_identity_spoofing_is_forbidden(user):
    alice, bob = user(), user()
    spoof = {"id": bob.account.id}
    for req, reply_id in (
        ({"msgid": 5, "to": bob.account.id, "msg": "I am bob", "seq": 1}, 15),
        ({"msgid": 6, "friendid": bob.account.id}, 11),
        ({"msgid": 7, "groupname": "spoofed", "groupdesc": ""}, 12),
        ({"msgid": 8, "groupid": 1}, 13),
        ({"msgid": 9, "groupid": 1, "msg": "x", "seq": 2}, 15),
        ({"msgid": 10}, 14),
    ):
        reply = alice.request({**req, **spoof}, reply_id)
        assert reply["errno"] == Errno.FORBIDDEN, req
    assert bob.pushed == []


def test_sender_name_is_filled_by_the_server(user):
    alice, bob = user(), user()
    alice.send({"msgid": 5, "id": alice.account.id, "name": "someone else",
                "to": bob.account.id, "msg": "x"})
    assert bob.expect(MsgId.ONE_CHAT_MSG)["name"] == alice.account.name
    # The usual request, exactly the recipient's fields, is forwarded as it is
    # but for the name; one with more fields is rebuilt without them.
    stamp = "2026-01-02 03:04:05"
    mids = []
    for extra in ({}, {"seq": 7}, {"toid": bob.account.id}, {"mid": 1}):
        alice.send({"msgid": 5, "id": alice.account.id, "name": 12, "to": bob.account.id,
                    "time": stamp, "msg": "y", **extra})
        got = bob.expect(MsgId.ONE_CHAT_MSG)
        mids.append(got.pop("mid"))
        assert got == {
            "msgid": 5, "id": alice.account.id, "name": alice.account.name,
            "to": bob.account.id, "msg": "y", "time": stamp}, extra
    assert mids == sorted(set(mids)) and mids[-1] != 1  # the server's ids, increasing


def test_seq_is_echoed_unchanged_on_every_reply(sessions, account):
    s = sessions()
    acct = account()
    assert s.request({"msgid": 1, "id": acct.id, "password": acct.password,
                      "seq": "login-1"}, 2)["seq"] == "login-1"
    assert s.request({"msgid": 8, "groupid": 10**9, "seq": 12345678901}, 13)["seq"] == 12345678901
