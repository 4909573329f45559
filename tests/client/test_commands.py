"""parse_command: every command of the original client, and hints for the rest."""

from __future__ import annotations

import pytest

from client.commands import (
    HELP_TEXT,
    USAGE,
    AddFriend,
    AddGroup,
    Blank,
    Chat,
    CreateGroup,
    GroupChat,
    Help,
    Hint,
    Loginout,
    Quit,
    parse_command,
    parse_id,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("help", Help()),
        ("  help  ", Help()),
        ("HELP", Help()),
        ("loginout", Loginout()),
        ("quit", Quit()),
        ("quit:", Quit()),
        ("", Blank()),
        ("   \t", Blank()),
        ("chat:3:hello", Chat(3, "hello")),
        ("chat:3:hello: world:", Chat(3, "hello: world:")),
        ("chat: 3 :  spaced", Chat(3, "  spaced")),
        ("chat:7:héllo 世界", Chat(7, "héllo 世界")),
        ("addfriend:12", AddFriend(12)),
        ("addfriend: 12 ", AddFriend(12)),
        ("creategroup:devs:the dev team", CreateGroup("devs", "the dev team")),
        ("creategroup:devs:a: b", CreateGroup("devs", "a: b")),
        ("creategroup:devs", CreateGroup("devs", "")),
        ("addgroup:4", AddGroup(4)),
        ("groupchat:4:hi:there", GroupChat(4, "hi:there")),
        (f"addfriend:{2**63 - 1}", AddFriend(2**63 - 1)),
    ],
)
def test_valid_commands(line: str, expected: object) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("hello", "unknown command 'hello'"),
        ("chat", "usage: chat:<friendid>:<message>"),
        ("chat:", "friend id must be a positive number"),
        ("chat:abc:hi", "friend id must be a positive number"),
        ("chat:-1:hi", "friend id must be a positive number"),
        ("chat:0:hi", "friend id must be a positive number"),
        ("chat:3", "the message is empty"),
        ("chat:3:", "the message is empty"),
        ("chat:1.5:x", "friend id must be a positive number"),
        ("chat:٣:x", "friend id must be a positive number"),
        (f"chat:{2**63}:x", "friend id must be a positive number"),
        ("addfriend", "missing arguments"),
        ("addfriend:bob", "user id must be a positive number"),
        ("addgroup:", "group id must be a positive number"),
        ("groupchat:x:hi", "group id must be a positive number"),
        ("groupchat:4", "the message is empty"),
        ("creategroup::desc", "the group name is empty"),
        ("creategroup", "usage: creategroup:<groupname>:<groupdesc>"),
        ("help:me", "takes no arguments"),
        ("loginout:now", "takes no arguments"),
        (":::", "unknown command ''"),
    ],
)
def test_hints(line: str, fragment: str) -> None:
    result = parse_command(line)
    assert isinstance(result, Hint)
    assert fragment in result.text


def test_parse_id() -> None:
    assert parse_id(" 42 ") == 42
    assert parse_id("") is None
    assert parse_id("+4") is None
    assert parse_id("1e3") is None


def test_help_lists_every_command() -> None:
    for usage in USAGE.values():
        assert usage in HELP_TEXT
