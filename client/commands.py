"""Parsing of the commands typed after login, as a pure function.

The commands are the original C++ client's (``chat:<friendid>:<message>`` and
so on) plus ``quit``.  `parse_command` never raises: a line it cannot make
sense of becomes a `Hint`, a short text telling the user what to type.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AddFriend",
    "AddGroup",
    "Blank",
    "Chat",
    "Command",
    "CreateGroup",
    "GroupChat",
    "HELP_TEXT",
    "Help",
    "Hint",
    "Loginout",
    "Quit",
    "parse_command",
    "parse_id",
]

#: Ids travel as JSON integers; the codec refuses anything beyond 64 bits.
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Blank:
    """An empty line: nothing to do."""


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Chat:
    to: int
    text: str


@dataclass(frozen=True, slots=True)
class AddFriend:
    friend_id: int


@dataclass(frozen=True, slots=True)
class CreateGroup:
    name: str
    desc: str


@dataclass(frozen=True, slots=True)
class AddGroup:
    group_id: int


@dataclass(frozen=True, slots=True)
class GroupChat:
    group_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Loginout:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Hint:
    """The line was not a valid command; ``text`` says how to fix it."""

    text: str


Command = Blank | Help | Chat | AddFriend | CreateGroup | AddGroup | GroupChat | Loginout | Quit

USAGE = {
    "help": "help",
    "chat": "chat:<friendid>:<message>",
    "addfriend": "addfriend:<userid>",
    "creategroup": "creategroup:<groupname>:<groupdesc>",
    "addgroup": "addgroup:<groupid>",
    "groupchat": "groupchat:<groupid>:<message>",
    "loginout": "loginout",
    "quit": "quit",
}

_DESCRIPTIONS = {
    "help": "show all supported commands",
    "chat": "one-to-one chat",
    "addfriend": "add a friend",
    "creategroup": "create a group",
    "addgroup": "join a group",
    "groupchat": "group chat",
    "loginout": "log out (back to the menu)",
    "quit": "log out and exit",
}

HELP_TEXT = "\n".join(
    f"{name:<12} {_DESCRIPTIONS[name]}, format {usage}" for name, usage in USAGE.items()
)


def parse_id(text: str) -> int | None:
    """A positive id that fits the wire format, or None."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def parse_command(line: str) -> Command | Hint:
    """Turn one input line into a command, or a hint when it is not one."""
    line = line.strip()
    if not line:
        return Blank()
    name, sep, rest = line.partition(":")
    name = name.strip().lower()
    if name not in USAGE:
        return Hint(f"unknown command {name!r}; type help for the list")
    if name in ("help", "loginout", "quit"):
        if sep and rest.strip():
            return _usage(name, "takes no arguments")
        return _BARE[name]
    if not sep:
        return _usage(name, "missing arguments")
    return _PARSERS[name](name, rest)


def _usage(name: str, problem: str) -> Hint:
    return Hint(f"{problem}; usage: {USAGE[name]}")


def _id_and_text(name: str, rest: str, what: str) -> tuple[int, str] | Hint:
    id_text, sep, text = rest.partition(":")
    target = parse_id(id_text)
    if target is None:
        return _usage(name, f"{what} must be a positive number")
    if not sep or not text:
        return _usage(name, "the message is empty")
    return target, text


def _chat(name: str, rest: str) -> Command | Hint:
    parsed = _id_and_text(name, rest, "friend id")
    return parsed if isinstance(parsed, Hint) else Chat(*parsed)


def _group_chat(name: str, rest: str) -> Command | Hint:
    parsed = _id_and_text(name, rest, "group id")
    return parsed if isinstance(parsed, Hint) else GroupChat(*parsed)


def _add_friend(name: str, rest: str) -> Command | Hint:
    friend_id = parse_id(rest)
    if friend_id is None:
        return _usage(name, "user id must be a positive number")
    return AddFriend(friend_id)


def _add_group(name: str, rest: str) -> Command | Hint:
    group_id = parse_id(rest)
    if group_id is None:
        return _usage(name, "group id must be a positive number")
    return AddGroup(group_id)


def _create_group(name: str, rest: str) -> Command | Hint:
    group_name, _, desc = rest.partition(":")
    group_name = group_name.strip()
    if not group_name:
        return _usage(name, "the group name is empty")
    return CreateGroup(group_name, desc)


_BARE: dict[str, Command] = {"help": Help(), "loginout": Loginout(), "quit": Quit()}

_PARSERS = {
    "chat": _chat,
    "groupchat": _group_chat,
    "addfriend": _add_friend,
    "addgroup": _add_group,
    "creategroup": _create_group,
}
