"""How the client shows what the server sends: pure functions, one line each.

Every line is stable so that scripts and tests can match it.  Text that comes
from other users is cleaned of control characters, so a message can neither
break the line-oriented output nor send escape sequences to the terminal.
"""

from __future__ import annotations

from typing import Any

from chat.protocol import FrameError, Message, MsgId

__all__ = [
    "chat_ack_line",
    "chat_line",
    "clean",
    "error_line",
    "login_lines",
    "push_line",
    "receipt_line",
    "too_large_line",
]

SNIPPET = 40

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x09: " ", 0x0A: "\\n", 0x0D: "\\r"})


def clean(value: Any) -> str:
    """``value`` as text with control characters escaped."""
    return str(value).translate(_CONTROL)


def _get(obj: Any, key: str) -> str:
    return clean(obj.get(key, "?")) if isinstance(obj, dict) else "?"


def _list(obj: Message, key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def chat_line(msg: Message) -> str:
    """``[time] id name: text``, prefixed by ``[group G] `` for group chat.

    A message the server kept while the user was offline (``"stored": true``,
    acknowledged delivery) is prefixed by ``[offline] ``.
    """
    line = f"[{_get(msg, 'time')}] {_get(msg, 'id')} {_get(msg, 'name')}: {_get(msg, 'msg')}"
    if msg.get("msgid") == MsgId.GROUP_CHAT_MSG:
        line = f"[group {_get(msg, 'groupid')}] {line}"
    if msg.get("stored") is True:
        line = f"[offline] {line}"
    return line


def chat_ack_line(ack: Message, target: str) -> str:
    """The sender's line for a CHAT_MSG_ACK: ``✓`` and what became of the message.

    A group's ack says how many members had it live and how many get it at
    their next login, when the server tells (``live``, ``stored``).
    """
    live, stored = ack.get("live"), ack.get("stored")
    if type(live) is int and type(stored) is int:
        outcome = f"{live} live, {stored} at next login"
    else:
        outcome = clean(ack.get("state", "delivered"))
    return f"sent to {target}: ✓ {outcome}"


def receipt_line(receipt: Message, sent: tuple[int, str] | None) -> str:
    """``✓✓``: the recipient has the message ``sent`` (recipient, text), if known."""
    if sent is None:
        return f"✓✓ {_get(receipt, 'to')} received message #{_get(receipt, 'mid')}"
    to, text = sent
    if len(text) > SNIPPET:
        text = text[: SNIPPET - 1] + "…"
    return f"✓✓ {to} received: {clean(text)}"


def too_large_line(size: int, limit: int) -> str:
    return f"not sent: {size:,} bytes, the server takes at most {limit:,}"


def error_line(msg: Message) -> str:
    return f"error {_get(msg, 'errno')}: {_get(msg, 'errmsg')}"


def push_line(item: Message | FrameError) -> str:
    """A frame that answers no request: pushed chat, or an error."""
    if isinstance(item, FrameError):
        return f"error: bad frame from the server: {clean(item.errmsg)}"
    if item.get("msgid") in (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG):
        return chat_line(item)
    if item.get("errno", 0) != 0:
        return error_line(item)
    return f"unexpected message from the server: {clean(item)}"


def login_lines(ack: Message) -> list[str]:
    """The user, friends, groups with members, then the offline messages."""
    lines = [f"login success: id={_get(ack, 'id')} name={_get(ack, 'name')}"]
    friends = _list(ack, "friends")
    lines.append(f"friends: {len(friends)}")
    lines += [f"  friend {_get(f, 'id')} {_get(f, 'name')} {_get(f, 'state')}" for f in friends]
    groups = _list(ack, "groups")
    lines.append(f"groups: {len(groups)}")
    for group in groups:
        lines.append(
            f"  group {_get(group, 'id')} {_get(group, 'groupname')}: {_get(group, 'groupdesc')}"
        )
        users = _list(group, "users") if isinstance(group, dict) else []
        lines += [
            f"    member {_get(u, 'id')} {_get(u, 'name')} {_get(u, 'state')} {_get(u, 'role')}"
            for u in users
        ]
    offline = _list(ack, "offlinemsg")
    # The rest of a long (or acknowledged) backlog follows the ack as frames.
    pending = ack.get("pending")
    following = pending if type(pending) is int and pending > 0 else 0
    lines.append(f"offline messages: {len(offline) + following}")
    lines += [chat_line(m) if isinstance(m, dict) else clean(m) for m in offline]
    return lines
