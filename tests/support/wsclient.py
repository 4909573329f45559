"""A blocking WebSocket client for tests, driven by wsproto over a plain socket."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.support.server import ServerProcess

WEB_LINE = r"WebSocket at http://[\d.]+:(\d+)/"


def web_port(server: ServerProcess) -> int:
    """The port the server's web gateway listens on (``--ws-port 0``)."""
    import re

    line = server.wait_for_log(WEB_LINE)
    match = re.search(WEB_LINE, line)
    assert match is not None
    return int(match.group(1))


class Rejected(ConnectionError):
    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status


class WsClient:
    """One WebSocket to the chat server; ``recv_json`` skips pings (wsproto answers)."""

    def __init__(self, port: int, origin: str | None = None, timeout: float = 10.0,
                 auto_pong: bool = True, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.timeout = timeout
        self.auto_pong = auto_pong
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.pings = 0
        self.closed: CloseConnection | None = None
        host = f"127.0.0.1:{port}"
        scheme = "https" if tls is not None else "http"
        headers = [(b"Origin", (origin or f"{scheme}://{host}").encode())]
        self.sock.sendall(self.ws.send(Request(host=host, target="/ws", extra_headers=headers)))
        while True:
            event = self._next_event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                self.sock.close()
                raise Rejected(event.status_code)

    def _next_event(self, timeout: float | None = None) -> Event:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.events:
            self.events.extend(self.ws.events())
            if self.events:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("nothing from the server in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
        return self.events.pop(0)

    def send_json(self, msg: dict[str, Any]) -> None:
        self.send_text(orjson.dumps(msg).decode())

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(Message(data=data)))

    def recv_event(self, timeout: float | None = None) -> Event:
        """The next event that is not a reject body; pings are answered if ``auto_pong``."""
        while True:
            event = self._next_event(timeout)
            if isinstance(event, RejectData):
                continue
            if isinstance(event, Ping):
                self.pings += 1
                if self.auto_pong:
                    self.sock.sendall(self.ws.send(event.response()))
            if isinstance(event, CloseConnection):
                self.closed = event
            return event

    def recv_json(self, timeout: float | None = None) -> dict[str, Any]:
        text = ""
        while True:
            event = self.recv_event(timeout)
            if isinstance(event, CloseConnection):
                raise ConnectionError(f"closed with {event.code} {event.reason}")
            if isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    msg: dict[str, Any] = orjson.loads(text)
                    return msg

    def expect(self, msgid: int, timeout: float | None = None) -> dict[str, Any]:
        while True:
            msg = self.recv_json(timeout)
            if msg.get("msgid") == msgid:
                return msg

    def wait_closed(self, timeout: float | None = None) -> CloseConnection:
        """Read until the server's Close frame; returns it."""
        while self.closed is None:
            self.recv_event(timeout)
        assert self.closed is not None
        return self.closed

    def close(self) -> None:
        self.sock.close()
