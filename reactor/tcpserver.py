"""Acceptor and TcpServer: the main reactor accepts, sub reactors serve.

Theory of operation
-------------------
The :class:`Acceptor` binds in its constructor (so a port 0 is resolved at
once and a busy port fails loudly) and, once listening, accepts up to
``_ACCEPTS_PER_WAKEUP`` sockets per readiness event in the server's loop.
When the process runs out of descriptors (EMFILE/ENFILE) it stops watching
the listening socket and re-arms it with a timer, so the loop neither spins
on a permanently readable socket nor loses the backlog.

:class:`TcpServer` hands each accepted socket to the loop its
:class:`~reactor.placement.Placement` picks (round robin) where
``connect_established`` runs. Teardown goes back through the
server's loop as in muduo: the connection's loop calls ``_remove_connection``,
which hops to the server loop to drop it from the map, which then queues
``connect_destroyed`` on the connection's loop to close the socket.

A connection may later move to another loop of the pool: the server's
placement gathers connections that talk to each other (``talks_to``, see
reactor/placement.py).

A second server can listen on another address and serve its connections
in the first one's pool (``share_pool_of``), e.g. a WebSocket port beside
the TCP one: one set of sub-reactor threads and one placement, a connection
of either server may gather with one of the other, and the owner of the pool
alone starts and stops it.
"""

from __future__ import annotations

import errno
import logging
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from functools import partial

from reactor.eventloop import EventLoop, EventLoopThreadPool, TimerId
from reactor.placement import Placement
from reactor.tcpconnection import (
    ConnectionCallback,
    DataCallback,
    MessageCallback,
    TcpConnection,
    WriteCompleteCallback,
    default_connection_callback,
    default_message_callback,
)

__all__ = ["Acceptor", "NewConnectionCallback", "TcpServer", "raise_nofile_limit"]

logger = logging.getLogger(__name__)

NewConnectionCallback = Callable[[socket.socket, tuple[str, int]], None]

_LISTEN_BACKLOG = 1024
_ACCEPTS_PER_WAKEUP = 64
_EMFILE_PAUSE_SECONDS = 0.1
_STOP_WAIT_SECONDS = 1.0  # how long stop() lets the loops destroy their connections
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _destroy(conn: TcpConnection, destroyed: threading.Semaphore) -> None:
    try:
        conn.connect_destroyed()
    finally:
        destroyed.release()


def raise_nofile_limit() -> int:
    """Raise the RLIMIT_NOFILE soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise RLIMIT_NOFILE to %s: %s", target, exc)
    return soft


class Acceptor:
    """The listening socket of a server. Loop thread only, except the constructor."""

    def __init__(self, loop: EventLoop, listen_addr: tuple[str, int], reuse_port: bool) -> None:
        self._loop = loop
        family = socket.AF_INET6 if ":" in listen_addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(listen_addr)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._callback: NewConnectionCallback | None = None
        self._listening = False
        self._watching = False
        self._closed = False
        self._resume_timer: TimerId | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    def set_new_connection_callback(self, cb: NewConnectionCallback) -> None:
        """``cb(sock, peer_address)`` for each accepted socket (a blocking socket)."""
        self._callback = cb

    def listen(self) -> None:
        """Start listening and watching for connections. Loop thread only."""
        self._loop.assert_in_loop_thread()
        if self._listening or self._closed:
            return
        self._sock.listen(_LISTEN_BACKLOG)
        self._listening = True
        self._watch()

    def _watch(self) -> None:
        self._resume_timer = None
        if self._listening and not self._watching:
            self._loop.register(self._sock, selectors.EVENT_READ, self.handle_read)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.unregister(self._sock)
            self._watching = False

    def handle_read(self, _mask: int = selectors.EVENT_READ) -> None:
        """Accept a bounded batch of pending connections. Loop thread only."""
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if not self._on_accept_error(exc):
                    return
                continue
            if self._callback is None:
                conn.close()
            else:
                self._callback(conn, peer)

    def _on_accept_error(self, exc: OSError) -> bool:
        """Handle a failed accept(); return True to keep accepting in this batch."""
        if exc.errno in _OUT_OF_FDS:
            # The backlog stays queued in the kernel; watching the socket now
            # would make select() return at once for ever, so pause instead.
            logger.warning("accept: %s; pausing accepts for %.1fs", exc, _EMFILE_PAUSE_SECONDS)
            self._unwatch()
            self._resume_timer = self._loop.run_after(_EMFILE_PAUSE_SECONDS, self._watch)
            return False
        # ECONNABORTED, EPROTO, EPERM (firewall) concern one peer only.
        logger.info("accept: %s", exc)
        return True

    def close(self) -> None:
        """Stop accepting and close the listening socket. Loop thread only."""
        self._loop.assert_in_loop_thread()
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        if self._resume_timer is not None:
            self._loop.cancel(self._resume_timer)
        self._listening = False
        self._sock.close()


class TcpServer:
    """A multi-reactor TCP server: accepts in ``loop``, serves in a thread pool.

    Methods are for the server loop's thread (or before ``loop.loop()`` in its
    creator thread) unless marked "safe from any thread".
    """

    def __init__(
        self,
        loop: EventLoop,
        listen_addr: tuple[str, int],
        name: str,
        reuse_port: bool = False,
        share_pool_of: TcpServer | None = None,
    ) -> None:
        """``share_pool_of``: serve in that server's pool, which it starts and stops.

        Both servers must accept in the same ``loop``; ``start`` this one after
        the owner, and ``stop`` it before.
        """
        if share_pool_of is not None and share_pool_of.loop is not loop:
            raise ValueError("a server sharing a pool must accept in the owner's loop")
        self._loop = loop
        self.name = name
        self._acceptor = Acceptor(loop, listen_addr, reuse_port)
        self._acceptor.set_new_connection_callback(self._new_connection)
        self._owns_pool = share_pool_of is None
        if share_pool_of is None:
            self._pool = EventLoopThreadPool(loop, name)
            self._placement = Placement(self._pool)
        else:
            self._pool = share_pool_of.thread_pool
            self._placement = share_pool_of._placement
        self._num_threads = 0
        self._take_turns: bool | None = None
        self._moves = True
        self._deferred_writes = True
        self._write_batch: int | None = None  # None: the loops' own (WRITE_BATCH)
        self._connection_cb: ConnectionCallback = default_connection_callback
        self._message_cb: MessageCallback = default_message_callback
        self._data_cb: DataCallback | None = None
        self._write_complete_cb: WriteCompleteCallback | None = None
        self._lock = threading.Lock()  # guards _connections for connections()
        self._connections: dict[str, TcpConnection] = {}
        self._next_conn_id = 1
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound. Safe from any thread."""
        return self._acceptor.address

    @property
    def loop(self) -> EventLoop:
        return self._loop

    @property
    def thread_pool(self) -> EventLoopThreadPool:
        return self._pool

    def set_thread_num(self, n: int) -> None:
        """Number of sub-reactor threads (0: serve in ``loop`` too). Before ``start``."""
        if n < 0:
            raise ValueError("thread count must be >= 0")
        self._num_threads = n

    def set_take_turns(self, on: bool) -> None:
        """Whether the sub-reactor threads take turns (see ``reactor/turn.py``).

        The default is on when the interpreter has a GIL. Before ``start``.
        """
        self._take_turns = on

    def set_moves(self, on: bool) -> None:
        """Whether connections that talk to each other are gathered in one loop
        (``reactor/placement.py``); on by default. Read at each accept."""
        self._moves = on

    def set_deferred_writes(self, on: bool) -> None:
        """Whether a connection writes what a round sent after the round (the
        default) or at each send, as muduo does. Read at each accept."""
        self._deferred_writes = on

    def set_write_batch(self, handlers: int) -> None:
        """Ready handlers between two writes of what they sent (0: the whole
        round), in every loop of the pool (``EventLoop.set_write_batch``).
        Before ``start``."""
        if handlers < 0:
            raise ValueError("write batch must be >= 0")
        self._write_batch = handlers

    def set_connection_callback(self, cb: ConnectionCallback) -> None:
        """``cb(conn)`` on establish and teardown (``conn.connected`` tells). Before ``start``."""
        self._connection_cb = cb

    def set_message_callback(self, cb: MessageCallback) -> None:
        """``cb(conn, buffer, receive_time)`` in the connection's loop. Before ``start``."""
        self._message_cb = cb

    def set_data_callback(self, cb: DataCallback | None) -> None:
        """``cb(conn, data, receive_time)`` with each read's bytes, in place of the
        message callback (``TcpConnection.set_data_callback``). Before ``start``."""
        self._data_cb = cb

    def set_write_complete_callback(self, cb: WriteCompleteCallback | None) -> None:
        """``cb(conn)`` when a connection's output drains. Before ``start``."""
        self._write_complete_cb = cb

    def start(self) -> None:
        """Start the pool and listen. Idempotent. Server loop thread (or before ``loop()``)."""
        if self._started:
            return
        self._started = True
        raise_nofile_limit()
        if self._owns_pool:
            self._pool.start(self._num_threads, self._take_turns)
        if self._write_batch is not None:
            for loop in {self._loop, *self._pool.get_all_loops()}:
                loop.set_write_batch(self._write_batch)
        self._loop.run_in_loop(self._acceptor.listen)

    def stop_accepting(self) -> None:
        """Stop accepting and close the listening socket. Safe from any thread."""
        self._loop.run_in_loop(self._acceptor.close)

    def stop(self) -> None:
        """Stop accepting, destroy every connection and join the pool. Server loop thread.

        Connections are destroyed in their own loops before those loops quit
        (for up to ``_STOP_WAIT_SECONDS`` in all).
        """
        self._loop.assert_in_loop_thread()
        self._acceptor.close()
        with self._lock:
            conns = list(self._connections.values())
            self._connections.clear()
        destroyed = threading.Semaphore(0)
        for conn in conns:
            conn.post(partial(_destroy, conn, destroyed))
        if self._loop not in self._pool.get_all_loops():
            # The loops run until every destroy has: a connection on its way
            # to a loop that had already quit would never arrive, and its
            # socket would be left to the garbage collector.
            deadline = time.monotonic() + _STOP_WAIT_SECONDS
            for _ in conns:
                if not destroyed.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    logger.warning("%s: stopping with connections not yet destroyed", self.name)
                    break
        if self._owns_pool:
            self._pool.stop()

    def connections(self) -> list[TcpConnection]:
        """A snapshot of the live connections. Safe from any thread."""
        with self._lock:
            return list(self._connections.values())

    def _new_connection(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        io_loop = self._placement.loop_for_new()
        serial = self._next_conn_id
        self._next_conn_id += 1
        name = f"{self.name}-{peer[0]}:{peer[1]}#{serial}"
        conn = TcpConnection(io_loop, name, sock, peer, serial)
        conn.set_connection_callback(self._connection_cb)
        conn.set_message_callback(self._message_cb)
        conn.set_data_callback(self._data_cb)
        conn.set_write_complete_callback(self._write_complete_cb)
        conn.set_close_callback(self._remove_connection)
        conn.set_placement(self._placement if self._moves else None)
        if not self._deferred_writes:
            conn.set_deferred_writes(False)
        with self._lock:
            self._connections[name] = conn
        io_loop.run_in_loop(conn.connect_established)

    def _remove_connection(self, conn: TcpConnection) -> None:
        # Runs in conn's loop; the map belongs to the server loop.
        self._loop.run_in_loop(partial(self._remove_connection_in_loop, conn))

    def _remove_connection_in_loop(self, conn: TcpConnection) -> None:
        with self._lock:
            self._connections.pop(conn.name, None)
        self._placement.forget(conn)
        # Queued, not run, so the close handler that got us here unwinds first.
        conn.loop.queue_in_loop(conn.connect_destroyed)
