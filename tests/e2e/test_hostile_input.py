"""Input crafted to break the server: one bad frame never harms the frames after it."""

from __future__ import annotations

import orjson

from chat.protocol import Errno, MsgId
from tests.e2e.conftest import unique_name


def frame(msg: dict) -> bytes:
    return orjson.dumps(msg) + b"\n"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_a_deep_seq_is_refused_and_the_next_frame_in_the_same_write_is_served(
        server, user):
    alice, bob = user(), user()
    deep = (b'{"msgid":5,"to":%d,"msg":"x","seq":%s}\n'
            % (bob.account.id, nested(255)))
    alice.send_raw(deep + frame({"msgid": 5, "to": bob.account.id, "msg": "after", "seq": 7}))
    refused = alice.expect(MsgId.ERROR_MSG)
    assert refused["errno"] == Errno.BAD_REQUEST and "seq" not in refused
    assert refused["ref"] == MsgId.ONE_CHAT_MSG
    assert alice.expect(MsgId.CHAT_MSG_ACK)["seq"] == 7
    assert bob.expect(MsgId.ONE_CHAT_MSG)["msg"] == "after"
    assert "Traceback" not in server.log_text()


def test_every_seq_out_of_the_contract_is_errno_4_without_seq(user):
    alice, bob = user(), user()
    bad_seqs = [b"9223372036854775808", b"18446744073709551615", b"-9223372036854775809",
                b'"' + b"s" * 65 + b'"', b"1.5", b"true", b"[1]", b'{"a":1}']
    for seq in bad_seqs:
        alice.send_raw(b'{"msgid":6,"friendid":%d,"seq":%s}\n' % (bob.account.id, seq))
        ack = alice.expect(MsgId.ADD_FRIEND_MSG_ACK)
        assert ack["errno"] == Errno.BAD_REQUEST and "seq" not in ack, seq
    for good in (2**63 - 1, -(2**63), "s" * 64, ""):
        alice.send({"msgid": MsgId.ADD_FRIEND_MSG, "friendid": bob.account.id, "seq": good})
        assert alice.expect(MsgId.ADD_FRIEND_MSG_ACK) == {
            "msgid": MsgId.ADD_FRIEND_MSG_ACK, "errno": 0, "seq": good,
            "friend": {"id": bob.account.id, "name": bob.account.name, "state": "online"}}


OUT_OF_RANGE = [2**63, 2**64 - 1, 0, -1, -(2**63)]


def test_ids_out_of_range_are_unknown_ids_on_every_store(server, sessions, user):
    with sessions() as s:
        for bad in OUT_OF_RANGE:
            ack = s.login(bad, "pw")
            assert ack["errno"] == Errno.INVALID, (bad, ack)
    alice = user()
    for bad in OUT_OF_RANGE:
        assert alice.add_friend(bad)["errno"] == Errno.NOT_FOUND, bad
        assert alice.join_group(bad)["errno"] == Errno.NOT_FOUND, bad
        assert alice.chat(bad, "x", seq=1)["errno"] == Errno.NOT_FOUND, bad
        assert alice.group_chat(bad, "x", seq=2)["errno"] == Errno.NOT_FOUND, bad
    assert "Traceback" not in server.log_text()


def test_look_alike_names_are_refused_or_the_same_name_on_every_store(sessions, db_url):
    tag = unique_name("n")
    s = sessions()
    assert s.register(f"bob{tag}", "pw")["errno"] == 0
    for look_alike, reason in ((f"bob{tag} ", "whitespace"), (f" bob{tag}", "whitespace"),
                               (f"bob{tag}\u00a0", "whitespace"),
                               (f"bo\u00a0b{tag}", "U+00A0"), (f"bo\u200bb{tag}", "U+200B"),
                               (f"\u200fbob{tag}", "U+200F"), (f"bob\u2028{tag}", "U+2028"),
                               (f"bo\tb{tag}", "U+0009"), (f"bob{tag}\u0000", "U+0000")):
        ack = s.register(look_alike, "pw")
        assert ack["errno"] == Errno.INVALID and reason in ack["errmsg"], (look_alike, ack)
    decomposed = s.register(f"e\u0301{tag}", "pw")  # "é" as e + combining acute
    assert decomposed["errno"] == 0
    composed = s.register(f"\u00e9{tag}", "pw")
    assert composed["errno"] == Errno.INVALID and "taken" in composed["errmsg"]
    assert s.login(decomposed["id"], "pw")["name"] == f"\u00e9{tag}"
    assert s.register(f"Bob{tag}", "pw")["errno"] == 0  # case-sensitive on both stores
    assert s.register(f"bob {tag}", "pw")["errno"] == 0  # an inner plain space is fine
