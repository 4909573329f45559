"""HTTP and WebSocket on the reactor: the web client's files and chat over ``/ws``.

Theory of operation
-------------------
Each TCP connection of the web port starts as HTTP/1.1, parsed by h11 (no
I/O of its own: the reactor reads, h11 turns bytes into events).  ``GET /``
and the client's other files are answered from memory, keep-alive allowed.
``GET /ws`` with a valid WebSocket handshake from an allowed ``Origin`` is
answered with ``101`` and the connection changes hands: from then on wsproto
turns its bytes into WebSocket events, and each complete text message is one
chat frame for the same ``ChatService`` as on the TCP port, with a
``WebSocketConnection`` standing in for the connection.  Everything a
connection does runs in its own loop thread; the sweep (a timer of the main
loop) only reads times and asks connections to ping or close, which is safe
from any thread.

Differences from the TCP port, both because a WebSocket has its own way: a
message over ``--max-frame`` closes with 1009 (not errno 7), and an idle
socket is pinged (browsers answer by themselves) before it counts as idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Protocol, cast
from urllib.parse import urlsplit

import h11
import orjson
from wsproto.connection import Connection as WsProtocol
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.utilities import generate_accept_token

from chat.limits import Limits
from chat.protocol import Errno, error_reply
from chat.service import ChatService
from chat.session import Session
from chat.web.wsconn import (
    GOING_AWAY,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    UNSUPPORTED_DATA,
    WebSocketConnection,
)
from reactor import TcpConnection, TcpServer

log = logging.getLogger("chat.web")

CLOSE_GRACE = 5.0  # seconds a closing WebSocket gets to answer our Close
WS_PATH = "/ws"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
          ".json": "application/json", ".ico": "image/x-icon"}
# The page may talk to its own origin only, over HTTP(S) and WebSocket.
_CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "frame-ancestors 'none'")

SessionFactory = Callable[[Callable[[Callable[[], None]], None]], Session]


@dataclass(slots=True)
class _Peer:
    """``context`` of a TCP connection of the web port."""

    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.SERVER))
    request: h11.Request | None = None
    ws: WebSocketConnection | None = None
    session: Session | None = None
    parts: list[bytes] = field(default_factory=list)  # of a text message in pieces
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    closing_since: float | None = None


class Slots(Protocol):
    """The process's count of connections (chat.guards.ConnectionGuard)."""

    def take_slot(self) -> bool: ...

    def release(self) -> None: ...


_FULL_BODY = b"server is full, try again later\n"
FULL_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_FULL_BODY)
                 + _FULL_BODY)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The web client's files, by URL path (``/`` is ``index.html``)."""
    folder = resources.files("chat.web") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in _TYPES:
            files["/" + item.name] = (item.read_bytes(), _TYPES[suffix])
    files["/"] = files["/index.html"]
    return files


class WebGateway:
    """The connection and message callbacks of the web port's ``TcpServer``."""

    def __init__(self, server: TcpServer, service: ChatService, limits: Limits,
                 new_session: SessionFactory, origins: Iterable[str] = (),
                 slots: Slots | None = None) -> None:
        self.server = server
        self.slots = slots  # the process's connection count, shared with the TCP port
        self.service = service
        self.limits = limits
        self._new_session = new_session
        self.origins = {origin.rstrip("/") for origin in origins if origin}
        self.files = load_static()
        self.ping_after = max(limits.idle_timeout / 3, 0.05)
        server.set_connection_callback(self.on_connection)
        server.set_data_callback(self.on_data)

    @property
    def sweep_interval(self) -> float:
        return min(max(min(self.limits.login_timeout, self.ping_after) / 4, 0.05), 5.0)

    # -- reactor callbacks (the connection's loop) -------------------------------

    def on_connection(self, tcp: TcpConnection) -> None:
        if tcp.connected:
            if self.slots is not None and not self.slots.take_slot():
                log.warning("%s refused: %d connections already", tcp.name,
                            self.limits.max_connections)
                tcp.send(FULL_RESPONSE)
                tcp.shutdown()
                return
            tcp.context = _Peer()
            return
        peer = tcp.context
        if not isinstance(peer, _Peer):
            return  # refused: it held no slot
        if self.slots is not None:
            self.slots.release()
        if peer.ws is not None and peer.session is not None:
            self.service.on_disconnect(peer.ws, peer.session)

    def on_data(self, tcp: TcpConnection, data: bytes, receive_time: float) -> None:
        peer = tcp.context
        if not isinstance(peer, _Peer):
            return
        peer.last_seen = time.monotonic()
        if peer.ws is None:
            self._on_http(tcp, peer, data)
        else:
            self._on_websocket(peer, peer.ws, data)

    # -- HTTP ---------------------------------------------------------------------

    def _on_http(self, tcp: TcpConnection, peer: _Peer, data: bytes) -> None:
        http = peer.http
        try:
            http.receive_data(data)
            while peer.ws is None and tcp.connected:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Request):
                    peer.request = event
                elif isinstance(event, h11.EndOfMessage) and peer.request is not None:
                    self._answer(tcp, peer, peer.request)
                elif event is h11.PAUSED and http.our_state is h11.DONE:
                    http.start_next_cycle()  # keep-alive: the next request
                elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    tcp.shutdown()
                    return
        except h11.RemoteProtocolError as exc:
            log.info("%s: bad HTTP request: %s", tcp.name, exc)
            self._respond(tcp, peer, exc.error_status_hint, b"bad request\n", close=True)

    def _answer(self, tcp: TcpConnection, peer: _Peer, request: h11.Request) -> None:
        peer.request = None
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if path == WS_PATH:
            self._upgrade(tcp, peer, request)
        elif request.method not in (b"GET", b"HEAD"):
            self._respond(tcp, peer, 405, b"method not allowed\n", [("Allow", "GET, HEAD")])
        elif path not in self.files:
            self._respond(tcp, peer, 404, b"not found\n")
        else:
            body, kind = self.files[path]
            self._respond(tcp, peer, 200, body, [("Content-Type", kind)],
                          head=request.method == b"HEAD")

    def _respond(self, tcp: TcpConnection, peer: _Peer, status: int, body: bytes,
                 headers: list[tuple[str, str]] | None = None, head: bool = False,
                 close: bool = False) -> None:
        http = peer.http
        if http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            tcp.force_close()  # h11 cannot answer any more: nothing useful to say
            return
        all_headers = [("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
                       ("X-Content-Type-Options", "nosniff"),
                       ("Content-Security-Policy", _CSP), *(headers or [])]
        if not any(name == "Content-Type" for name, _ in all_headers):
            all_headers.append(("Content-Type", "text/plain; charset=utf-8"))
        if close:
            all_headers.append(("Connection", "close"))
        out = http.send(h11.Response(status_code=status, headers=all_headers)) or b""
        if not head:
            out += http.send(h11.Data(data=body)) or b""
        out += http.send(h11.EndOfMessage()) or b""
        tcp.send(out)
        if close or cast(object, http.our_state) is h11.MUST_CLOSE:
            tcp.shutdown()

    # -- the upgrade ----------------------------------------------------------------

    def _upgrade(self, tcp: TcpConnection, peer: _Peer, request: h11.Request) -> None:
        headers = {name.decode().lower(): value.decode("latin-1")
                   for name, value in request.headers}
        key = headers.get("sec-websocket-key", "")
        if (request.method != b"GET"
                or headers.get("upgrade", "").lower() != "websocket"
                or "upgrade" not in headers.get("connection", "").lower()
                or headers.get("sec-websocket-version") != "13" or not key):
            self._respond(tcp, peer, 400, b"a WebSocket handshake is expected here\n",
                          [("Sec-WebSocket-Version", "13")], close=True)
            return
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, headers.get("host", "")):
            log.info("%s: WebSocket from origin %r refused", tcp.name, origin)
            self._respond(tcp, peer, 403, b"origin not allowed\n", close=True)
            return
        out = peer.http.send(h11.InformationalResponse(status_code=101, headers=[
            (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(key.encode()))]))
        tcp.send(out or b"")
        trailing, _closed = peer.http.trailing_data
        ws = WebSocketConnection(tcp, WsProtocol(ConnectionType.SERVER))
        ws.context = peer.session = self._new_session(tcp.post)
        peer.ws = ws
        if trailing:
            self._on_websocket(peer, ws, bytes(trailing))

    def origin_allowed(self, origin: str, host: str) -> bool:
        """``--ws-origins`` if given ("*" for any), else the page's own origin only."""
        if self.origins:
            return "*" in self.origins or origin.rstrip("/") in self.origins
        return urlsplit(origin).netloc.lower() == host.lower()

    # -- WebSocket --------------------------------------------------------------------

    def _on_websocket(self, peer: _Peer, ws: WebSocketConnection, data: bytes) -> None:
        session = peer.session
        assert session is not None
        session.last_seen = peer.last_seen
        for event in ws.receive(data):
            if not ws.open:
                break  # closing: what else the peer sent is not served
            if isinstance(event, TextMessage):
                self._on_text(peer, ws, session, event)
            elif isinstance(event, BytesMessage):
                self._close(peer, ws, UNSUPPORTED_DATA, "text messages only", in_loop=True)
            elif isinstance(event, CloseConnection):
                # A frame wsproto could not parse (1002, 1007): say why, close.
                self._close(peer, ws, event.code, event.reason or "", in_loop=True)

    def _on_text(self, peer: _Peer, ws: WebSocketConnection, session: Session,
                 event: TextMessage) -> None:
        chunk = event.data.encode()
        peer.size += len(chunk)
        if peer.size > self.limits.max_frame:
            log.info("%s: message over %d bytes, closing", ws.name, self.limits.max_frame)
            self._close(peer, ws, MESSAGE_TOO_BIG, f"messages are at most "
                        f"{self.limits.max_frame} bytes", in_loop=True)
            return
        peer.parts.append(chunk)
        if not event.message_finished:
            return
        text = b"".join(peer.parts)
        peer.parts.clear()
        peer.size = 0
        # A raw newline or NUL can only be whitespace or an error in JSON; as
        # either, a space keeps the message one frame of the modern dialect.
        text = text.replace(b"\n", b" ").replace(b"\0", b" ")
        self.service.on_data(ws, session, text + b"\n")

    def _close(self, peer: _Peer, ws: WebSocketConnection, code: int, reason: str,
               in_loop: bool = False) -> None:
        if peer.closing_since is None:
            peer.closing_since = time.monotonic()
        if in_loop:
            ws.close_in_loop(code, reason)
        else:
            ws.close(code, reason)

    # -- timers and shutdown (main loop) ---------------------------------------------------

    def sweep(self) -> None:
        """Ping idle WebSockets, close dead ones and HTTP connections that linger."""
        now = time.monotonic()
        for tcp in self.server.connections():
            peer = tcp.context
            if not isinstance(peer, _Peer):
                continue
            ws, session = peer.ws, peer.session
            if peer.closing_since is not None:
                if now - peer.closing_since > CLOSE_GRACE:
                    tcp.force_close()
            elif ws is None or session is None:
                if now - peer.last_seen > self.limits.login_timeout:
                    tcp.force_close()
            elif session.user_id is None and now - peer.opened > self.limits.login_timeout:
                self._warn_and_close(peer, ws, Errno.NOT_LOGGED_IN, "log in within "
                                     f"{self.limits.login_timeout:g} seconds of connecting")
            elif now - peer.last_seen > self.limits.idle_timeout:
                log.info("%s idle for %gs, closing", ws.name, self.limits.idle_timeout)
                self._warn_and_close(peer, ws, Errno.BAD_REQUEST, "idle for too long")
            elif now - peer.last_seen > self.ping_after:
                ws.ping()  # a live browser answers, which keeps it from idling

    def _warn_and_close(self, peer: _Peer, ws: WebSocketConnection, errno: Errno,
                        errmsg: str) -> None:
        ws.send(orjson.dumps(error_reply(errno, errmsg)) + b"\n")
        self._close(peer, ws, POLICY_VIOLATION, errmsg)

    def going_away(self) -> None:
        """The server stops: every WebSocket is closed with 1001, HTTP after its reply."""
        for tcp in self.server.connections():
            peer = tcp.context
            if isinstance(peer, _Peer) and peer.ws is not None:
                self._close(peer, peer.ws, GOING_AWAY, "server shutting down")
            else:
                tcp.shutdown()
