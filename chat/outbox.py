"""One logged-in connection's chat messages on their way out: messages, not bytes.

Theory of operation
-------------------
An `Outbox` belongs to one login on one connection and runs only in that
connection's loop thread.  It holds ``inflight``: the messages handed to the
connection and not yet confirmed.  What confirms them depends on the login:

* acknowledged (``"ack": true``): the client's ``DELIVERY_ACK`` (`ack`);
* otherwise (the legacy dialect included): the connection's output draining
  to the kernel (`on_written`, the connection's write-complete callback).

A confirmed message that came from storage (it has a ``row``) is deleted
from it then, and not before; an acknowledged one-to-one message sends its
sender a receipt.  Whatever is in flight when the login ends (`close`) and
came live is stored, so the next login delivers it again with the same mid;
what came from storage is still there.

The window: an acknowledged login has at most ``window`` messages (and
``window_bytes``) in flight, any login at most ``push_limit`` bytes queued
on the connection.  A message that finds the window full is not queued in
memory: it goes to storage, and from then on (``backlog``) every new message
does too, behind it, until the pager (`_refill`) has brought the stored ones
out, page by page, as the window frees.  So memory stays flat whatever the
backlog, and order is kept: before the first message goes to storage, the
live messages still in flight are stored as well (`_enter_backlog`), so
that if the login ends they come back before, not after, what followed them.

Storage may also gain messages for this user behind the outbox's back (a
sender who raced the login and stored); `kick` then starts the same paging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from chat.store import Store, StoreUnavailable

log = logging.getLogger("chat.outbox")

PUSH_LIMIT = 256 * 1024  # bytes queued on a connection before messages wait in storage
WINDOW_BYTES = 1024 * 1024  # unacknowledged bytes in flight, beside the count window
PAGE = 64  # stored messages fetched at a time for a login that does not acknowledge
_STORED_FLAG = b',"stored":true}'


@dataclass(slots=True)
class Entry:
    """One chat message for this user: its id, sender, kind (5 or 9) and JSON text."""

    mid: int
    sender: int
    kind: int
    payload: bytes  # one JSON object, no terminator
    row: int = 0  # its offline row while it is stored, else 0

    @classmethod
    def from_stored(cls, row: int, text: str) -> Entry:
        return cls.from_payload(row, text.encode())

    @classmethod
    def from_payload(cls, row: int, payload: bytes) -> Entry:
        """Raises ValueError unless ``payload`` is a JSON object in UTF-8."""
        msg = orjson.loads(payload)
        if type(msg) is not dict:
            raise ValueError("not a JSON object")
        mid, sender, kind = msg.get("mid"), msg.get("id"), msg.get("msgid")
        return cls(mid if type(mid) is int else 0, sender if type(sender) is int else 0,
                   kind if type(kind) is int else 0, payload, row)


Receipts = Callable[[int, list[tuple[int, int]]], None]  # (recipient, [(sender, mid)])
StoreLive = Callable[[list[tuple[int, bytes]]], None]  # the router's store_offline
KeepUnstored = Callable[[int, list[bytes]], None]  # the router's keep_unstored


@dataclass(frozen=True, slots=True)
class Caps:
    window: int = 256
    window_bytes: int = WINDOW_BYTES
    push_limit: int = PUSH_LIMIT
    keep: int | None = None  # offline messages kept per user
    keep_bytes: int | None = None


class Outbox:
    # A logged-in user keeps one for as long as it stays: slots, and a list for
    # what is in flight (an empty deque takes a 64-slot block, about 600 bytes).
    __slots__ = ("_cheap_limit", "_cursor", "_inflight_bytes", "_keep_unstored", "_queued",
                 "_receipts", "_send", "_store", "_store_live", "_terminator", "_undeleted",
                 "acking", "backlog", "caps", "closed", "inflight", "user_id")

    def __init__(self, user_id: int, acking: bool, terminator: bytes,
                 send: Callable[[bytes], None], queued: Callable[[], int],
                 store: Store, store_live: StoreLive, receipts: Receipts, caps: Caps,
                 keep_unstored: KeepUnstored) -> None:
        self.user_id = user_id
        self.acking = acking
        self.closed = False
        self.backlog = False
        self.inflight: list[Entry] = []
        # Bytes in flight; without acks, what was sent since the output last
        # drained.  Until that reaches a quarter of ``push_limit``, the queue
        # cannot be over it by our messages: no need to ask the connection.
        self._inflight_bytes = 0
        self._cheap_limit = caps.push_limit // 4
        self._cursor = 0  # the last stored row sent in this paging episode
        self._undeleted: tuple[int, ...] = ()  # confirmed rows whose delete failed: retried
        self._terminator = terminator
        self._send = send
        self._queued = queued
        self._store = store
        self._store_live = store_live
        self._receipts = receipts
        self._keep_unstored = keep_unstored
        self.caps = caps

    # -- in ------------------------------------------------------------------

    def deliver(self, entry: Entry) -> None:
        """A live message for the user.  Loop thread."""
        if self.closed:
            self._store_live([(self.user_id, entry.payload)])  # the login ended meanwhile
        elif self.backlog:
            self._to_storage([entry])
        elif self.acking or self._inflight_bytes >= self._cheap_limit:
            if self._full():
                self._enter_backlog([entry])
            else:
                self._push(entry)
        else:  # the usual live message of a login without acks, inlined
            payload = entry.payload
            self._inflight_bytes += len(payload)
            self.inflight.append(entry)
            self._send(payload + self._terminator)

    def kick(self) -> None:
        """Storage gained messages for the user: bring them out, before new ones."""
        if not self.closed:
            self._enter_backlog([])
            self._refill()

    def start_backlog(self, stored: int) -> None:
        """At login: ``stored`` messages wait in storage; page them out in order."""
        self.backlog = stored > 0
        self._refill()

    def adopt_sent(self, entries: Iterable[Entry]) -> None:
        """Stored messages sent inside another frame (the login ack): in flight now."""
        self.inflight.extend(entries)

    # -- confirmations -----------------------------------------------------------

    def ack(self, mid: int) -> None:
        """DELIVERY_ACK: everything in flight up to the message ``mid`` arrived."""
        count = 0
        for count, entry in enumerate(self.inflight, 1):  # noqa: B007
            if entry.mid == mid:
                break
        else:
            return  # not delivered on this connection: ignored
        done = self.inflight[:count]
        del self.inflight[:count]
        self._inflight_bytes -= sum(len(e.payload) for e in done)
        self._forget_stored([e.row for e in done if e.row])
        receipts = [(e.sender, e.mid) for e in done if e.kind == 5 and e.sender and e.mid]
        if receipts:
            self._receipts(self.user_id, receipts)
        self._refill()

    def on_written(self, _conn: object = None) -> None:
        """The connection's output drained: a login without acks has its messages.

        Takes (and ignores) the connection, to be a write-complete callback.
        """
        inflight = self.inflight
        if self.acking or not inflight:
            return
        if len(inflight) == 1 and not inflight[0].row and not self._undeleted:
            inflight.clear()  # the usual case, a live message: nothing to delete
        else:
            rows = [e.row for e in inflight if e.row]
            inflight.clear()
            self._forget_stored(rows)
        self._inflight_bytes = 0
        if self.backlog:
            self._refill()

    def close(self, gone: bool = True) -> None:
        """The login ended: store what came live and was not confirmed.

        ``gone``: the connection is closed.  If it is not (a logout, or the
        server closing it after a last reply), what a login without acks has
        queued is still written, and ``on_written`` confirms it as before.
        """
        if self.closed:
            return
        self.closed = True
        if self._undeleted:
            self._forget_stored([])
        if not self.acking and not gone:
            return
        live = [e for e in self.inflight if not e.row]
        self.inflight.clear()
        if live:
            try:
                self._store.store_offline_many([(self.user_id, e.payload.decode()) for e in live],
                                               self.caps.keep, self.caps.keep_bytes)
            except StoreUnavailable as exc:
                log.warning("user %d: %d unconfirmed message(s) kept in memory until storage "
                            "answers: %s", self.user_id, len(live), exc)
                self._keep_unstored(self.user_id, [e.payload for e in live])

    # -- out -----------------------------------------------------------------------

    def _full(self) -> bool:
        if self._queued() >= self.caps.push_limit:
            return True
        return self.acking and (len(self.inflight) >= self.caps.window
                                or self._inflight_bytes >= self.caps.window_bytes)

    def _push(self, entry: Entry) -> None:
        data = entry.payload
        if entry.row and self.acking:
            body = data.rstrip()
            if body.endswith(b"}"):  # one object, as the server stores them
                data = body[:-1] + (_STORED_FLAG if len(body) > 2 else _STORED_FLAG[1:])
        self.inflight.append(entry)  # first: a write-complete may follow the send at once
        self._inflight_bytes += len(entry.payload)
        self._send(data + self._terminator)

    def _enter_backlog(self, entries: list[Entry]) -> None:
        """From now on new messages queue in storage; the live ones in flight go first."""
        if not self.backlog:
            live = [e for e in self.inflight if not e.row]
            entries = live + entries
            self.backlog = True
        self._to_storage(entries)

    def _to_storage(self, entries: list[Entry]) -> None:
        if not entries:
            return
        try:
            rows, _ = self._store.store_offline_rows(
                self.user_id, [e.payload.decode() for e in entries],
                self.caps.keep, self.caps.keep_bytes)
        except StoreUnavailable as exc:
            # Nowhere to queue but memory: over the window rather than lost.
            log.warning("user %d: storage unavailable, sending over the window: %s",
                        self.user_id, exc)
            in_flight = {id(e) for e in self.inflight}  # by identity: an Entry is mutable
            for entry in entries:
                if id(entry) not in in_flight:
                    self._push(entry)
            return
        for entry, row in zip(entries, rows, strict=True):
            entry.row = row  # those in flight are now stored too

    def _refill(self) -> None:
        """Page stored messages out while the window has room.

        A paging episode starts from the oldest row (``_cursor`` 0), passing
        over the rows already in flight, and then goes on above the last row
        it sent, so a long backlog costs one short query per page.
        """
        while self.backlog and not self.closed and not self._full():
            in_flight = ({e.row for e in self.inflight if e.row} | set(self._undeleted)
                         if not self._cursor else set())
            room = max(self.caps.window - len(self.inflight), 1) if self.acking else PAGE
            limit = room + len(in_flight)
            try:
                page = self._store.offline_page(self.user_id, limit, self._cursor)
            except StoreUnavailable as exc:
                log.warning("user %d: stored messages postponed: %s", self.user_id, exc)
                return
            if len(page) < limit:
                self.backlog = False  # storage holds nothing beyond this page
            for row, text in page:
                if row in in_flight:
                    continue
                if self._full():
                    self.backlog = True  # this one and the rest wait for the next page
                    return
                self._push(Entry.from_stored(row, text))
                self._cursor = row
        if not self.backlog:
            self._cursor = 0

    def _forget_stored(self, rows: list[int]) -> None:
        if self._undeleted:
            rows = [*self._undeleted, *rows]
        if not rows:
            return
        try:
            self._store.delete_offline(self.user_id, rows)
            self._undeleted = ()
        except StoreUnavailable as exc:
            # Delivered but still stored: retried with the next delete or at
            # close, else delivered again at the next login (never lost).
            self._undeleted = tuple(rows)
            log.warning("user %d: %d delivered message(s) not deleted yet: %s",
                        self.user_id, len(rows), exc)
