"""The outbox over a real SQLite store, with a list standing in for the connection."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from chat.bus import LocalBus
from chat.outbox import Caps, Entry, Outbox
from chat.protocol import MsgId
from chat.router import Router
from chat.session import Session
from chat.store import Store, StoreUnavailable, open_store

USER = 7


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'chat.db'}", password_cost=4)
    yield s
    s.close()


class Wire:
    """What the outbox sent, and what it handed back for storage or receipts."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.queued = 0
        self.receipts: list[tuple[int, int]] = []
        self.unstored: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.frames.append(orjson.loads(data))


def outbox(store: Store, wire: Wire, acking: bool, window: int = 2) -> Outbox:
    return Outbox(USER, acking, b"\n", wire.send, lambda: wire.queued, store,
                  lambda items: store.store_offline_many([(u, p.decode()) for u, p in items]),
                  lambda _to, receipts: wire.receipts.extend(receipts),
                  Caps(window=window), lambda _u, payloads: wire.unstored.extend(payloads))


def live(mid: int, sender: int = 1, kind: int = 5) -> Entry:
    payload = orjson.dumps({"msgid": kind, "id": sender, "msg": f"m{mid}", "mid": mid})
    return Entry(mid, sender, kind, payload)


def stored_mids(store: Store) -> list[int]:
    return [orjson.loads(text)["mid"] for _, text in store.offline_page(USER, 100)]


def test_over_the_window_the_live_ones_in_flight_are_stored_first(store: Store) -> None:
    wire = Wire()
    box = outbox(store, wire, acking=True)
    for mid in (1, 2, 3, 4):
        box.deliver(live(mid))
    assert [f["mid"] for f in wire.frames] == [1, 2]  # the window
    assert stored_mids(store) == [1, 2, 3, 4]  # 1 and 2 go in ahead of 3, in order
    box.close()  # nothing acknowledged: storage has it all, once
    assert stored_mids(store) == [1, 2, 3, 4]


def test_acknowledgements_delete_page_in_and_send_receipts(store: Store) -> None:
    wire = Wire()
    box = outbox(store, wire, acking=True)
    for mid in (1, 2, 3, 4, 5):
        box.deliver(live(mid, sender=mid * 10))
    box.ack(2)
    assert wire.receipts == [(10, 1), (20, 2)]
    assert stored_mids(store) == [3, 4, 5]
    assert [f["mid"] for f in wire.frames] == [1, 2, 3, 4]
    assert wire.frames[2]["stored"] is True  # from storage now
    box.ack(99)  # never delivered here: nothing happens
    box.ack(4)
    assert [f["mid"] for f in wire.frames] == [1, 2, 3, 4, 5]
    box.ack(5)
    assert stored_mids(store) == [] and not box.backlog
    box.deliver(live(6))  # storage drained: live again, straight to the wire
    assert wire.frames[-1] == {"msgid": 5, "id": 1, "msg": "m6", "mid": 6}


def test_close_stores_what_came_live_and_was_not_confirmed(store: Store) -> None:
    wire = Wire()
    box = outbox(store, wire, acking=True, window=10)
    for mid in (1, 2, 3):
        box.deliver(live(mid))
    box.ack(1)
    box.close()
    assert stored_mids(store) == [2, 3]
    box.deliver(live(4))  # after the close: stored behind them
    assert stored_mids(store) == [2, 3, 4]


def test_without_acks_written_means_delivered(store: Store) -> None:
    wire = Wire()
    box = outbox(store, wire, acking=False)
    store.store_offline_rows(USER, [orjson.dumps({"msgid": 5, "mid": m}).decode()
                                    for m in (1, 2)])
    box.start_backlog(2)
    assert [f["mid"] for f in wire.frames] == [1, 2]
    box.on_written()
    assert stored_mids(store) == []
    box.deliver(live(3))
    box.close(gone=False)  # a logout: the queued message is still written
    assert stored_mids(store) == []
    box = outbox(store, wire, acking=False)
    box.deliver(live(4))
    box.close(gone=True)  # the connection is gone: what was not written is kept
    assert stored_mids(store) == [4]


def test_a_kick_brings_stored_messages_out_ahead_of_new_live_ones(store: Store) -> None:
    wire = Wire()
    box = outbox(store, wire, acking=True, window=10)
    box.deliver(live(1, sender=1))
    # Another sender raced the login: it found the user offline and stored.
    store.store_offline(USER, live(2, sender=2).payload.decode())
    box.kick()
    box.deliver(live(3, sender=1))
    assert [f["mid"] for f in wire.frames] == [1, 2, 3]
    box.close()
    # Each once; sender 1's in its order (the kick stored 1 behind the racing 2).
    assert sorted(stored_mids(store)) == [1, 2, 3]
    assert [m for m in stored_mids(store) if m != 2] == [1, 3]


class _NoRows:
    """The store, but storing a spill fails as when the database is down."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def store_offline_rows(self, *args: object, **kwargs: object) -> object:
        raise StoreUnavailable("simulated outage")


def test_with_storage_down_a_full_window_sends_rather_than_loses(store: Store) -> None:
    wire = Wire()
    box = outbox(store, wire, acking=True)
    box._store = _NoRows(store)  # type: ignore[assignment]
    for mid in (1, 2, 3):
        box.deliver(live(mid))
    assert [f["mid"] for f in wire.frames] == [1, 2, 3]  # over the window, each once
    assert [e.mid for e in box.inflight] == [1, 2, 3]


def test_without_acks_a_full_queue_sends_messages_to_storage(store: Store) -> None:
    wire = Wire()
    box = Outbox(USER, False, b"\n", wire.send, lambda: wire.queued, store,
                 lambda items: store.store_offline_many([(u, p.decode()) for u, p in items]),
                 lambda _to, receipts: None, Caps(push_limit=4096), lambda _u, _p: None)
    big = b"x" * 600
    sent = 0
    for mid in range(1, 21):  # the client reads nothing: the queue only grows
        entry = Entry(mid, 1, 5, orjson.dumps({"msgid": 5, "id": 1, "msg": big.decode(),
                                               "mid": mid}))
        box.deliver(entry)
        if len(wire.frames) > sent:
            sent = len(wire.frames)
            wire.queued += len(entry.payload) + 1
    assert 0 < sent < 20 and box.backlog
    assert wire.queued < 4096 + 700  # over the limit by one message at most
    assert stored_mids(store) == list(range(1, 21))  # unconfirmed ones first, in order
    wire.queued = 0
    box.on_written()  # drained: those written are confirmed, the rest come out in order
    assert [f["mid"] for f in wire.frames][sent:sent + 3] == [sent + 1, sent + 2, sent + 3]
    assert stored_mids(store)[0] == sent + 1


def test_an_entry_from_the_bus_keeps_its_bytes_and_refuses_what_is_not_a_json_object() -> None:
    payload = b'{"msgid":5,"id":7,"to":8,"msg":"\xc3\xa9","mid":99}'
    entry = Entry.from_payload(0, payload)
    assert (entry.mid, entry.sender, entry.kind, entry.payload) == (99, 7, 5, payload)
    for bad in (b'{"msg":"\xff"}', b"[1,2]", b"not json", b""):
        with pytest.raises(ValueError):
            Entry.from_payload(0, bad)


def test_a_message_kept_in_memory_is_stored_before_a_newer_one_for_its_user(
        store: Store) -> None:
    """The soak's order check found a newer message stored ahead of one that a
    login, closing while the database was down, had kept in memory."""
    router = Router(store, LocalBus(), None, None)
    router.keep_unstored(USER, [orjson.dumps({"msgid": 5, "mid": 1})])
    router.store_offline([(USER + 1, orjson.dumps({"msgid": 5, "mid": 9})),
                          (USER, orjson.dumps({"msgid": 5, "mid": 2}))])
    assert [orjson.loads(t)["mid"] for _, t in store.offline_page(USER, 10)] == [1, 2]
    router.store_unstored(USER)  # nothing was left behind to store twice
    assert len(store.offline_page(USER, 10)) == 2


class _Refusing:
    """The store, refusing offline messages while ``down`` (the database's outage)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = True

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def store_offline_many(self, *args: object, **kwargs: object) -> object:
        if self.down:
            raise StoreUnavailable("simulated outage")
        return self._store.store_offline_many(*args, **kwargs)  # type: ignore[arg-type]


def test_what_was_kept_stays_ahead_when_storing_it_fails_again(store: Store) -> None:
    refusing = _Refusing(store)
    router = Router(refusing, LocalBus(), None, None)  # type: ignore[arg-type]
    def frame(mid: int) -> bytes:
        return orjson.dumps({"msgid": 5, "mid": mid})

    router.keep_unstored(USER, [frame(1)])
    with pytest.raises(StoreUnavailable):
        router.store_offline([(USER, frame(2))])  # 2 is refused (its sender is told so)
    router.keep_unstored(USER, [frame(3)])  # kept meanwhile: after 1, not before it
    refusing.down = False
    router.store_offline([(USER, frame(4))])
    assert [orjson.loads(t)["mid"] for _, t in store.offline_page(USER, 10)] == [1, 3, 4]


class _LastConnection:
    """A logged-out user's connection whose loop has not yet run what was posted."""

    def __init__(self, outbox: Outbox) -> None:
        self.context = Session(post=self.post)
        self.context.outbox = outbox
        self.queue: list[Callable[[], None]] = []

    def post(self, cb: Callable[[], None]) -> None:
        self.queue.append(cb)

    def run(self, cb: Callable[[], None]) -> None:
        self.queue.append(cb)  # another thread's call: behind what is queued

    def owned_here(self) -> bool:
        return False

    def talks_to(self, peer: object) -> None: ...

    def run_queue(self) -> None:
        while self.queue:
            self.queue.pop(0)()


def test_what_comes_for_a_leaving_user_is_stored_in_order_before_leave_returns(
        store: Store) -> None:
    router = Router(store, LocalBus(), None, None)
    box = outbox(store, Wire(), acking=False)
    conn = _LastConnection(box)
    router.attach(USER, conn)  # type: ignore[arg-type]
    router.deliver_many([(USER, live(1).payload)])  # on its way to the connection
    box.close(gone=True)
    assert router.detach(USER, conn)  # type: ignore[arg-type]
    # After the detach: from the bus and from a sender here, behind the first.
    router.deliver_many([(USER, live(2).payload)])
    assert router.send_live(USER, live(3))
    assert router.send_live_many([USER], live(4, kind=9)) == []  # a group's: the same way
    assert stored_mids(store) == []
    left: list[bool] = []
    leaving = threading.Thread(target=lambda: left.append(router.leave(USER, 10)))
    leaving.start()
    assert not _joined(leaving, 0.05)  # waits for the connection's loop
    conn.run_queue()
    assert _joined(leaving, 10) and left == [True]
    assert stored_mids(store) == [1, 2, 3, 4]
    router.released(USER)
    router.deliver_many([(USER, live(5).payload)])  # gone: stored at once
    assert stored_mids(store) == [1, 2, 3, 4, 5] and conn.queue == []


def test_leave_gives_up_after_its_timeout(store: Store) -> None:
    router = Router(store, LocalBus(), None, None)
    conn = _LastConnection(outbox(store, Wire(), acking=False))
    router.attach(USER, conn)  # type: ignore[arg-type]
    assert router.detach(USER, conn)  # type: ignore[arg-type]
    assert router.leave(USER, 0.01) is False
    assert router.leave(USER, 0.01) is True  # nothing is leaving any more


def test_a_leave_waits_no_more_once_the_router_is_closed(store: Store) -> None:
    # At shutdown the loops quit and may never run what leave posted: the
    # releasing thread must not sit out LEAVE_WAIT per user (nor log it later).
    router = Router(store, LocalBus(), None, None)
    conns = [_LastConnection(outbox(store, Wire(), acking=False)) for _ in range(2)]
    for user, conn in zip((USER, USER + 1), conns, strict=True):
        router.attach(user, conn)  # type: ignore[arg-type]
        assert router.detach(user, conn)  # type: ignore[arg-type]
    left: list[bool] = []
    leaving = threading.Thread(target=lambda: left.append(router.leave(USER, 60)), daemon=True)
    leaving.start()
    assert not _joined(leaving, 0.05)  # the connection's loop never runs
    router.close()
    assert _joined(leaving, 10) and left == [True]
    assert router.leave(USER + 1, 60) is True and conns[1].queue == []  # nothing posted


class _Sender(_LastConnection):
    """A sender's connection here, whose sends are kept."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__(outbox)
        self.sent: list[dict[str, object]] = []

    def send(self, data: bytes) -> None:
        self.sent.append(orjson.loads(data))


def test_a_receipt_reaches_an_acking_sender_here_until_its_outbox_closes(store: Store) -> None:
    router = Router(store, LocalBus(), None, None)
    acking, plain = _Sender(outbox(store, Wire(), acking=True)), \
        _Sender(outbox(store, Wire(), acking=False))
    router.attach(1, acking)  # type: ignore[arg-type]
    router.attach(2, plain)  # type: ignore[arg-type]
    router.send_receipts(USER, [(1, 3), (2, 4), (99, 5)])  # 99: logged in nowhere, dropped
    assert acking.sent == [{"msgid": MsgId.RECEIPT, "mid": 3, "to": USER}]
    assert plain.sent == []  # a login without acknowledgements gets no receipts
    acking.context.outbox.close()  # type: ignore[union-attr]
    router.send_receipts(USER, [(1, 6)])  # its login ended, the map not yet told
    assert len(acking.sent) == 1


def _joined(thread: threading.Thread, timeout: float) -> bool:
    thread.join(timeout)
    return not thread.is_alive()


class _LaterBus(LocalBus):
    """A bus that publishes later, as the cluster's does: the caller hands off."""

    later = True


def test_a_message_on_its_way_back_through_redis_is_not_overtaken(store: Store) -> None:
    # Handed off before the user's login here attached it, published after its
    # subscription: it comes back through Redis, and the sender's next
    # message must follow it there instead of going straight to the outbox.
    router = Router(store, _LaterBus(), None, None)
    wire = Wire()
    conn = _LastConnection(outbox(store, wire, acking=False))
    router.attach(USER, conn)  # type: ignore[arg-type]
    router.returning([USER, USER + 1], sender=1, mid=1)  # the sender's landed handoff
    assert router.send_live(USER, live(9, sender=2)) is True  # another sender's goes on
    assert router.send_live(USER, live(2)) is False  # the caller hands it off too
    router.deliver_many([(USER, live(1).payload), (USER, live(2).payload)])
    conn.run_queue()
    router.returning([USER], sender=1, mid=2)  # landed after it came back: nothing waits
    assert [f["mid"] for f in wire.frames] == [9, 1, 2]
    assert router.send_live(USER, live(3)) is True  # both back: the direct way again
    conn.run_queue()
    assert [f["mid"] for f in wire.frames] == [9, 1, 2, 3]


def test_a_single_delivery_from_the_bus_ends_the_wait_as_a_batch_does(store: Store) -> None:
    # A bus started without deliver_many delivers one message at a time.
    router = Router(store, _LaterBus(), None, None)
    wire = Wire()
    conn = _LastConnection(outbox(store, wire, acking=False))
    router.attach(USER, conn)  # type: ignore[arg-type]
    router.returning([USER], sender=1, mid=1)
    assert router.send_live(USER, live(2)) is False  # waits behind 1
    router.deliver_from_bus(USER, live(1).payload)
    router.deliver_from_bus(USER, live(2).payload)
    conn.run_queue()
    assert router.send_live(USER, live(3)) is True  # 1 came back: the direct way again
    conn.run_queue()
    assert [f["mid"] for f in wire.frames] == [1, 2, 3]
