"""The client's connection: one reader thread, replies handed over by seq.

Theory of operation.  Two threads share one socket.  The reader thread owns
every receive: it feeds the bytes to the shared `FrameDecoder` and dispatches
each frame.  The main thread sends requests and waits for their replies.

Every request gets a fresh integer ``seq`` and the server echoes it on the
reply (PROTOCOL.md, "Replies").  Before sending, `request()` registers a
`_Pending` slot under that seq; the reader thread finds the slot by the
reply's seq, stores the reply in it and releases the slot's semaphore, which
the main thread acquires with a timeout.  So a reply is never taken by the
wrong waiter, never lost (it is stored before the release) and never waited
for for ever.  Frames that answer nobody (chat pushed by the server, an error
without a known seq) go to the ``on_push`` callback, in the reader thread.

When the server closes the connection the reader thread wakes every waiter
(their `request()` raises `ConnectionLost`) and then calls ``on_lost``,
unless `close()` was called first.

A request whose frame is larger than the server takes (``max_frame``) is not
sent: the server would answer with errno 7 and close the connection, ending
the session for one long message.  Sends come from the main thread and from
the acknowledgements of acknowledged delivery, so they hold a lock: two
frames never interleave on the socket.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from chat.protocol import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, Message, MsgId, encode

__all__ = ["BadRequest", "Connection", "ConnectionLost", "FrameTooLarge", "ReplyTimeout"]

log = logging.getLogger(__name__)

#: Replies may be far larger than requests (a login ack carries every offline
#: message); the bound only stops a broken server from eating all memory.
MAX_REPLY = 256 * 1024 * 1024
RECV_SIZE = 65536


class ConnectionLost(ConnectionError):
    """The server closed the connection (or it broke)."""


class ReplyTimeout(TimeoutError):
    """No reply came in time; a late one will be dropped."""


class BadRequest(ValueError):
    """The request cannot be encoded (e.g. an integer beyond 64 bits)."""


class FrameTooLarge(BadRequest):
    """The request's frame is larger than the server takes; it was not sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, the server takes at most {limit}")
        self.size = size
        self.limit = limit


@dataclass(slots=True)
class _Pending:
    done: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    reply: Message | None = None


class Connection:
    """A connected chat client.  `request()` from one thread at a time."""

    def __init__(
        self,
        sock: socket.socket,
        on_push: Callable[[Message | FrameError], None],
        on_lost: Callable[[], None],
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._sock = sock
        self.max_frame = max_frame
        self._send_lock = threading.Lock()
        self._on_push = on_push
        self._on_lost = on_lost
        self.timeout = timeout
        self._decoder = FrameDecoder(max_frame=MAX_REPLY)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._lost = False
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name="reader", daemon=True)

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        on_push: Callable[[Message | FrameError], None],
        on_lost: Callable[[], None],
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> Connection:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(sock, on_push, on_lost, timeout, max_frame)
        conn.start()
        return conn

    def start(self) -> None:
        self._reader.start()

    @property
    def lost(self) -> bool:
        """True once the server has closed the connection."""
        return self._lost

    # -- main thread -------------------------------------------------------------

    def request(self, msg: Message, timeout: float | None = None) -> Message:
        """Send ``msg`` with a new seq and return the reply that echoes it.

        Raises `ConnectionLost`, `ReplyTimeout` or `BadRequest` (`FrameTooLarge`).
        """
        seq = next(self._seq)
        try:
            frame = encode({**msg, "seq": seq})
        except orjson.JSONEncodeError as exc:
            raise BadRequest(str(exc)) from None
        if len(frame) - 1 > self.max_frame:  # the limit does not count the terminator
            raise FrameTooLarge(len(frame) - 1, self.max_frame)
        pending = _Pending()
        with self._lock:
            if self._lost:
                raise ConnectionLost("connection closed by server")
            self._pending[seq] = pending
        try:
            self._send(frame)
        except OSError as exc:
            self._forget(seq)
            raise ConnectionLost(f"connection closed by server ({exc})") from None
        return self._wait(seq, pending, self.timeout if timeout is None else timeout)

    def acknowledge(self, mid: int) -> None:
        """Send ``DELIVERY_ACK`` for ``mid`` (no reply comes).  Safe from any thread.

        A broken connection is left to the reader thread to report.
        """
        try:
            self._send(encode({"msgid": MsgId.DELIVERY_ACK, "mid": mid}))
        except OSError:
            pass

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(frame)

    def _wait(self, seq: int, pending: _Pending, timeout: float) -> Message:
        if not pending.done.acquire(timeout=timeout) and self._forget(seq):
            raise ReplyTimeout(f"no reply from the server within {timeout:g} s")
        # Either released, or the reader filled the slot just as we timed out:
        # it stores the reply under the lock, so it is there now.
        if pending.reply is None:
            raise ConnectionLost("connection closed by server")
        return pending.reply

    def _forget(self, seq: int) -> bool:
        with self._lock:
            return self._pending.pop(seq, None) is not None

    def close(self) -> None:
        """Close on purpose: the reader thread ends without calling ``on_lost``."""
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=self.timeout)
        self._sock.close()

    # -- reader thread -----------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._sock.recv(RECV_SIZE)
                except OSError:
                    data = b""
                if not data:
                    break
                for item in self._decoder.feed(data):
                    self._dispatch(item)
                if self._decoder.closed:
                    break
        finally:
            self._wake_all()
            if not self._closing:
                self._on_lost()

    def _dispatch(self, item: Message | FrameError) -> None:
        if isinstance(item, dict):
            seq = item.get("seq")
            if type(seq) is int:
                with self._lock:
                    pending = self._pending.pop(seq, None)
                    if pending is not None:
                        pending.reply = item
                        pending.done.release()
                        return
            if seq is not None and item.get("errno", 0) == 0:
                log.debug("dropped a late reply: %r", item)
                return
        self._on_push(item)

    def _wake_all(self) -> None:
        with self._lock:
            self._lost = True
            waiting = list(self._pending.values())
            self._pending.clear()
        for pending in waiting:
            pending.done.release()
