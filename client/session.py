"""A blocking, single-threaded protocol client for tests, scripts and benchmarks.

`ChatSession` owns one socket.  Replies and pushed messages arrive on the same
stream, so `recv()` returns frames in arrival order and `expect()` skips past
(and keeps, in ``self.pushed``) frames that are not the one awaited.  The
interactive client in this package uses a reader thread instead.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import Any

from chat.protocol import Dialect, FrameDecoder, FrameError, Message, MsgId, encode


class SessionClosed(ConnectionError):
    """The server closed the connection."""


class ChatSession:
    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 10.0,
        dialect: Dialect = Dialect.MODERN,
        source: str | None = None,
    ) -> None:
        # ``source``: the local address to connect from (e.g. 127.0.0.2 in tests).
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.dialect = dialect
        self.decoder = FrameDecoder(max_frame=1 << 30)
        self.inbox: deque[Message | FrameError] = deque()
        self.pushed: list[Message] = []
        self.user_id: int | None = None
        self.name: str | None = None

    # -- raw I/O ---------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.sock.sendall(encode(msg, self.dialect))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> Message:
        """The next frame from the server; raises TimeoutError or SessionClosed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no frame from the server in time") from None
            except ConnectionResetError:
                data = b""
            if not data:
                raise SessionClosed("server closed the connection")
            self.inbox.extend(self.decoder.feed(data))
        item = self.inbox.popleft()
        if isinstance(item, FrameError):
            raise AssertionError(f"server sent a bad frame: {item}")
        return item

    def expect(
        self, msgid: int | tuple[int, ...] | None, timeout: float | None = None, **match: Any
    ) -> Message:
        """The next frame with this msgid (any if None) and these field values.

        Frames skipped on the way are kept in ``pushed``, in order.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for i, msg in enumerate(self.pushed):
            if _matches(msg, msgid, match):
                return self.pushed.pop(i)
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if _matches(msg, msgid, match):
                return msg
            self.pushed.append(msg)

    def request(self, msg: Message, reply_id: int, timeout: float | None = None) -> Message:
        """Send ``msg`` and return its reply.

        With a ``seq`` the reply is whatever frame echoes it (an ERROR_MSG too);
        without one, the next frame with ``reply_id`` or an ERROR_MSG.
        """
        self.send(msg)
        if "seq" in msg:
            return self.expect(None, timeout, seq=msg["seq"])
        return self.expect((reply_id, MsgId.ERROR_MSG), timeout)

    def closed_by_server(self, timeout: float | None = None) -> bool:
        """True if the server closes the connection (frames before that are kept)."""
        try:
            while True:
                self.pushed.append(self.recv(timeout))
        except SessionClosed:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- business helpers --------------------------------------------------------

    def register(self, name: str, password: str) -> Message:
        return self.request({"msgid": MsgId.REG_MSG, "name": name, "password": password},
                            MsgId.REG_MSG_ACK)

    def login(self, user_id: int, password: str, ack: bool = False) -> Message:
        """Log in; with ``ack`` ask for acknowledged delivery (PROTOCOL.md)."""
        request: Message = {"msgid": MsgId.LOGIN_MSG, "id": user_id, "password": password}
        if ack:
            request["ack"] = True
        reply = self.request(request, MsgId.LOGIN_MSG_ACK)
        if reply.get("errno") == 0:
            self.user_id, self.name = reply["id"], reply["name"]
        return reply

    def backlog(self, login_ack: Message, timeout: float | None = None) -> list[Message]:
        """Every stored message of a login: the ack's own, then the ``pending`` ones
        that follow as frames of their own (without acknowledging them)."""
        got = list(login_ack.get("offlinemsg", []))
        for _ in range(login_ack.get("pending", 0)):
            got.append(self.expect((MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG), timeout))
        return got

    def acknowledge(self, mid: int) -> None:
        """DELIVERY_ACK: every message up to and including ``mid`` arrived."""
        self.send({"msgid": MsgId.DELIVERY_ACK, "mid": mid})

    def logout(self) -> Message:
        ack = self.request({"msgid": MsgId.LOGINOUT_MSG}, MsgId.LOGINOUT_MSG_ACK)
        self.user_id = None
        return ack

    def add_friend(self, friend_id: int) -> Message:
        return self.request({"msgid": MsgId.ADD_FRIEND_MSG, "friendid": friend_id},
                            MsgId.ADD_FRIEND_MSG_ACK)

    def create_group(self, name: str, desc: str = "") -> Message:
        return self.request(
            {"msgid": MsgId.CREATE_GROUP_MSG, "groupname": name, "groupdesc": desc},
            MsgId.CREATE_GROUP_MSG_ACK,
        )

    def join_group(self, group_id: int) -> Message:
        return self.request({"msgid": MsgId.ADD_GROUP_MSG, "groupid": group_id},
                            MsgId.ADD_GROUP_MSG_ACK)

    def chat(self, to: int, text: str, seq: int | str | None = None) -> Message | None:
        """Send a one-to-one message; with ``seq`` wait for and return its CHAT_MSG_ACK."""
        return self._chat({"msgid": MsgId.ONE_CHAT_MSG, "to": to, "msg": text}, seq)

    def group_chat(self, group_id: int, text: str, seq: int | str | None = None) -> Message | None:
        return self._chat({"msgid": MsgId.GROUP_CHAT_MSG, "groupid": group_id, "msg": text}, seq)

    def _chat(self, msg: Message, seq: int | str | None) -> Message | None:
        if seq is None:
            self.send(msg)
            return None
        msg["seq"] = seq
        return self.request(msg, MsgId.CHAT_MSG_ACK)


def _matches(msg: Message, msgid: int | tuple[int, ...] | None, match: dict[str, Any]) -> bool:
    if isinstance(msgid, int):
        msgid = (msgid,)
    if msgid is not None and msg.get("msgid") not in msgid:
        return False
    return all(msg.get(k) == v for k, v in match.items())
