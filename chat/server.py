"""``python -m chat.server``: the chat server process.

The main thread runs the main reactor (accepting); ``-t N`` sub-reactor
threads own the connections and run the service's handlers.  SIGINT/SIGTERM
stop accepting, mark this process's users offline, flush and close the
connections, and exit within a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from chat import logs, metrics
from chat.bus import Bus, LocalBus
from chat.guards import ConnectionGuard
from chat.limits import Limits, TokenBucket
from chat.monitor import Monitor, Phase
from chat.protocol import FrameDecoder
from chat.proxyproto import ProxyHeaderReader, ProxyProtocolError
from chat.service import ChatService
from chat.session import Session
from chat.store import Store, StoreError, StoreUnavailable, UnknownSchema, open_store
from chat.web.gateway import WebGateway
from reactor import EventLoop, TcpConnection, TcpServer, blocking

log = logging.getLogger("chat.server")

SHUTDOWN_GRACE = 3.0
RETRY_RELEASES_EVERY = 2.0  # seconds between retries of logouts the database missed
RECORD_MIDS_EVERY = 1.0  # seconds between records of the last message id's time


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m chat.server", description=__doc__.split("\n")[0])
    p.add_argument("-H", "--host", default=env("CHAT_HOST", "127.0.0.1"),
                   help="address to listen on (CHAT_HOST, default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=int(env("CHAT_PORT", "6000")),
                   help="port; 0 picks a free one (CHAT_PORT, default 6000)")
    p.add_argument("-t", "--threads", type=int, default=int(env("CHAT_THREADS", "4")),
                   help="sub-reactor threads; 0 runs everything on one loop (CHAT_THREADS)")
    p.add_argument("--db", default=env("CHAT_DB", "sqlite:///chat.db"),
                   help="sqlite:///PATH or mysql://USER:PASS@HOST:PORT/DB (CHAT_DB)")
    p.add_argument("--redis", default=env("CHAT_REDIS") or None,
                   help="redis://HOST:PORT/DB to join a cluster (CHAT_REDIS, default none)")
    p.add_argument("--server-id", default=env("CHAT_SERVER_ID") or None,
                   help="this process's name in the cluster (CHAT_SERVER_ID, default HOST:PORT)")
    p.add_argument("--turns", action=argparse.BooleanOptionalAction,
                   default=_switch(env("CHAT_TURNS", "on")),
                   help="sub-reactor threads take turns, as reactor/turn.py explains "
                        "(CHAT_TURNS=on|off, default on where Python has a GIL)")
    p.add_argument("--moves", action=argparse.BooleanOptionalAction,
                   default=_switch(env("CHAT_MOVES", "on")),
                   help="gather connections that talk to each other in one thread, as "
                        "reactor/placement.py explains (CHAT_MOVES=on|off, default on)")
    p.add_argument("--deferred-writes", action=argparse.BooleanOptionalAction,
                   default=_switch(env("CHAT_DEFERRED_WRITES", "on")),
                   help="write what a batch of handlers sent after the batch (see "
                        "--write-batch), not at each send (CHAT_DEFERRED_WRITES=on|off, "
                        "default on)")
    p.add_argument("--write-batch", type=int, default=int(env("CHAT_WRITE_BATCH", "32")),
                   metavar="N",
                   help="with deferred writes, write what N ready sockets' handlers sent "
                        "before handling more; 0: after the whole loop round "
                        "(CHAT_WRITE_BATCH, default 32)")
    p.add_argument("--proxy-protocol", action=argparse.BooleanOptionalAction,
                   default=env("CHAT_PROXY_PROTOCOL", "off").lower() in ("on", "1", "yes", "true"),
                   help="every connection starts with a PROXY v1/v2 header (nginx's "
                        "proxy_protocol on;); one without is closed (CHAT_PROXY_PROTOCOL)")
    p.add_argument("--ws-port", type=int,
                   default=int(env("CHAT_WS_PORT", "0")) if env("CHAT_WS_PORT") else None,
                   help="also serve the web client and WebSocket chat (/ws) on this port; "
                        "0 picks a free one (CHAT_WS_PORT, default off)")
    p.add_argument("--ws-origins", default=env("CHAT_WS_ORIGINS", ""),
                   help="comma-separated page origins allowed to open a WebSocket, '*' for "
                        "any (CHAT_WS_ORIGINS, default: the page's own origin only)")
    p.add_argument("--log-level", default=env("CHAT_LOG_LEVEL", "INFO"),
                   help="DEBUG, INFO, WARNING... (CHAT_LOG_LEVEL)")
    p.add_argument("--log-format", choices=("text", "json"),
                   default=env("CHAT_LOG_FORMAT", "text"),
                   help="text, or one JSON object per line (CHAT_LOG_FORMAT, default text)")
    p.add_argument("--metrics-port", type=int, default=_int_or_none(env("CHAT_METRICS_PORT")),
                   help="serve /metrics, /healthz and /readyz on this port; 0 picks a free "
                        "one (CHAT_METRICS_PORT, default off)")
    p.add_argument("--metrics-host", default=env("CHAT_METRICS_HOST", "127.0.0.1"),
                   help="address of the metrics port (CHAT_METRICS_HOST, default 127.0.0.1)")
    limits = p.add_argument_group("limits")
    for f in dataclasses.fields(Limits):
        name = f.name.upper()
        default: Any = f.default
        kind = type(default)
        limits.add_argument("--" + f.name.replace("_", "-"), type=kind,
                            default=kind(env(f"CHAT_{name}", default)),
                            help=f"{f.metadata['help']} (CHAT_{name}, default {default})")
    args = p.parse_args(argv)
    if args.log_format not in ("text", "json"):  # argparse checks choices, not defaults
        p.error(f"CHAT_LOG_FORMAT must be text or json, not {args.log_format!r}")
    if args.write_batch < 0:
        p.error(f"--write-batch must be 0 or more, not {args.write_batch}")
    return args


def _switch(value: str) -> bool:
    return value.lower() not in ("off", "0", "no", "false")


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})


def make_bus(url: str | None, server_id: str) -> Bus:
    if not url:
        return LocalBus()
    from chat.redisbus import RedisBus  # needs the redis extra

    bus: Bus = RedisBus(url, server_id, blocking=blocking)
    return bus


class ChatServer:
    """Wires a TcpServer to a ChatService; the entry point's glue and nothing more."""

    def __init__(self, loop: EventLoop, args: argparse.Namespace,
                 monitor: Monitor | None = None) -> None:
        self.loop = loop
        self.monitor = monitor
        self.limits = limits_from(args)
        self.proxy_protocol: bool = args.proxy_protocol
        self.tcp = TcpServer(loop, (args.host, args.port), "chat")
        self.tcp.set_thread_num(args.threads)
        if not args.turns:
            self.tcp.set_take_turns(False)
        self.tcp.set_moves(args.moves)
        self.tcp.set_deferred_writes(args.deferred_writes)
        self.tcp.set_write_batch(args.write_batch)
        self.tcp.set_connection_callback(self.on_connection)
        self.tcp.set_data_callback(self.on_data)
        host, port = self.tcp.address[:2]
        self.server_id = args.server_id or f"{socket.gethostname()}:{args.port or port}"
        store = open_store(args.db, blocking=blocking)
        bus = make_bus(args.redis, self.server_id)
        self.service = ChatService(store, bus, self.server_id, self.limits)
        self.guard = ConnectionGuard(self.tcp, self.service, self.limits)
        self.web: WebGateway | None = None
        if args.ws_port is not None:
            self.web = _web_gateway(self, args)
        self._stopping = False
        if monitor is not None:
            self._watch(monitor, store, bus)

    def _watch(self, monitor: Monitor, store: Store, bus: Bus) -> None:
        """Health checks and the metrics read at scrape time."""
        monitor.add_check("store", lambda: _store_problem(store))
        metrics.USERS_ONLINE.set_function(self.service.online_count)
        metrics.count_connections(self._connection_counts)
        if connected := getattr(bus, "wait_connected", None):  # RedisBus, not LocalBus
            monitor.add_check("redis", lambda: None if connected(0) else "not connected")
            metrics.watch_redis(lambda: connected(0))

    def _connection_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for conn in self.tcp.connections():
            session = conn.context
            if isinstance(session, Session):
                dialect = session.decoder.dialect
                key = ("tcp", dialect.name.lower() if dialect is not None else "unknown")
                counts[key] = counts.get(key, 0) + 1
        return counts

    def start(self) -> None:
        self.service.start()
        self.tcp.start()
        if attach := getattr(self.service.bus, "attach_loop", None):  # RedisBus
            # Chat for other servers leaves once per round of the loop that took it.
            # The first also reads what other servers send to every user here.
            for i, loop in enumerate(self.tcp.thread_pool.get_all_loops()):
                loop.queue_in_loop(partial(attach, loop, home=i == 0))
        self.loop.run_every(self.guard.sweep_interval, self.guard.sweep)
        self.loop.run_every(RETRY_RELEASES_EVERY, self._retry_releases)
        self.loop.run_every(RECORD_MIDS_EVERY, self._record_mids)
        self.loop.run_every(self.limits.log_interval, self.service.warnings.flush)
        host, port = self.tcp.address[:2]
        if self.monitor is not None:
            self.loop.set_round_observer(metrics.loop_observer("main"))
            for i, loop in enumerate(self.tcp.thread_pool.get_all_loops()):
                if loop is not self.loop:
                    loop.set_round_observer(metrics.loop_observer(f"io{i}"))
            self.monitor.phase = Phase.READY
        log.info("listening on %s:%d (server id %s)", host, port, self.server_id)
        if self.web is not None:
            self.web.server.start()
            self.loop.run_every(self.web.sweep_interval, self.web.sweep)
            host, port = self.web.server.address[:2]
            log.info("web client and WebSocket at http://%s:%d/ (ws path /ws)", host, port)

    def new_session(self, post: Callable[[Callable[[], None]], None],
                    peer_host: str = "", expect_proxy: bool = False) -> Session:
        """The state of a new connection: TCP (``expect_proxy`` with
        --proxy-protocol) or WebSocket (its gateway knows the peer)."""
        return Session(
            post=post,
            decoder=FrameDecoder(self.limits.max_frame),
            bucket=TokenBucket(self.limits.rate, self.limits.burst, time.monotonic()),
            peer_host=peer_host,
            proxy_reader=ProxyHeaderReader() if expect_proxy else None,
        )

    def _retry_releases(self) -> None:
        # A database call: not in the accepting loop, but where handlers run.
        self.tcp.thread_pool.next_loop().queue_in_loop(self.service.presence.retry_releases)

    def _record_mids(self) -> None:
        self.tcp.thread_pool.next_loop().queue_in_loop(self.service.record_mids)

    def on_connection(self, conn: TcpConnection) -> None:
        if conn.connected:
            if self.guard.admit(conn):
                conn.context = self.new_session(conn.post, _host(conn.peer_address),
                                                self.proxy_protocol)
        elif isinstance(conn.context, Session):
            self.guard.release()
            self.service.on_disconnect(conn, conn.context)

    def on_data(self, conn: TcpConnection, data: bytes, receive_time: float) -> None:
        session = conn.context
        if not isinstance(session, Session) or session.closing_since is not None:
            return  # refused at admission, or condemned: nothing more is served
        now = session.read_at = time.monotonic()
        if session.proxy_reader is not None:
            data = self._take_proxy_header(conn, session, data)
            if not data:
                return
        # Idle means no complete frame: only a terminator (a frame's end, or
        # an empty line's) refreshes it, never a trickle of a frame's bytes.
        if b"\n" in data or b"\0" in data:
            session.last_seen = now
        self.service.on_data(conn, session, data)

    def _take_proxy_header(self, conn: TcpConnection, session: Session, data: bytes) -> bytes:
        """Connection's loop: the bytes after the PROXY header, once it is complete."""
        assert session.proxy_reader is not None
        try:
            parsed = session.proxy_reader.feed(data)
        except ProxyProtocolError as exc:
            session.closing_since = time.monotonic()
            self.service.warnings.warn(
                "proxy", "{events} more connections without a valid PROXY header closed in "
                "the last {seconds} s", None, 1,
                "%s: %s, closing (--proxy-protocol expects one first)", conn.name, exc)
            conn.force_close()
            return b""
        if parsed is None:
            return b""
        header, rest = parsed
        session.proxy_reader = None
        if header.source is not None:
            session.peer_host = header.source[0]
        return rest

    # -- shutdown --------------------------------------------------------------

    def stop(self) -> None:
        """Main loop thread: stop accepting, log this process's users out, drain, quit."""
        if self._stopping:
            return
        self._stopping = True
        if self.monitor is not None:
            self.monitor.phase = Phase.DRAINING
        log.info("shutting down")
        self.tcp.stop_accepting()
        if self.web is not None:
            self.web.server.stop_accepting()
        self.service.shutdown()
        for conn in self.tcp.connections():
            conn.shutdown()
        if self.web is not None:
            self.web.going_away()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        self.loop.run_every(0.05, lambda: self._quit_when_drained(deadline))

    def _quit_when_drained(self, deadline: float) -> None:
        remaining = self.tcp.connections()
        if self.web is not None:
            remaining += self.web.server.connections()
        if remaining and time.monotonic() < deadline:
            return
        for conn in remaining:
            conn.force_close()
        self.loop.quit()


def _host(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _web_gateway(server: ChatServer, args: argparse.Namespace) -> WebGateway:
    web_server = TcpServer(server.loop, (args.host, args.ws_port), "web",
                           share_pool_of=server.tcp)
    origins = [o.strip() for o in args.ws_origins.split(",")]
    return WebGateway(web_server, server.service, server.limits, server.new_session, origins,
                      server.guard)


def watch_signals(loop: EventLoop, on_stop: Callable[[], None]) -> None:
    """SIGINT/SIGTERM call ``on_stop`` in the loop thread.

    A Python signal handler runs in the main thread between bytecodes, possibly
    while the loop sits in select(); the C-level handler writing the signal
    number to a socket the loop watches is what wakes it (as asyncio does).
    """
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)
    signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)

    def on_wakeup(mask: int) -> None:
        try:
            signums = rsock.recv(64)
        except BlockingIOError:
            return
        if any(n in (signal.SIGINT, signal.SIGTERM) for n in signums):
            on_stop()

    loop.register(rsock, selectors.EVENT_READ, on_wakeup)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore_here)
    _keep_alive.extend((rsock, wsock))


_keep_alive: list[socket.socket] = []


def _ignore_here(signum: int, frame: Any) -> None:
    """The wakeup socket carries the signal to the loop; nothing to do here."""


def _store_problem(store: Store) -> str | None:
    try:
        store.ping()
    except StoreUnavailable as exc:
        return str(exc)
    return None


def start_monitor(args: argparse.Namespace) -> Monitor | None:
    if args.metrics_port is None:
        return None
    monitor = Monitor(args.metrics_host, args.metrics_port)
    monitor.start()
    return monitor


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    loop = EventLoop()
    try:
        monitor = start_monitor(args)  # first, so /readyz says "starting" while we do
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", args.metrics_host, args.metrics_port, exc)
        return 1
    try:
        server = ChatServer(loop, args, monitor)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    except UnknownSchema as exc:  # one line, no traceback: an operator's mistake
        print(f"chat.server: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:  # unreachable, or a migration failed: says which
        print(f"chat.server: cannot open the database: {exc}", file=sys.stderr)
        return 1

    watch_signals(loop, server.stop)
    server.start()
    loop.loop()
    if server.web is not None:
        server.web.server.stop()  # before the pool it shares stops with the TCP server
    server.tcp.stop()
    if monitor is not None:
        monitor.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
