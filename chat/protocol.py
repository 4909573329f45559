"""The wire protocol, with no I/O in it (docs/protocol.md is the contract).

A frame is one JSON object followed by a terminator byte: ``\\n`` for this
server and its clients, ``\\0`` for the original C++ client.  Both
terminators are accepted on every connection; the terminator of the first
non-empty frame fixes the dialect of the replies.

`FrameDecoder` is fed raw bytes as they arrive and returns, in order, one item
per complete frame: a decoded message (a ``dict``) or a `FrameError`.  Blank
frames are keep-alives and yield nothing.  A frame longer than ``max_frame``
yields a fatal `FrameError`; the decoder then refuses further input, because
the rest of the stream can no longer be trusted to be in step.

`encode()` turns a message into the bytes of one frame for a dialect.  The
server, the CLI client, the tests and the benchmarks all use this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

import orjson

__all__ = [
    "ACKED_REQUESTS",
    "BadField",
    "DEFAULT_MAX_FRAME",
    "Dialect",
    "Errno",
    "FrameDecoder",
    "FrameError",
    "LEGACY_SUPPRESSED",
    "Message",
    "MsgId",
    "encode",
    "error_reply",
    "opt_int",
    "opt_str",
    "req_int",
    "req_str",
    "to_legacy_login_ack",
]

Message = dict[str, Any]

DEFAULT_MAX_FRAME = 64 * 1024


class MsgId(IntEnum):
    LOGIN_MSG = 1
    LOGIN_MSG_ACK = 2
    REG_MSG = 3
    REG_MSG_ACK = 4
    ONE_CHAT_MSG = 5
    ADD_FRIEND_MSG = 6
    CREATE_GROUP_MSG = 7
    ADD_GROUP_MSG = 8
    GROUP_CHAT_MSG = 9
    LOGINOUT_MSG = 10
    ADD_FRIEND_MSG_ACK = 11
    CREATE_GROUP_MSG_ACK = 12
    ADD_GROUP_MSG_ACK = 13
    LOGINOUT_MSG_ACK = 14
    ERROR_MSG = 15
    CHAT_MSG_ACK = 16
    DELIVERY_ACK = 17
    RECEIPT = 18


class Errno(IntEnum):
    OK = 0
    INVALID = 1
    ALREADY_ONLINE = 2
    NOT_LOGGED_IN = 3
    BAD_REQUEST = 4
    NOT_FOUND = 5
    FORBIDDEN = 6
    FRAME_TOO_LARGE = 7
    CONFLICT = 8
    SERVER_ERROR = 9


#: Request id -> the id of its acknowledgement, for requests that have one.
ACKED_REQUESTS: dict[int, MsgId] = {
    MsgId.LOGIN_MSG: MsgId.LOGIN_MSG_ACK,
    MsgId.REG_MSG: MsgId.REG_MSG_ACK,
    MsgId.ADD_FRIEND_MSG: MsgId.ADD_FRIEND_MSG_ACK,
    MsgId.CREATE_GROUP_MSG: MsgId.CREATE_GROUP_MSG_ACK,
    MsgId.ADD_GROUP_MSG: MsgId.ADD_GROUP_MSG_ACK,
    MsgId.LOGINOUT_MSG: MsgId.LOGINOUT_MSG_ACK,
}

#: Replies the original protocol lacks; legacy connections never get them.
LEGACY_SUPPRESSED = frozenset(
    {
        MsgId.ADD_FRIEND_MSG_ACK,
        MsgId.CREATE_GROUP_MSG_ACK,
        MsgId.ADD_GROUP_MSG_ACK,
        MsgId.LOGINOUT_MSG_ACK,
        MsgId.ERROR_MSG,
        MsgId.CHAT_MSG_ACK,
    }
)


class Dialect(Enum):
    MODERN = b"\n"
    LEGACY = b"\0"


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame the peer got wrong.  ``fatal`` means: reply, then close."""

    errno: Errno
    errmsg: str
    fatal: bool = False


_WHITESPACE = b" \t\r\n"
_MODERN = Dialect.MODERN  # fetching an enum member costs ~150 ns on Python 3.11


class FrameDecoder:
    """Splits a byte stream into messages.  Not thread-safe: one per connection."""

    __slots__ = ("_buf", "_closed", "dialect", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.dialect: Dialect | None = None
        self._buf = bytearray()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after a fatal error: the decoder ignores all further input."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for a terminator."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message | FrameError]:
        if self._closed:
            return []
        if self.dialect is _MODERN and not self._buf:
            if data.find(b"\n") == len(data) - 1 and len(data) <= self.max_frame:
                # One line, the usual read. JSON allows the trailing newline,
                # and a NUL anywhere makes it invalid: nothing to look for first.
                try:
                    msg = orjson.loads(data)
                except orjson.JSONDecodeError:
                    msg = None
                if type(msg) is dict:
                    return [msg]
            if data.endswith(b"\n") and b"\0" not in data:
                return self._feed_whole_lines(data)
        buf = self._buf
        buf += data
        out: list[Message | FrameError] = []
        start = 0
        # Modern clients never send NUL, so one search usually settles it.
        nul = buf.find(b"\0")
        while True:
            nl = buf.find(b"\n", start)
            if 0 <= nul < start:
                nul = buf.find(b"\0", start)
            end = nl if nul < 0 or 0 <= nl < nul else nul
            if end < 0:
                break
            self._frame(buf[start:end], buf[end], out)
            start = end + 1
            if self._closed:
                buf.clear()
                return out
        if start:
            del buf[:start]
        if len(buf) > self.max_frame and self._overlong_pending():
            out.append(self._too_large())
            buf.clear()
        return out

    def _feed_whole_lines(self, data: bytes) -> list[Message | FrameError]:
        # The usual read of a modern client: whole lines and nothing pending.
        # Splitting at once costs half of the general scan (measured); a line
        # that is not a plain object within the limit takes the general path.
        out: list[Message | FrameError] = []
        limit = self.max_frame
        lines = data.split(b"\n")
        lines.pop()
        for raw in lines:
            if len(raw) <= limit:
                try:
                    msg = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    msg = None
                if type(msg) is dict:
                    out.append(msg)
                    continue
            self._frame(raw, ord(b"\n"), out)
            if self._closed:
                break
        return out

    def _frame(
        self, raw: bytes | bytearray, terminator: int, out: list[Message | FrameError]
    ) -> None:
        text = raw.strip(_WHITESPACE)
        if not text:
            return
        if self.dialect is None:
            self.dialect = Dialect.LEGACY if terminator == 0 else Dialect.MODERN
        if len(text) > self.max_frame:
            out.append(self._too_large())
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            out.append(FrameError(Errno.BAD_REQUEST, f"malformed JSON: {exc}"))
            return
        if isinstance(msg, dict):
            out.append(msg)
        else:
            out.append(FrameError(Errno.BAD_REQUEST, "a frame must be one JSON object"))

    def _overlong_pending(self) -> bool:
        # Whitespace may pad a frame; only the text counts towards the limit.
        # A stream of nothing but whitespace is bounded too.
        return (
            len(self._buf.strip(_WHITESPACE)) > self.max_frame
            or len(self._buf) > 2 * self.max_frame + 1024
        )

    def _too_large(self) -> FrameError:
        self._closed = True
        return FrameError(
            Errno.FRAME_TOO_LARGE, f"frame larger than {self.max_frame} bytes", fatal=True
        )


def encode(msg: Message, dialect: Dialect = Dialect.MODERN) -> bytes:
    """The bytes of one frame carrying ``msg``."""
    return orjson.dumps(msg) + dialect.value


def error_reply(errno: Errno, errmsg: str, request: Message | None = None) -> Message:
    """An ``ERROR_MSG`` answering ``request`` (None when the frame was not an object)."""
    ref = request.get("msgid") if request is not None else None
    reply: Message = {
        "msgid": MsgId.ERROR_MSG,
        "errno": errno,
        "errmsg": errmsg,
        "ref": ref if type(ref) is int else None,
    }
    if request is not None and "seq" in request:
        reply["seq"] = request["seq"]
    return reply


def to_legacy_login_ack(msg: Message) -> Message:
    """The original server sent each list element as a JSON string holding the object."""
    legacy = dict(msg)
    for key in ("offlinemsg", "friends"):
        if key in legacy:
            legacy[key] = [_as_json_text(item) for item in legacy[key]]
    if "groups" in legacy:
        groups = []
        for group in legacy["groups"]:
            group = dict(group)
            group["users"] = [_as_json_text(u) for u in group.get("users", [])]
            groups.append(_as_json_text(group))
        legacy["groups"] = groups
    return legacy


def _as_json_text(item: Any) -> str:
    return item if isinstance(item, str) else orjson.dumps(item).decode()


class BadField(ValueError):
    """A request field that is missing or has the wrong type (errno 4)."""


def req_int(msg: Message, key: str) -> int:
    value = msg.get(key)
    # bool is an int subclass, and "7" is not a number: the protocol wants both refused.
    if type(value) is not int:
        raise BadField(f"field {key!r} must be an integer")
    return value


def req_str(msg: Message, key: str, min_len: int = 0, max_len: int | None = None) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise BadField(f"field {key!r} must be a string")
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        limit = f"{min_len}-{max_len}" if max_len is not None else f"at least {min_len}"
        raise BadField(f"field {key!r} must be {limit} characters long")
    return value


def opt_int(msg: Message, key: str) -> int | None:
    return None if msg.get(key) is None else req_int(msg, key)


def opt_str(msg: Message, key: str, max_len: int | None = None) -> str | None:
    return None if msg.get(key) is None else req_str(msg, key, 0, max_len)
