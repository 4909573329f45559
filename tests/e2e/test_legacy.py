"""The original C++ client's dialect: NUL-terminated frames, strings in lists."""

from __future__ import annotations

import orjson

from chat.protocol import Dialect, MsgId


def legacy(server):
    return server.connect(dialect=Dialect.LEGACY)


def test_legacy_flow_gets_nul_frames_string_lists_and_no_extra_acks(server, user, sessions):
    modern = user()
    s = legacy(server)
    try:
        reg = s.register(f"legacy-{modern.account.name}", "pw")
        assert reg["msgid"] == MsgId.REG_MSG_ACK
        uid = reg["id"]
        modern.chat(uid, "stored for legacy", seq=1)
        gid = modern.create_group(f"lg-{modern.account.name}", "d")["groupid"]
        s.send({"msgid": 6, "id": uid, "friendid": modern.account.id})  # errno 3, unanswered
        s.send({"msgid": 99})
        s.send_raw(b"not json\0")
        s.sock.sendall(b'{"msgid":1,"id":%d,"password":"pw"}\0' % uid)
        ack = s.recv()
        assert ack["msgid"] == MsgId.LOGIN_MSG_ACK and ack["errno"] == 0
        assert all(isinstance(x, str) for x in ack["offlinemsg"] + ack["friends"])
        assert orjson.loads(ack["offlinemsg"][0])["msg"] == "stored for legacy"
        assert ack["friends"] == []
        s.send({"msgid": 6, "id": uid, "friendid": modern.account.id})
        s.send({"msgid": 8, "id": uid, "groupid": gid})
        s.send({"msgid": 7, "id": uid, "groupname": f"lg2-{uid}", "groupdesc": ""})
        s.send({"msgid": 5, "id": uid, "from": "x", "toid": modern.account.id, "msg": "hey",
                "seq": 5})
        got = modern.expect(MsgId.ONE_CHAT_MSG)
        assert got["msg"] == "hey" and got["id"] == uid
        modern.chat(uid, "back at you")
        pushed = s.recv()
        assert pushed["msg"] == "back at you"
        s.send({"msgid": 10, "id": uid})
        s.sock.sendall(b'{"msgid":1,"id":%d,"password":"pw"}\0' % uid)
        relog = s.recv()
        assert relog["msgid"] == MsgId.LOGIN_MSG_ACK
        assert orjson.loads(relog["friends"][0])["id"] == modern.account.id
        assert all(isinstance(g, str) for g in relog["groups"])
        groups = {g["id"]: g for g in map(orjson.loads, relog["groups"])}
        assert gid in groups and len(groups) == 2
        assert [orjson.loads(u)["id"] for u in groups[gid]["users"]] == [modern.account.id, uid]
        assert s.inbox == type(s.inbox)() and s.pushed == []
    finally:
        s.close()


def test_replies_end_in_nul(server):
    s = legacy(server)
    try:
        s.send_raw(b'{"msgid":3,"name":"nulreply-%d","password":"pw"}\0' % id(s))
        data = b""
        while not data.endswith(b"\0"):
            data += s.sock.recv(4096)
        assert data.count(b"\0") == 1 and b"\n" not in data
    finally:
        s.close()


def test_oversized_legacy_frame_closes_without_a_reply(server):
    s = legacy(server)
    try:
        s.send_raw(b'{"msgid":3}\0')
        assert s.recv()["errno"] == 4
        s.send_raw(b'{"msgid":3,"name":"' + b"x" * 70_000 + b'"}\0')
        assert s.closed_by_server(timeout=5)
        assert s.pushed == []
    finally:
        s.close()
