"""Delivering a message to a user: live here, live elsewhere, or stored offline.

Theory of operation
-------------------
``_online`` maps the users logged in on this process to their connections.
It is the only business state shared by the loop threads; ``_lock`` guards
it and is held for map operations only, never across I/O or a database call.

``send_live`` hands a message to the `Outbox` of the user's connection here
(in that connection's loop thread: at once from it, posted from any other),
or else to the bus, which finds the process of the cluster holding the user.
When neither can, the caller stores it offline (``store_offline``).  Storing
races with the user logging in: the sender may miss the user in ``_online``
just before a login adds it, and store after that login looked at its
backlog.  So after storing, the router looks again and, if the user is now
here, kicks the user's outbox to page the stored messages out (``kick``); if
not, the bus tells the process that may hold the user elsewhere.

A bus that publishes ``later`` (Redis) is never asked from a loop to
publish chat and wait: ``send_live`` and ``send_live_many`` deliver here
only, and the service hands the rest to ``hand_off``.  Whoever published
it (the loop's round, or the bus's publisher thread) calls ``settle`` with
what nobody took, which stores it (one call for the whole pipeline) before
the next message for that user is published, so a message stored for a user
is never overtaken by a later one that went live.  What
other processes publish for users here comes in batches (``deliver_many``):
one closure per recipient connection carries a batch's messages and flush
notices, in order, into its loop.

What becomes of a message once it is in an outbox (the window, storage
while the client is slow, deletion on acknowledgement) is ``chat.outbox``'s.
A recipient's acknowledgement of a one-to-one message sends its sender a
receipt (``send_receipts``), here or through the bus, if the sender is
logged in with acknowledgements somewhere; otherwise it is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from functools import partial

import orjson

from chat import metrics
from chat.bus import Bus, Handoff
from chat.logbook import WarningSummary
from chat.outbox import Entry, Outbox
from chat.protocol import MsgId
from chat.session import Connection, Session
from chat.store import Store, StoreUnavailable

log = logging.getLogger("chat.router")


class Router:
    def __init__(self, store: Store, bus: Bus, max_offline: int | None = None,
                 max_offline_bytes: int | None = None,
                 warnings: WarningSummary | None = None) -> None:
        self.store = store
        self.bus = bus
        # The bus publishes chat from its own thread: the caller hands off (hand_off).
        self.later: bool = getattr(bus, "later", False)
        self.max_offline = max_offline
        self.max_offline_bytes = max_offline_bytes
        self.warnings = warnings or WarningSummary(log)
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._online: dict[int, Connection] = {}
        self._claiming: set[int] = set()  # logins between their checks and ``attach``
        self._releasing: set[int] = set()  # left, their release not done yet (presence)
        # Left, and until their unsubscribe is confirmed: the connection that
        # what still comes for them goes to, behind what went there before, so
        # that its loop stores it all in the order it came (``leave``).
        self._leaving: dict[int, Connection] = {}
        # (recipient here, sender): a message on its way back through Redis
        # (handed off before the recipient's login attached it, published after
        # it subscribed), its mid.  Until it arrives, the sender's later
        # messages for the recipient go the same way, behind it (``returning``);
        # ``_came``: what arrived for such a pair before its handoff landed.
        self._returning: dict[tuple[int, int], int] = {}
        self._came: dict[tuple[int, int], int] = {}
        # Messages a closing login could not store (the database was down), per
        # user: stored before the user's release completes or next login starts.
        self._unstored: dict[int, list[bytes]] = {}
        self._leave_waits: set[threading.Event] = set()
        self._closed = False  # shutting down: the loops are quitting, ``leave`` waits no more

    # -- the online map (safe from any thread) -----------------------------------

    def reserve(self, user_id: int) -> bool:
        """Claim ``user_id`` for a login in progress; False if here or being claimed."""
        with self._lock:
            if user_id in self._online or user_id in self._claiming \
                    or user_id in self._releasing:
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

    def detach(self, user_id: int, conn: Connection) -> bool:
        """Take ``conn`` off the map as the user's; True if it was, and the user is
        "releasing" until ``released``."""
        with self._lock:
            if self._online.get(user_id) is not conn:
                return False
            del self._online[user_id]
            self._releasing.add(user_id)
            self._leaving[user_id] = conn
            return True

    def returning(self, user_ids: Iterable[int], sender: int, mid: int) -> None:
        """``sender``'s handed-off message ``mid`` was taken; those of ``user_ids``
        who are here now get it back through this server's own subscription:
        until it arrives (``_from_bus``), ``send_live`` sends them nothing of
        the sender's directly, so its next message cannot overtake it.  Called
        before the sender's next request is served."""
        with self._lock:
            for user_id in user_ids:
                if user_id in self._online or user_id in self._leaving:
                    key = (user_id, sender)
                    if self._came.pop(key, None) == mid:
                        self._returning.pop(key, None)  # it came back already
                    else:
                        self._returning[key] = mid

    def leave(self, user_id: int, timeout: float) -> bool:
        """The releasing thread, once nothing more comes for the user from the bus:
        what its last connection was handed is stored, up to ``timeout`` seconds
        from now; False if that did not happen in time.

        From the user's ``detach`` until here, what came for it went to that
        connection, behind what was on its way there before, and its loop
        stores each message there (``_store_away``: the outbox is closed).  So this server
        stores a user's messages in the order they reached it, and all of them
        before its release lets a login elsewhere read them.  True at once
        after ``close``.
        """
        done = threading.Event()
        with self._lock:
            conn = self._leaving.pop(user_id, None)
            if conn is None or self._closed:
                return True
            conn.post(done.set)  # under the lock: after everything sent to it for the user
            self._leave_waits.add(done)
        try:
            return done.wait(timeout)
        finally:
            with self._lock:
                self._leave_waits.discard(done)

    def close(self) -> None:
        """Shutdown: the loops are about to quit and may never run what ``leave``
        posted, so a release waiting in ``leave`` goes on now (True), and later
        ones do not wait.  What the loops still run is stored all the same."""
        with self._lock:
            self._closed = True
            waits = list(self._leave_waits)
        for done in waits:
            done.set()

    def released(self, user_id: int) -> None:
        with self._lock:
            self._releasing.discard(user_id)
            self._leaving.pop(user_id, None)
            for pairs in (self._returning, self._came):
                for key in [key for key in pairs if key[0] == user_id]:
                    del pairs[key]
            self._released.notify_all()

    def keep_unstored(self, user_id: int, payloads: list[bytes]) -> None:
        with self._lock:
            self._unstored.setdefault(user_id, []).extend(payloads)

    def _take_unstored(self, items: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """What ``keep_unstored`` kept for the users of ``items``, taken out."""
        with self._lock:
            kept = [(uid, self._unstored.pop(uid)) for uid in dict.fromkeys(u for u, _ in items)
                    if uid in self._unstored]
        return [(uid, payload) for uid, payloads in kept for payload in payloads]

    def _keep_ahead(self, items: list[tuple[int, bytes]]) -> None:
        """Give back what ``_take_unstored`` took, ahead of anything kept since."""
        mine: dict[int, list[bytes]] = {}
        for uid, payload in items:
            mine.setdefault(uid, []).append(payload)
        with self._lock:
            for uid, payloads in mine.items():
                self._unstored[uid] = payloads + self._unstored.get(uid, [])

    def store_unstored(self, user_id: int) -> None:
        """Store what ``keep_unstored`` kept for the user; StoreUnavailable keeps it."""
        with self._lock:
            payloads = self._unstored.pop(user_id, None)
        if not payloads:
            return
        try:
            self.store.store_offline_many([(user_id, p.decode()) for p in payloads],
                                          keep=self.max_offline, keep_bytes=self.max_offline_bytes)
        except StoreUnavailable:
            self._keep_ahead([(user_id, p) for p in payloads])
            raise
        log.info("user %d: %d message(s) kept in memory are stored now", user_id, len(payloads))

    def wait_released(self, user_id: int, timeout: float) -> bool:
        """Wait until a release of ``user_id`` here is done; False if still going."""
        with self._lock:
            return self._released.wait_for(lambda: user_id not in self._releasing, timeout)

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

    def send_live(self, user_id: int, entry: Entry, sender: Connection | None = None) -> bool:
        """Deliver to the user's connection here, or through the bus; False if neither.

        A ``sender`` connection is told whom it talks to, so that the
        reactor can serve a conversation in one thread.
        """
        # The hot path of one-to-one chat: on Python 3.11 an explicit
        # acquire/release costs half of a ``with`` block (measured).
        self._lock.acquire()
        try:
            conn = self._online.get(user_id)
            if (conn is None and self._leaving) or self._returning:
                conn = self._not_direct(user_id, conn, entry)
                if conn is _POSTED:
                    return True
        finally:
            self._lock.release()
        if conn is not None:
            if conn.owned_here():  # a conversation in one loop: no hop, no closure
                outbox = conn.context.outbox  # _open_outbox, inlined on the hot path
                if outbox is not None and outbox.user_id == user_id and not outbox.closed:
                    outbox.deliver(entry)
                else:  # that login ended meanwhile, or another began
                    self._store_away([(user_id, entry.payload)])
            else:
                conn.run(partial(self._into_outbox, conn, user_id, entry))
                if sender is not None:
                    sender.talks_to(conn)  # in another loop: the reactor may gather them
            if sender is not None:
                metrics.delivered_live("one", sender.context.read_at)
            else:
                metrics.DELIVERED.inc("live")  # no read to time it from
            return True
        if self.later:  # not here: the caller hands it to the bus (hand_off)
            return False
        if self.bus.publish(user_id, entry.payload):
            metrics.DELIVERED.inc("bus")
            return True
        return False

    def send_live_many(self, user_ids: Iterable[int], entry: Entry,
                       read_at: float | None = None) -> list[int]:
        """``send_live`` to each user, the online map locked once; returns who was not reached.

        ``read_at`` is when the request was read (``time.monotonic``), for the metrics.
        """
        with self._lock:
            conns = [(uid, self._online.get(uid)) for uid in user_ids]
            if self._leaving or self._returning:
                conns = [(uid, self._not_direct(uid, conn, entry)) for uid, conn in conns]
                conns = [(uid, conn) for uid, conn in conns if conn is not _POSTED]
        elsewhere = []
        for user_id, conn in conns:
            if conn is not None:
                self._hand_over(conn, user_id,
                                Entry(entry.mid, entry.sender, entry.kind, entry.payload))
                if read_at is not None:
                    metrics.delivered_live("group", read_at)
                else:
                    metrics.DELIVERED.inc("live")
            else:
                elsewhere.append(user_id)
        if not elsewhere or self.later:  # later: the caller hands them to the bus
            return elsewhere
        missed = self.bus.publish_many(elsewhere, entry.payload)
        metrics.DELIVERED.inc("bus", len(elsewhere) - len(missed))
        return missed

    # -- through a bus that publishes later (the cluster) ------------------------

    def hand_off(self, handoff: Handoff, sender: Connection | None = None) -> None:
        """Give messages for users not here to the bus; ``handoff.done`` is called
        (from the bus's thread) once each was taken by a holder or settled.

        A ``sender`` connection is told that it talks to the bus's home loop,
        where what comes back from other servers is read: the reactor may
        move it there, as it gathers two local ends of a conversation.
        """
        home = self.bus.home_loop
        if sender is not None and home is not None:
            sender.talks_to_loop(home)
        self.bus.hand_off(handoff)

    def settle(self, missed: list[tuple[Handoff, int, bytes]]) -> None:
        """The publishing thread: messages nobody took, stored offline in one call.

        A handoff that ``check``s learns here that its user does not exist
        (``unknown``, nothing stored); one whose storing failed gets the error.
        """
        keep: list[tuple[Handoff, int, bytes]] = []
        exists: dict[int, bool] = {}
        for handoff, user_id, payload in missed:
            if handoff.check:
                try:
                    if user_id not in exists:
                        exists[user_id] = self.store.get_user(user_id) is not None
                except StoreUnavailable as exc:
                    handoff.error = exc
                    continue
                if not exists[user_id]:
                    handoff.unknown = True
                    continue
            keep.append((handoff, user_id, payload))
        if not keep:
            return
        try:
            self.store_offline([(user_id, payload) for _, user_id, payload in keep])
        except StoreUnavailable as exc:
            for handoff, _, _ in keep:
                handoff.error = exc
            return
        for handoff, _, _ in keep:
            handoff.stored += 1

    def deliver_many(self, items: list[tuple[int, bytes | None]]) -> None:
        """Bus thread: what other processes published for users here, in arrival
        order (a payload of None: flush the user's stored messages).

        One closure per recipient connection carries its part of the batch into
        its loop; a message for a user who left is stored, a receipt or a flush
        for one is dropped (the flush's messages are stored already).
        """
        self._lock.acquire()
        try:
            online, leaving = self._online, self._leaving
            conns = [online.get(user_id) for user_id, _ in items]
            last: set[Connection] = set()  # the last connections of users leaving
            if leaving:
                for k, (user_id, _) in enumerate(items):
                    if conns[k] is None and (conn := leaving.get(user_id)) is not None:
                        conns[k] = conn
                        last.add(conn)
        finally:
            self._lock.release()
        per_conn: dict[Connection, list[tuple[int, bytes | None]]] = {}
        away: list[tuple[int, bytes]] = []
        for item, conn in zip(items, conns, strict=True):
            if conn is not None:
                ops = per_conn.get(conn)
                if ops is None:
                    per_conn[conn] = [item]
                else:
                    ops.append(item)
            elif item[1] is not None and not item[1].startswith(RECEIPT_PREFIX):
                away.append((item[0], item[1]))
        for conn, ops in per_conn.items():
            # A leaving user's connection takes them behind what it has queued.
            (conn.post if conn in last else conn.run)(partial(self._from_bus, conn, ops))
        if away:
            self._store_away(away)

    def _from_bus(self, conn: Connection, ops: list[tuple[int, bytes | None]]) -> None:
        """The connection's loop: its part of a batch from the bus, in order."""
        delivered = 0
        late: list[tuple[int, bytes]] = []  # for a login that ended: stored at once
        for user_id, payload in ops:
            if payload is None:
                self._kick_outbox(conn, user_id)
            elif payload.startswith(RECEIPT_PREFIX):
                _send_receipt(conn, payload)
            else:
                try:
                    entry = Entry.from_payload(0, payload)
                except ValueError:
                    log.warning("dropped a malformed message for user %d from the bus", user_id)
                    continue
                if self._returning or self._came:
                    self._returned((user_id, entry.sender), entry.mid)
                outbox = _open_outbox(conn, user_id)
                if outbox is not None:
                    outbox.deliver(entry)
                    delivered += 1
                else:
                    late.append((user_id, payload))
        if late:
            self._store_away(late)
        if delivered:
            metrics.DELIVERED.inc("from_bus", delivered)

    def _not_direct(self, user_id: int, conn: Connection | None,
                    entry: Entry) -> Connection | None:
        """Lock held: where ``entry`` goes when the direct way may overtake
        something.  None (hand it to the bus) if its sender's previous message
        for the user comes back through Redis; ``_POSTED`` once it was queued
        behind what a leaving user's last connection has yet to store;
        else ``conn``, as it was."""
        if self._returning and (user_id, entry.sender) in self._returning:
            return None
        if conn is None and (last := self._leaving.get(user_id)) is not None:
            own = Entry(entry.mid, entry.sender, entry.kind, entry.payload)  # an outbox's row
            last.post(partial(self._into_outbox, last, user_id, own))
            return _POSTED
        return conn

    def _returned(self, key: tuple[int, int], mid: int) -> None:
        """A message ``mid`` of the (recipient, sender) pair came from the bus."""
        with self._lock:
            awaited = self._returning.get(key)
            if awaited is None and key not in self._came:
                return  # the pair waits for nothing
            if awaited == mid:
                del self._returning[key]
            self._came[key] = mid  # for the pair's next landing, if it came back first

    def _store_away(self, items: list[tuple[int, bytes]]) -> None:
        """Messages for users who left here a moment ago, which their senders'
        servers may have followed with stored ones already."""
        try:
            self.store_offline(items, late=True)
        except StoreUnavailable as exc:
            # Their unsubscribes are on their way: kept with what their last
            # logins could not store, stored before their releases complete.
            log.warning("%d message(s) for users who left kept in memory, storage "
                        "unavailable: %s", len(items), exc)
            for user_id, payload in items:
                self.keep_unstored(user_id, [payload])

    def _hand_over(self, conn: Connection, user_id: int, entry: Entry) -> None:
        """Give ``entry`` to the outbox of ``user_id`` on ``conn``, in its loop thread."""
        if conn.owned_here():  # a conversation gathered in one loop: no hop, no closure
            self._into_outbox(conn, user_id, entry)
        else:
            conn.run(partial(self._into_outbox, conn, user_id, entry))

    def _into_outbox(self, conn: Connection, user_id: int, entry: Entry) -> None:
        outbox = _open_outbox(conn, user_id)
        if outbox is not None:
            outbox.deliver(entry)
        else:  # that login ended meanwhile, or another began
            self._store_away([(user_id, entry.payload)])

    def store_offline(self, items: list[tuple[int, bytes]], late: bool = False) -> None:
        """Store ``items`` offline, in order; StoreUnavailable stores none of them.

        What ``keep_unstored`` kept for one of their users goes first, so a
        newer message for the user never overtakes one the database could
        not take a moment ago.  ``late``: messages Redis brought here for users
        who had left; each goes before what its sender's server stored after
        it (``Store.store_offline_late``).
        """
        kept = self._take_unstored(items) if self._unstored else []
        store = self.store.store_offline_late if late else self.store.store_offline_many
        try:
            dropped = store(
                [(uid, payload.decode()) for uid, payload in kept + items],
                keep=self.max_offline, keep_bytes=self.max_offline_bytes)
        except StoreUnavailable:
            if kept:
                self._keep_ahead(kept)
            raise
        if kept:
            log.info("%d message(s) kept in memory are stored now, ahead of newer ones",
                     len(kept))
        metrics.DELIVERED.inc("stored", len(items))
        if dropped:
            self.caps_hit(dropped)
        # A user not here may have just logged in elsewhere: its holder pages.
        elsewhere = [uid for uid in dict.fromkeys(uid for uid, _ in items) if not self.kick(uid)]
        if elsewhere:
            self.bus.notify_stored_many(elsewhere)

    def caps_hit(self, dropped: dict[int, int]) -> None:
        """Offline caps dropped the oldest messages of these users (count per user)."""
        for user_id, count in dropped.items():
            self.warnings.warn(
                "offline-cap", "dropped {amount} oldest offline messages for {subjects} "
                "user(s) in the last {seconds} s", user_id, count,
                "user %d is over its offline cap: dropped the %d oldest", user_id, count)

    def kick(self, user_id: int) -> bool:
        """If the user is here, have its outbox page out what was stored; False if not here.

        Safe from any thread; the bus calls it when another process stored
        messages for a user of this one.
        """
        conn = self.connection(user_id)
        if conn is None:
            return False
        conn.run(partial(self._kick_outbox, conn, user_id))
        return True

    @staticmethod
    def _kick_outbox(conn: Connection, user_id: int) -> None:
        outbox = conn.context.outbox
        if outbox is not None and outbox.user_id == user_id:
            outbox.kick()  # a closed one (the login ended) does nothing

    def send_receipts(self, recipient: int, receipts: list[tuple[int, int]]) -> None:
        """``recipient`` acknowledged these (sender, mid) one-to-one messages.

        A sender here gets its receipt at once; those elsewhere get theirs in
        one round trip to the bus for the whole acknowledgement, not one each.
        """
        elsewhere = []
        for sender, mid in receipts:
            payload = orjson.dumps({"msgid": _RECEIPT, "mid": mid, "to": recipient})
            conn = self.connection(sender)
            if conn is None:
                elsewhere.append((sender, payload))
            else:
                _send_receipt(conn, payload)
        if elsewhere:
            self.bus.notify_each(elsewhere)

    def deliver_from_bus(self, user_id: int, payload: bytes) -> None:
        """Bus thread: a message for a user this process held; offline if it left."""
        self.deliver_many([(user_id, payload)])


_POSTED: Connection = object()  # type: ignore[assignment]  # _not_direct queued it


def _open_outbox(conn: Connection, user_id: int) -> Outbox | None:
    """The outbox of ``user_id``'s login on ``conn``, unless that login ended."""
    outbox: Outbox | None = conn.context.outbox
    if outbox is not None and outbox.user_id == user_id and not outbox.closed:
        return outbox
    return None


_RECEIPT = int(MsgId.RECEIPT)
RECEIPT_PREFIX = b'{"msgid":18,'  # how orjson writes a receipt: told apart from chat


def _send_receipt(conn: Connection, payload: bytes) -> None:
    session: Session = conn.context
    outbox = session.outbox
    if outbox is not None and outbox.acking and not outbox.closed:  # a racy look: best effort
        conn.send(payload + b"\n")
