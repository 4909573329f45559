"""How a connection's requests are served: frames in, replies out, in order.

`RequestPipeline` is the half of `ChatService` that knows nothing of the
business: it decodes a connection's bytes into requests and serves them one
after the other, in the order PROTOCOL.md gives (frame, msgid known, logged
in, fields, identity, then the handler's business rules); it answers each
with exactly one reply, or none where the protocol says so; it keeps one
request's failure (a refusal, a bug) from touching the next; and it parks a
connection's later frames while one of its requests waits for a worker
thread (a password hash), so they are served after it, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import orjson

from chat import metrics
from chat.limits import Limits
from chat.logbook import WarningSummary
from chat.protocol import (
    ACKED_REQUESTS,
    LEGACY_SUPPRESSED,
    BadField,
    Errno,
    FrameError,
    Message,
    MsgId,
    error_reply,
    opt_int,
    to_legacy_login_ack,
    valid_seq,
)
from chat.session import Connection, Session
from chat.store import StoreUnavailable
from chat.workers import Outcome, WorkerPool

log = logging.getLogger("chat.service")

Handler = Callable[[Connection, Session, Message], None]
Item = Message | FrameError


class RequestFailed(Exception):
    """A request the business rules refuse; becomes the reply's errno/errmsg."""

    def __init__(self, errno: Errno, errmsg: str) -> None:
        super().__init__(errmsg)
        self.errno = errno
        self.errmsg = errmsg


class RequestPipeline:
    """Serves the requests of connections through ``_handlers``; loop threads."""

    limits: Limits
    warnings: WarningSummary
    workers: WorkerPool
    _handlers: dict[int, Handler]
    _anonymous: frozenset[int]

    # -- frames in -------------------------------------------------------------

    def on_data(self, conn: Connection, session: Session, data: bytes) -> None:
        """Loop thread of ``conn``: decode and handle every complete frame, in order.

        While a request of the connection waits for a worker (``suspended``),
        what arrives is held, undecoded, and served once that request is done.
        """
        if session.suspended:
            self._hold(conn, session, data)
        else:
            self._serve(conn, session, session.decoder.feed(data))

    def _serve(self, conn: Connection, session: Session, items: Sequence[Item]) -> None:
        for i, item in enumerate(items):
            if type(item) is dict:
                try:
                    self.handle(conn, session, item)
                except Exception:
                    self._bug(conn, session, item)
                if session.closing_since is not None:
                    return  # condemned: the rest of its input is not served
                if session.suspended:
                    if i + 1 < len(items):  # a login alone in its read keeps no list
                        session.waiting = items[i + 1:]
                    return
                continue
            assert isinstance(item, FrameError)
            metrics.request_failed(None, item.errno)
            self._reply_error(conn, session, item.errno, item.errmsg, None)
            if item.fatal:
                session.closing_since = time.monotonic()
                self.warnings.warn("fatal-frame", "{events} more connections closed for a "
                                   "bad frame in the last {seconds} s", conn.name, 1,
                                   "%s: %s, closing", conn.name, item.errmsg,
                                   level=logging.INFO)
                metrics.CONNECTIONS_DROPPED.labels("frame_too_large").inc()
                conn.force_close() if session.legacy else conn.shutdown()
                return

    def handle(self, conn: Connection, session: Session, msg: Message) -> None:
        """Loop thread of ``conn``: one request, answered; raises only on a bug."""
        msgid = msg.get("msgid")
        handler = self._handlers.get(msgid) if type(msgid) is int else None
        # A seq that cannot be echoed is dropped before any reply could carry it.
        bad_seq = "seq" in msg and not valid_seq(msg["seq"])
        if bad_seq:
            del msg["seq"]
        metrics.REQUESTS.inc(msgid if handler is not None else None)
        try:
            if session.bucket is not None:
                if session.bucket.take(session.read_at):
                    session.refused = 0
                else:
                    self._over_rate(conn, session)
            if handler is None:
                raise RequestFailed(Errno.BAD_REQUEST, f"unknown msgid {msgid!r}")
            if session.user_id is None and msgid not in self._anonymous:
                raise RequestFailed(Errno.NOT_LOGGED_IN, "log in first")
            if bad_seq:
                raise BadField("field 'seq' must be an integer in -2^63..2^63-1 "
                               "or a string of at most 64 characters")
            handler(conn, session, msg)
        except _REFUSALS as exc:
            self._refuse(conn, session, msg, exc)

    def _refuse(self, conn: Connection, session: Session, msg: Message,
                exc: RequestFailed | BadField | StoreUnavailable) -> None:
        """The reply to a request the rules, its fields or the storage refused."""
        if isinstance(exc, RequestFailed):
            self._fail(conn, session, msg, exc.errno, exc.errmsg)
        elif isinstance(exc, BadField):
            self._fail(conn, session, msg, Errno.BAD_REQUEST, str(exc))
        else:
            self.warnings.warn("storage", "{events} more requests failed, storage "
                               "unavailable, in the last {seconds} s", None, 1,
                               "%s: msgid %s failed, storage unavailable: %s",
                               conn.name, msg.get("msgid"), exc,
                               extra=_context(conn, session, msg.get("msgid"),
                                              Errno.SERVER_ERROR))
            self._fail(conn, session, msg, Errno.SERVER_ERROR, "storage unavailable, try again")

    def _hold(self, conn: Connection, session: Session, data: bytes) -> None:
        if session.held is None:
            session.held = bytearray(data)
        else:
            session.held += data
        if len(session.held) > HELD_FRAMES * self.limits.max_frame:
            session.closing_since = time.monotonic()
            self.warnings.warn("held", "{events} more connections closed for sending too "
                               "much while a request waited in the last {seconds} s", None, 1,
                               "%s: %d bytes sent while one of its requests waited (a login, "
                               "a registration, chat for another server), closing",
                               conn.name, len(session.held))
            conn.force_close()

    def _offload(self, conn: Connection, session: Session, msg: Message,
                 work: Callable[[], object], then: Callable[[Outcome], None]) -> None:
        """Run ``work`` on a worker, then ``then(outcome)`` in the connection's loop.

        The connection's later frames wait meanwhile (``suspended``), so a chat
        request right behind a login is served after the login.  A full
        queue refuses the request at once.
        """
        def done(outcome: Outcome) -> None:  # a worker thread
            session.post(lambda: self._offloaded(conn, session, msg, outcome, then))

        session.suspended = True  # before submit: with no worker threads it is done at once
        if not self.workers.submit(work, done):
            session.suspended = False
            raise RequestFailed(Errno.SERVER_ERROR, "server busy, try again")

    def _offloaded(self, conn: Connection, session: Session, msg: Message,
                   outcome: Outcome, then: Callable[[Outcome], None]) -> None:
        """Loop thread: finish the offloaded request, then serve what waited behind it."""
        if session.closing_since is not None:
            return  # gone meanwhile: nobody to answer, nothing to log in
        try:
            then(outcome)
        except _REFUSALS as exc:
            self._refuse(conn, session, msg, exc)
        except Exception:
            self._bug(conn, session, msg)
        session.suspended = False
        waiting, held = session.waiting, session.held
        session.waiting, session.held = (), None
        self._serve(conn, session, waiting)
        if held and session.closing_since is None:
            self.on_data(conn, session, bytes(held))

    def _bug(self, conn: Connection, session: Session, msg: Message) -> None:
        """A request ended in an exception: log it once, answer errno 9, go on.

        The reply is built from the request's msgid and (already checked) seq
        only, so whatever else in the request broke the handler cannot break it.
        """
        msgid = msg.get("msgid")
        log.exception("%s: bug while handling msgid %r", conn.name, msgid,
                      extra=_context(conn, session, msgid, Errno.SERVER_ERROR))
        minimal: Message = {"msgid": msgid if type(msgid) is int else None}
        if "seq" in msg and valid_seq(msg["seq"]):
            minimal["seq"] = msg["seq"]
        try:
            self._fail(conn, session, minimal, Errno.SERVER_ERROR, "internal server error")
        except Exception:
            log.exception("%s: could not even answer errno 9", conn.name)

    def _over_rate(self, conn: Connection, session: Session) -> None:
        """Refuse a request over the rate; a client that keeps on is cut off."""
        session.refused += 1
        if session.refused == 1 and not session.rate_noted:
            session.rate_noted = True
            self.warnings.warn("rate", "{events} more connections went over the request "
                               "rate in the last {seconds} s", conn.name, 1,
                               "%s: over %g requests/s, refusing", conn.name,
                               self.limits.rate, level=logging.INFO)
        if session.refused > self.limits.burst:
            # Condemned: on_data serves nothing more of it, the sweep ends it
            # if the client does not close after reading its refusals.
            session.closing_since = time.monotonic()
            metrics.CONNECTIONS_DROPPED.labels("flood").inc()
            self.warnings.warn("flood", "{events} more flooding connections closed in "
                               "the last {seconds} s", conn.name, 1,
                               "%s: still flooding after %d refusals, closing", conn.name,
                               session.refused)
            conn.shutdown()
        raise RequestFailed(Errno.SERVER_ERROR, "too many requests, slow down")

    # -- replies out -----------------------------------------------------------

    def _reply(self, conn: Connection, session: Session, request: Message, reply: Message) -> None:
        if session.legacy:
            if reply["msgid"] in LEGACY_SUPPRESSED:
                return
            if reply["msgid"] == MsgId.LOGIN_MSG_ACK:
                reply = to_legacy_login_ack(reply)
        if "seq" in request:
            reply["seq"] = request["seq"]
        conn.send(orjson.dumps(reply) + session.terminator)

    def _fail(
        self, conn: Connection, session: Session, request: Message, errno: Errno, errmsg: str
    ) -> None:
        msgid = request.get("msgid")
        metrics.request_failed(msgid, errno)
        ack = ACKED_REQUESTS.get(msgid) if type(msgid) is int else None
        if ack is None:
            self._reply_error(conn, session, errno, errmsg, request)
        else:
            self._reply(conn, session, request, {"msgid": ack, "errno": errno, "errmsg": errmsg})

    def _reply_error(
        self, conn: Connection, session: Session, errno: Errno, errmsg: str,
        request: Message | None,
    ) -> None:
        if not session.legacy:
            conn.send(orjson.dumps(error_reply(errno, errmsg, request)) + b"\n")

    def _check_identity(self, session: Session, msg: Message) -> None:
        claimed = opt_int(msg, "id")
        if claimed is not None and claimed != session.user_id:
            raise RequestFailed(Errno.FORBIDDEN, "id is not the logged-in user")


_REFUSALS = (RequestFailed, BadField, StoreUnavailable)
# What a connection may send while one of its requests waits (a login or a
# registration for a worker, chat for another server for Redis), in frames of
# the largest size; more closes it (memory stays bounded).
HELD_FRAMES = 4


def _context(conn: Connection, session: Session, msgid: object = None,
             errno: Errno | None = None) -> dict[str, object]:
    """The ``extra=`` of a log line about a request (see chat/logs.py)."""
    return {"connection": conn.name, "user": session.user_id,
            "msgid": msgid if type(msgid) is int else None,
            "errno": int(errno) if errno is not None else None}


def host_of(conn: Connection) -> str:
    """The address (host part) of the connection's peer."""
    address = conn.peer_address
    return str(address[0]) if isinstance(address, tuple) else str(address)
