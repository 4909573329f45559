"""The client's output lines, which scripts and tests match."""

from __future__ import annotations

from chat.protocol import Errno, FrameError
from client.render import chat_line, clean, error_line, login_lines, push_line


def test_chat_lines() -> None:
    one = {"msgid": 5, "id": 3, "name": "alice", "to": 4, "msg": "a: b", "time": "T"}
    assert chat_line(one) == "[T] 3 alice: a: b"
    group = {"msgid": 9, "id": 3, "name": "alice", "groupid": 7, "msg": "hi", "time": "T"}
    assert chat_line(group) == "[group 7] [T] 3 alice: hi"
    assert push_line(group) == "[group 7] [T] 3 alice: hi"


def test_control_characters_cannot_break_lines_or_reach_the_terminal() -> None:
    assert clean("a\nb\x1b[2Jc\td") == "a\\nb\\x1b[2Jc d"
    msg = {"msgid": 5, "id": 3, "name": "x\ry", "msg": "two\nlines", "time": "T"}
    assert "\n" not in chat_line(msg) and "\r" not in chat_line(msg)


def test_errors() -> None:
    assert error_line({"msgid": 15, "errno": 5, "errmsg": "user not found"}) == (
        "error 5: user not found"
    )
    assert push_line({"msgid": 15, "errno": 3, "errmsg": "login first"}) == "error 3: login first"
    bad = FrameError(Errno.BAD_REQUEST, "malformed JSON")
    assert push_line(bad) == "error: bad frame from the server: malformed JSON"


def test_login_lines() -> None:
    ack = {
        "msgid": 2, "errno": 0, "id": 3, "name": "alice",
        "friends": [{"id": 4, "name": "bob", "state": "online"}],
        "groups": [{"id": 7, "groupname": "devs", "groupdesc": "team", "users": [
            {"id": 3, "name": "alice", "state": "online", "role": "creator"},
            {"id": 4, "name": "bob", "state": "online", "role": "normal"},
        ]}],
        "offlinemsg": [{"msgid": 5, "id": 4, "name": "bob", "msg": "hi", "time": "T"}],
    }
    assert login_lines(ack) == [
        "login success: id=3 name=alice",
        "friends: 1",
        "  friend 4 bob online",
        "groups: 1",
        "  group 7 devs: team",
        "    member 3 alice online creator",
        "    member 4 bob online normal",
        "offline messages: 1",
        "[T] 4 bob: hi",
    ]


def test_login_lines_survive_a_malformed_ack() -> None:
    lines = login_lines({"msgid": 2, "errno": 0, "id": 1, "name": "a", "friends": "x",
                         "groups": [1, {"users": None}], "offlinemsg": ["legacy text"]})
    assert lines[0] == "login success: id=1 name=a"
    assert "offline messages: 1" in lines and "legacy text" in lines
