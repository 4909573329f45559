"""Delivering a message to a user: live here, live elsewhere, or stored offline.

Theory of operation
-------------------
``_online`` maps the users logged in on this process to their connections.
It is the only business state shared by the loop threads; ``_lock`` guards
it and is held for map operations only, never across I/O or a database call.

``send_live`` hands a message to the user's connection here (``conn.send``
hops to the connection's own loop), or else to the bus, which finds the
process of the cluster holding the user.  When neither can, the caller
stores it offline (``store_offline``).  Storing races with the user logging
in: the sender may miss the user in ``_online`` just before a login adds it,
and store after that login fetched its offline messages.  So after storing,
the router looks again and, if the user is now here, asks the user's own
loop to flush the offline messages (``kick``); if not, the bus tells the
process that may hold the user elsewhere.

Offline messages leave storage only after the bytes carrying them were
written to the socket (``delete_when_written``): a crash before that
delivers them again at the next login rather than losing them.  Logins and
flushes of one connection run in its loop thread, one after the other, and
``session.offline_sent_upto`` keeps a flush from sending what the login
already sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import orjson

from chat import metrics
from chat.bus import Bus
from chat.protocol import MsgId
from chat.session import Connection, Session
from chat.store import Store, StoreUnavailable

log = logging.getLogger("chat.router")

_CHAT = (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG)


class Router:
    def __init__(self, store: Store, bus: Bus, max_offline: int | None = None) -> None:
        self.store = store
        self.bus = bus
        self.max_offline = max_offline
        self._lock = threading.Lock()
        self._online: dict[int, Connection] = {}
        self._claiming: set[int] = set()  # logins between their checks and ``attach``

    # -- the online map (safe from any thread) -----------------------------------

    def reserve(self, user_id: int) -> bool:
        """Claim ``user_id`` for a login in progress; False if here or being claimed."""
        with self._lock:
            if user_id in self._online or user_id in self._claiming:
                return False
            self._claiming.add(user_id)
            return True

    def attach(self, user_id: int, conn: Connection) -> None:
        with self._lock:
            self._online[user_id] = conn
            self._claiming.discard(user_id)

    def unreserve(self, user_id: int) -> None:
        with self._lock:
            self._claiming.discard(user_id)

    def detach(self, user_id: int, conn: Connection) -> None:
        with self._lock:
            if self._online.get(user_id) is conn:
                del self._online[user_id]

    def connection(self, user_id: int) -> Connection | None:
        with self._lock:
            return self._online.get(user_id)

    def detach_all(self) -> list[int]:
        with self._lock:
            users = list(self._online)
            self._online.clear()
        return users

    def count(self) -> int:
        with self._lock:
            return len(self._online)

    # -- delivery ----------------------------------------------------------------

    def send_live(self, user_id: int, payload: bytes, sender: Connection | None = None) -> bool:
        """Deliver to the user's connection here, or through the bus; False if neither.

        A ``sender`` connection is told whom it talks to, so that the
        reactor can serve a conversation in one thread.
        """
        # The hot path of one-to-one chat: on Python 3.11 an explicit
        # acquire/release costs half of a ``with`` block (measured).
        self._lock.acquire()
        try:
            conn = self._online.get(user_id)
        finally:
            self._lock.release()
        if conn is not None:
            conn.send(payload + conn.context.terminator)
            if sender is not None:
                sender.talks_to(conn)
                metrics.delivered_live("one", sender.context.last_seen)
            else:
                metrics.DELIVERED.inc("live")  # no read to time it from
            return True
        if self.bus.publish(user_id, payload):
            metrics.DELIVERED.inc("bus")
            return True
        return False

    def send_live_many(self, user_ids: Iterable[int], payload: bytes,
                       read_at: float | None = None) -> list[int]:
        """``send_live`` to each user, the online map locked once; returns who was not reached.

        ``read_at`` is when the request was read (``time.monotonic``), for the metrics.
        """
        with self._lock:
            conns = [(uid, self._online.get(uid)) for uid in user_ids]
        elsewhere = []
        for user_id, conn in conns:
            if conn is not None:
                conn.send(payload + conn.context.terminator)
                if read_at is not None:
                    metrics.delivered_live("group", read_at)
                else:
                    metrics.DELIVERED.inc("live")
            else:
                elsewhere.append(user_id)
        if not elsewhere:
            return []
        missed = self.bus.publish_many(elsewhere, payload)
        metrics.DELIVERED.inc("bus", len(elsewhere) - len(missed))
        return missed

    def store_offline(self, items: list[tuple[int, bytes]]) -> None:
        dropped = self.store.store_offline_many(
            [(uid, payload.decode()) for uid, payload in items], keep=self.max_offline)
        metrics.DELIVERED.inc("stored", len(items))
        for user_id, count in dropped.items():
            log.warning("user %d has over %d offline messages: dropped the %d oldest",
                        user_id, self.max_offline, count)
        # A user not here may have just logged in elsewhere: its holder flushes.
        elsewhere = [uid for uid in dict.fromkeys(uid for uid, _ in items) if not self.kick(uid)]
        if elsewhere:
            self.bus.notify_stored_many(elsewhere)

    def kick(self, user_id: int) -> bool:
        """If the user is here, flush its offline messages in its loop; False if not here.

        Safe from any thread; the bus calls it when another process stored
        messages for a user of this one.
        """
        conn = self.connection(user_id)
        if conn is None:
            return False
        session: Session = conn.context
        session.post(lambda: self.flush_offline(conn, session, user_id))
        return True

    def flush_offline(self, conn: Connection, session: Session, user_id: int) -> None:
        """Loop thread of ``conn``: send the user's stored messages not sent yet."""
        if session.user_id != user_id:
            return
        try:
            rows = self.store.fetch_offline(user_id)
            rows = [row for row in rows if row[0] > session.offline_sent_upto]
        except StoreUnavailable as exc:
            log.warning("offline flush for user %d postponed: %s", user_id, exc)
            return
        if rows:
            frames = [text.encode() for _, text in rows]
            self.delete_when_written(conn, session, user_id, rows[-1][0], frames)
            conn.send(b"".join(frame + session.terminator for frame in frames))
            metrics.BACKLOG_DELIVERED.inc(len(frames))

    def delete_when_written(
        self, conn: Connection, session: Session, user_id: int, up_to_id: int,
        frames: Iterable[bytes] = (),
    ) -> None:
        """Loop thread of ``conn``; call BEFORE sending what carries rows <= ``up_to_id``.

        ``frames`` are the stored messages sent as frames of their own, which
        ``salvage`` must not store a second time.
        """
        session.offline_sent_upto = up_to_id
        session.unwritten.update(frames)

        def written(_conn: object) -> None:
            conn.set_write_complete_callback(None)
            session.unwritten.clear()
            self.delete_sent(session, user_id, up_to_id)

        conn.set_write_complete_callback(written)

    def salvage(self, session: Session, queued: bytes) -> list[bytes]:
        """The chat messages in bytes queued for a connection that is being dropped.

        Stored messages among them stay stored (their delete waits for a write
        that never completes), so only the others are returned.  A first frame
        cut in half is skipped: the client has its head, nobody has all of it.
        """
        stored = session.unwritten
        out = []
        for raw in queued.split(session.terminator):
            if stored[raw] > 0:
                stored[raw] -= 1
                continue
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(msg, dict) and msg.get("msgid") in _CHAT:
                out.append(raw)
        return out

    def delete_sent(self, session: Session, user_id: int, up_to_id: int) -> None:
        try:
            self.store.delete_offline(user_id, up_to_id)
            session.undeleted = None
        except StoreUnavailable as exc:
            # Delivered but still stored: retried when the session ends, else
            # delivered again at the next login (at least once, never lost).
            session.undeleted = (user_id, up_to_id)
            log.warning("delivered offline messages of user %d not deleted yet: %s",
                        user_id, exc)

    def deliver_from_bus(self, user_id: int, payload: bytes) -> None:
        """Bus thread: a message for a user this process held; offline if it left."""
        conn = self.connection(user_id)
        if conn is not None:
            conn.send(payload + conn.context.terminator)
            metrics.DELIVERED.inc("from_bus")
            return
        try:
            self.store_offline([(user_id, payload)])
        except StoreUnavailable as exc:
            log.error("message for user %d lost, storage unavailable: %s", user_id, exc)
