"""Many logged-in users on one selector: the client side of every high-rate driver.

A `UserPool` opens ``n`` non-blocking connections to one server, registers
and logs them all in with pipelined requests (every connection sends its
request at once; replies are collected as they come), and then leaves the
selector and the connections to the benchmark's own loop.  Frames are
decoded with the project's `FrameDecoder`; `UserConn.send` writes at once
and buffers (with EVENT_WRITE) only what the kernel did not take.

One pool per process and no threads: a driver scales out with processes
(see `driver.workers`).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable

from chat.protocol import FrameDecoder, FrameError, Message, MsgId, encode

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class DriverError(RuntimeError):
    """The server under test misbehaved (refused, closed, or was too slow)."""


class UserConn:
    """One connection and the user logged in on it."""

    __slots__ = ("decoder", "index", "name", "out", "password", "peer", "sel", "sock",
                 "user_id")

    def __init__(self, sel: selectors.BaseSelector, sock: socket.socket, index: int,
                 name: str, password: str) -> None:
        self.sel = sel
        self.sock = sock
        self.index = index
        self.name = name
        self.password = password
        self.user_id = 0
        self.peer: UserConn | None = None
        self.decoder = FrameDecoder(max_frame=1 << 30)
        self.out = bytearray()

    def send(self, data: bytes) -> None:
        """Write now; queue what the kernel did not take and watch for writability."""
        if self.out:
            self.out += data
            return
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        if n < len(data):
            self.out += data[n:]
            self.sel.modify(self.sock, _READ | _WRITE, self)

    def flush(self) -> None:
        """EVENT_WRITE: send what is queued; stop watching once drained."""
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        del self.out[:n]
        if not self.out:
            self.sel.modify(self.sock, _READ, self)

    def receive(self) -> list[Message | FrameError]:
        """Read once and decode; raises DriverError if the server closed."""
        try:
            # Under glibc's mmap threshold: a larger read buffer costs an mmap
            # and munmap per read until the threshold happens to rise, which
            # made the driver's speed depend on what it had freed before.
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionError:
            data = b""
        if not data:
            raise DriverError(f"server closed the connection of {self.name}")
        return self.decoder.feed(data)


class UserPool:
    """``n`` connections on one selector, registered and logged in by `setup`.

    Pass ``sel`` to put the connections on another pool's selector (one loop over
    both); `close` then leaves that selector open for its owner to close.  With
    ``acking`` the users log in with acknowledged delivery (``"ack": true``).
    """

    def __init__(self, host: str, port: int, n: int, name_prefix: str,
                 password: str = "pw", sel: selectors.BaseSelector | None = None,
                 acking: bool = False) -> None:
        self.host = host
        self.acking = acking
        self.port = port
        self._own_sel = sel is None
        self.sel = selectors.DefaultSelector() if sel is None else sel
        self.conns: list[UserConn] = []
        self._n = n
        self._prefix = name_prefix
        self._password = password

    def setup(self, timeout: float = 60.0) -> None:
        self.connect()
        acks = self.request_all(
            lambda c: encode({"msgid": MsgId.REG_MSG, "name": c.name, "password": c.password}),
            MsgId.REG_MSG_ACK, timeout)
        for c, ack in zip(self.conns, acks, strict=True):
            c.user_id = ack["id"]
        login = {"msgid": MsgId.LOGIN_MSG, "ack": True} if self.acking else {
            "msgid": MsgId.LOGIN_MSG}
        self.request_all(
            lambda c: encode({**login, "id": c.user_id, "password": c.password}),
            MsgId.LOGIN_MSG_ACK, timeout)

    def connect(self) -> None:
        for i in range(self._n):
            sock = socket.create_connection((self.host, self.port), timeout=10.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = UserConn(self.sel, sock, i, f"{self._prefix}{i}", self._password)
            self.sel.register(sock, _READ, conn)
            self.conns.append(conn)

    def request_all(self, make: Callable[[UserConn], bytes], reply: int,
                    timeout: float = 60.0) -> list[Message]:
        """Send ``make(conn)`` on every connection; return each one's ``reply`` (errno 0)."""
        for conn in self.conns:
            conn.send(make(conn))
        got: dict[int, Message] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.conns):
            if time.monotonic() > deadline:
                raise DriverError(f"{len(self.conns) - len(got)} replies (msgid {reply}) missing")
            for c in readable(self.sel, 1.0):
                for item in c.receive():
                    if isinstance(item, FrameError) or item.get("msgid") != reply:
                        raise DriverError(f"{c.name}: unexpected {item!r}")
                    if item.get("errno") != 0:
                        raise DriverError(f"{c.name}: refused {item!r}")
                    got[c.index] = item
        return [got[i] for i in range(len(self.conns))]

    def close(self) -> None:
        for c in self.conns:
            self.sel.unregister(c.sock)
            c.sock.close()
        self.conns.clear()
        if self._own_sel:
            self.sel.close()


def readable(sel: selectors.BaseSelector, timeout: float) -> list[UserConn]:
    """One select: flush the writable connections' queues; return the readable ones."""
    out = []
    for key, mask in sel.select(timeout):
        c: UserConn = key.data
        if mask & _WRITE:
            c.flush()
        if mask & _READ:
            out.append(c)
    return out


def pair_up(conns: list[UserConn]) -> None:
    """Make users 0 and 1, 2 and 3, ... each other's ``peer``."""
    for a, b in zip(conns[0::2], conns[1::2], strict=True):
        a.peer, b.peer = b, a
