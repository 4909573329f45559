"""A WebSocket that the chat service sees as a connection.

The service writes ``\\n``-terminated JSON frames with ``send`` (from any
thread: handlers, other loops, the bus thread); each frame goes out as one
WebSocket text message.  JSON never holds a raw newline, so splitting on
``\\n`` recovers the frames.  The wsproto state is touched under ``_lock``:
the reader (the connection's loop) and the writers (any thread) share it.
Each message is framed and queued on the TCP connection under that lock, so
frames leave in the order they were framed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from wsproto.connection import Connection as WsProtocol
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, Message, Ping

from reactor import EventLoop, TcpConnection

log = logging.getLogger("chat.web")

GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


class WebSocketConnection:
    """One upgraded TCP connection, speaking the chat protocol in text messages.

    ``send``, ``close``, ``ping``, ``shutdown``, ``force_close`` and ``post``
    are safe from any thread; ``receive`` and ``close_in_loop`` belong to the
    TCP connection's loop.
    """

    def __init__(self, tcp: TcpConnection, ws: WsProtocol) -> None:
        self.tcp = tcp
        self.context: Any = None  # the chat Session, as on a TCP connection
        self._ws = ws
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<WebSocketConnection {self.tcp.name}>"

    @property
    def name(self) -> str:
        return self.tcp.name

    @property
    def peer_address(self) -> Any:
        return self.tcp.peer_address

    # The reactor's placement (TcpConnection.talks_to) sees the TCP connection
    # under the WebSocket when a TCP user talks to this one.
    @property
    def loop(self) -> EventLoop:
        return self.tcp.loop

    @property
    def serial(self) -> int:
        return self.tcp.serial

    def move_to(self, loop: EventLoop) -> None:
        self.tcp.move_to(loop)

    @property
    def open(self) -> bool:
        return self._ws.state is ConnectionState.OPEN

    # -- what the service uses ------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send each ``\\n``-terminated JSON frame in ``data`` as a text message."""
        frames = [frame for frame in data.split(b"\n") if frame]
        with self._lock:
            if self._ws.state is not ConnectionState.OPEN:
                return  # closing: as a closed TCP connection drops what it is sent
            out = bytearray()
            for frame in frames:
                out += self._ws.send(Message(data=frame.decode()))
            self.tcp.send(out)

    def talks_to(self, peer: Any) -> None:
        self.tcp.talks_to(peer.tcp if isinstance(peer, WebSocketConnection) else peer)

    def talks_to_loop(self, loop: Any) -> None:
        self.tcp.talks_to_loop(loop)

    def set_write_complete_callback(self, cb: Callable[[Any], None] | None) -> None:
        if cb is None:
            self.tcp.set_write_complete_callback(None)
        else:
            self.tcp.set_write_complete_callback(lambda _tcp: cb(self))

    def post(self, cb: Callable[[], None]) -> None:
        self.tcp.post(cb)

    def run(self, cb: Callable[[], None]) -> None:
        """``cb()`` now in the connection's own thread, else ``post`` it. Safe from any thread."""
        self.tcp.run(cb)

    def owned_here(self) -> bool:
        return self.tcp.owned_here()

    @property
    def connected(self) -> bool:
        return self.tcp.connected and self.open

    def queued_bytes(self) -> int:
        """Bytes sent and not yet taken by the kernel, WebSocket framing included."""
        return self.tcp.output_buffer.readable_bytes()

    def shutdown(self) -> None:
        """Close the WebSocket normally once what was sent has gone out."""
        self.close(1000)

    def force_close(self) -> None:
        self.tcp.force_close()

    # -- the WebSocket itself ---------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """``close_in_loop`` in the connection's loop. Safe from any thread.

        Not done from here: a ``shutdown`` from another thread marks the TCP
        connection as closing at once, and the loop, finishing a write of
        earlier bytes meanwhile, could half-close it before the Close frame
        queued just before that shutdown reached the output.
        """
        self.tcp.post(partial(self.close_in_loop, code, reason))

    def close_in_loop(self, code: int, reason: str = "") -> None:
        """Send a Close frame (if not sent yet) and half-close once it is written.

        The peer answers with its Close and then closes the socket, which ends
        the connection; one that does not is ended by the sweep. Loop thread only.
        """
        with self._lock:
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                self.tcp.send(self._ws.send(CloseConnection(code=code, reason=reason)))
        self.tcp.shutdown()

    def ping(self) -> None:
        with self._lock:
            if self._ws.state is ConnectionState.OPEN:
                self.tcp.send(self._ws.send(Ping(b"chat")))

    def receive(self, data: bytes) -> list[Event]:
        """Loop thread: feed bytes from the peer; the events they complete.

        Pings are answered here; a Close from the peer is answered too.
        """
        with self._lock:
            if self._ws.state is ConnectionState.CLOSED:
                return []
            self._ws.receive_data(data)
            events = list(self._ws.events())
            for event in events:
                if isinstance(event, Ping) or (
                        isinstance(event, CloseConnection)
                        and self._ws.state is ConnectionState.REMOTE_CLOSING):
                    self.tcp.send(self._ws.send(event.response()))
            state: ConnectionState = self._ws.state  # changed by the events
            closed = state is ConnectionState.CLOSED
        if closed:  # both Close frames are out: the server ends the TCP connection
            self.tcp.shutdown()
        return events
