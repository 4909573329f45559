"""Guards of one server process against clients that take without giving.

`ConnectionGuard` belongs to the entry point, which knows the reactor:

* ``admit`` refuses connections over ``max_connections`` with an error
  frame, so existing users keep working when a flood of connects arrives;
* ``sweep`` (a timer of the main loop) ends connections that did not log
  in within ``login_timeout`` or sent nothing, not even a keep-alive, for
  ``idle_timeout``; the disconnect marks their users offline;
* a client that stops reading while messages pile up for it is dropped:
  over ``high_water_mark`` queued bytes it is watched, and if it is still
  over the mark ``slow_grace`` seconds later (a big login ack read at any
  sane speed drains long before) or ever reaches ``max_backlog`` bytes, it
  is dropped.  Its chat messages are not lost with the bytes: the login's
  outbox (chat/outbox.py) stores whatever it had not seen confirmed, and
  it never queues much (what does not fit waits in storage), so this
  mostly catches a client that stops reading a large reply.

Theory of the sweep: every read that completes a frame (a keep-alive
included) refreshes ``session.last_seen`` in the connection's loop (one float
store per read); bytes of a frame never finished do not, so a trickle of
them cannot dodge ``idle_timeout``.  The sweep reads those floats
from the main loop without a lock, since a slightly stale float only delays
a close by one sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial

import orjson

from chat import metrics
from chat.limits import Limits
from chat.protocol import Errno, error_reply
from chat.service import ChatService
from chat.session import Session
from reactor import TcpConnection, TcpServer

log = logging.getLogger("chat.guards")

CLOSE_GRACE = 5.0  # seconds a warned connection gets to read its error and close


@dataclass(frozen=True, slots=True)
class Refused:
    """``conn.context`` of a connection refused at admission, told so at ``at``."""

    at: float


class ConnectionGuard:
    def __init__(self, tcp: TcpServer, service: ChatService, limits: Limits) -> None:
        self.tcp = tcp
        self.service = service
        self.limits = limits
        self._lock = threading.Lock()
        self._count = 0

    @property
    def sweep_interval(self) -> float:
        return min(max(min(self.limits.login_timeout, self.limits.idle_timeout) / 4, 0.05), 5.0)

    def take_slot(self) -> bool:
        """Count a connection in (of either port); False when the process is full.

        Safe from any thread; a slot taken is given back with ``release``.
        """
        with self._lock:
            full = self._count >= self.limits.max_connections
            if not full:
                self._count += 1
        if full:
            metrics.CONNECTIONS_REFUSED.labels("limit").inc()
        return not full

    def admit(self, conn: TcpConnection) -> bool:
        """Connection's loop: count it in, or refuse it when the process is full."""
        if not self.take_slot():
            self.service.warnings.warn(
                "full", "{events} more connections refused, the process being full, "
                "in the last {seconds} s", None, 1,
                "%s refused: %d connections already", conn.name, self.limits.max_connections)
            self._warn_and_close(conn, Errno.SERVER_ERROR, "server is full, try again later")
            return False
        conn.set_high_water_mark_callback(self.on_backlog, self.limits.high_water_mark)
        return True

    def release(self) -> None:
        with self._lock:
            self._count -= 1

    def sweep(self) -> None:
        """Main loop timer: close the connections that overstayed."""
        now = time.monotonic()
        for conn in self.tcp.connections():
            session = conn.context
            if isinstance(session, Refused):
                if now - session.at > CLOSE_GRACE:
                    conn.force_close()
                continue
            if not isinstance(session, Session):
                continue  # not established yet
            if session.closing_since is not None:
                if now - session.closing_since > CLOSE_GRACE:
                    conn.force_close()
            elif (session.backlogged_since is not None
                  and now - session.backlogged_since > self.limits.slow_grace):
                session.post(partial(self._judge_backlog, conn))
            elif now - session.last_seen > self.limits.idle_timeout:
                metrics.CONNECTIONS_DROPPED.labels("idle").inc()
                self.service.warnings.warn(
                    "idle", "{events} more idle connections closed in the last {seconds} s",
                    None, 1, "%s idle for %gs, closing", conn.name, self.limits.idle_timeout,
                    level=logging.INFO)
                self._warn_and_close(conn, Errno.BAD_REQUEST, "idle for too long; send a "
                                     "keep-alive (an empty line) to stay connected")
            elif session.user_id is None and now - session.opened > self.limits.login_timeout:
                metrics.CONNECTIONS_DROPPED.labels("login_timeout").inc()
                self._warn_and_close(conn, Errno.NOT_LOGGED_IN, "log in within "
                                     f"{self.limits.login_timeout:g} seconds of connecting")

    def _warn_and_close(self, conn: TcpConnection, errno: Errno, errmsg: str) -> None:
        """Any thread: log the user out at once, tell the client why, close."""
        session = conn.context
        if not isinstance(session, Session):  # refused at admission, in its loop
            conn.context = Refused(time.monotonic())
            conn.send(orjson.dumps(error_reply(errno, errmsg)) + b"\n")
            conn.shutdown()
            return
        session.closing_since = time.monotonic()

        def in_loop() -> None:
            self.service.on_disconnect(conn, session)
            if session.legacy:
                conn.force_close()
            else:
                conn.send(orjson.dumps(error_reply(errno, errmsg)) + b"\n")
                conn.shutdown()

        session.post(in_loop)

    def on_backlog(self, conn: TcpConnection, queued: int) -> None:
        """Loop thread: the bytes queued for ``conn`` crossed a mark upwards."""
        session = conn.context
        if not isinstance(session, Session):
            return
        if queued >= self.limits.max_backlog:
            self.drop_slow(conn, queued)
        elif session.backlogged_since is None:
            session.backlogged_since = time.monotonic()
            conn.set_high_water_mark_callback(self.on_backlog, self.limits.max_backlog)

    def _judge_backlog(self, conn: TcpConnection) -> None:
        session = conn.context
        queued = conn.output_buffer.readable_bytes()
        if queued > self.limits.high_water_mark:
            self.drop_slow(conn, queued)
        else:
            session.backlogged_since = None
            conn.set_high_water_mark_callback(self.on_backlog, self.limits.high_water_mark)

    def drop_slow(self, conn: TcpConnection, queued: int) -> None:
        """Loop thread: a client that does not read; its outbox keeps what it missed."""
        session = conn.context
        if not isinstance(session, Session) or session.closing_since is not None:
            return
        session.closing_since = time.monotonic()
        metrics.CONNECTIONS_DROPPED.labels("slow_reader").inc()
        log.warning("%s: %d bytes queued and not read, dropping it", conn.name, queued,
                    extra={"connection": conn.name, "user": session.user_id})
        self.service.on_disconnect(conn, session)
        conn.force_close()
