"""Publishing chat for other servers in pipelines: the batching rule, and a loop's round.

`one_per_user` is the rule both publishers follow (the publisher thread in
`chat.redisbus` and a loop's `LoopRound`): a pipeline holds at most one
message per recipient, none for a recipient whose previous message is still
in flight, and a recipient's later messages wait behind the first of its
that waits, so its messages leave in the order they were handed off.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from chat import metrics
from chat.bus import Handoff
from chat.redisbus.links import RawPublisher, connect_off_loop, pack_publish, receive

if TYPE_CHECKING:
    from chat.redisbus import RedisBus

PUBLISH_TIMEOUT = 0.5  # socket timeouts of the publishing connections
PIPELINE_MAX = 256  # messages in one pipeline
SCAN_MAX = 4 * PIPELINE_MAX  # queued messages looked at to fill one pipeline


def one_per_user(pending: deque[tuple[Handoff, int]], busy: set[int] | None = None
                  ) -> tuple[list[tuple[Handoff, int]], deque[tuple[Handoff, int]]]:
    """The next pipeline and what waits: in queue order, at most one message per
    user and ``PIPELINE_MAX`` in all, none for a user in ``busy`` (a message in
    flight); a user's later messages all wait behind the first that waits
    (looking at no more than ``SCAN_MAX`` of the queue)."""
    batch: list[tuple[Handoff, int]] = []
    rest: deque[tuple[Handoff, int]] = deque()
    seen: set[int] = set(busy) if busy else set()
    scanned = 0
    while pending:
        item = pending.popleft()
        user_id = item[0].items[item[1]][0]
        if user_id in seen:
            rest.append(item)
        else:
            seen.add(user_id)
            batch.append(item)
            if len(batch) >= PIPELINE_MAX:
                break
        scanned += 1
        if scanned >= SCAN_MAX:
            break
    rest.extend(pending)
    return batch, rest


class LoopHooks(Protocol):
    """What `LoopRound` uses of a reactor loop (``reactor.EventLoop``), from its thread."""

    def call_before_poll(self, cb: Callable[[], None]) -> None: ...

    def register(self, fileobj: Any, events: int, handler: Callable[[int], None]) -> None: ...

    def unregister(self, fileobj: Any) -> None: ...

    def run_after(self, delay: float, cb: Callable[[], None]) -> object: ...


class LoopRound:
    """A loop thread's chat for other servers: published when the loop's round
    ends, read back when Redis answers, and never waited for.

    ``add`` queues a handoff's messages; before the loop polls again, ``_send``
    writes one pipeline (at most one message per recipient, and none for a
    recipient whose earlier message is still in flight) on the loop's own
    connection, which the loop watches as it watches its clients.  Replies
    come back in order; once a pipeline's are all in, ``_replies`` settles
    it as the publisher thread does (``RedisBus._finish``: stored what nobody
    took, then each finished handoff's ``done``), and only then may the next
    message for one of its recipients go.  A connection that fails or has not
    answered within ``PUBLISH_TIMEOUT`` fails everything in flight, as a failed
    pipeline does (stored, ``_unflushed``, the circuit opens); the next round
    connects again.  Every connection, the first (made as the round is, when
    the loop is attached) included, is made on a thread of its own (what
    waits is sent once it is done, or stored if it fails), so a Redis host
    that does not answer never holds the loop up for the connect timeout.
    Loop thread only.
    """

    def __init__(self, bus: RedisBus, loop: LoopHooks, raw: RawPublisher) -> None:
        self._bus = bus
        self._loop = loop
        self._address, self._setup = raw.address, raw.setup
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._pending: deque[tuple[Handoff, int]] = deque()
        # pipelines sent and not answered: (batch, counts, indexes sent, when)
        self._inflight: deque[tuple[list[tuple[Handoff, int]], list[int], list[int], float]] \
            = deque()
        self._busy: set[int] = set()  # recipients with a message in flight
        self._got: list[object] = []  # the oldest pipeline's replies so far
        self._due = False  # a _send is queued before the next poll
        self._timer = False  # a timeout check is armed
        self._connecting = False
        self._connect_elsewhere()

    def add(self, handoff: Handoff) -> None:
        self._pending.extend((handoff, i) for i in range(len(handoff.items)))
        self._schedule()

    def _schedule(self) -> None:
        if not self._due:
            self._due = True
            self._loop.call_before_poll(self._send)

    def _send(self) -> None:
        self._due = False
        if not self._pending:
            return
        if self._sock is None and time.monotonic() >= self._bus._circuit_until:
            self._connect_elsewhere()  # what is pending waits for it, the loop does not
            return
        batch, self._pending = one_per_user(self._pending, self._busy)
        if not batch:
            return  # each waits for its recipient's reply
        bus = self._bus
        counts, sent, messages = bus._outgoing(batch)
        if messages and time.monotonic() < bus._circuit_until:
            bus._failed(batch)
            messages = []
        if not messages:
            bus._finish(batch, counts)
            if self._pending:
                self._schedule()
            return
        sock = self._sock
        assert sock is not None  # else the circuit is open and nothing is sent
        try:
            sock.sendall(pack_publish(messages))
        except (OSError, RedisError) as exc:
            self._drop(exc)
            bus._broke(f"pipelined publish of {len(messages)}", exc)
            bus._failed(batch)
            bus._finish(batch, counts)
            if self._pending:
                self._schedule()
            return
        self._inflight.append((batch, counts, sent, time.monotonic()))
        self._busy.update(handoff.items[i][0] for handoff, i in batch)
        if not self._timer:
            self._timer = True
            self._loop.run_after(PUBLISH_TIMEOUT, self._check)
        if self._pending and len(batch) >= PIPELINE_MAX:
            self._schedule()

    def _connect_elsewhere(self) -> None:
        """Connect on a thread of its own; done, the loop sends what waited,
        or, failed, stores it (the circuit is open)."""
        if self._connecting:
            return
        self._connecting = True
        connect_off_loop(self._loop.run_after, self._address, self._setup, PUBLISH_TIMEOUT,
                         self._adopted, self._not_connected, "redis-pub-connect")

    def _adopted(self, sock: socket.socket, reader: Any) -> None:
        self._connecting = False
        self._sock, self._reader = sock, reader
        self._loop.register(sock, selectors.EVENT_READ, self._replies)
        self._schedule()

    def _not_connected(self, exc: BaseException) -> None:
        self._connecting = False
        self._bus._broke("connecting to publish", exc)
        self._schedule()

    def _replies(self, _mask: int) -> None:
        """The loop: Redis answered; settle every pipeline whose replies are all in."""
        sock = self._sock
        if sock is None:
            return
        try:
            data = receive(sock)
        except OSError as exc:
            self._fail_all(exc)
            return
        if data is None:
            return
        reader = self._reader
        reader.feed(data)
        bus, got, inflight = self._bus, self._got, self._inflight
        while inflight:
            batch, counts, sent, sent_at = inflight[0]
            while len(got) < len(sent) and (reply := reader.gets()) is not False:
                got.append(reply)
            if len(got) < len(sent):
                break
            inflight.popleft()
            metrics.REDIS_PUBLISH.observe(time.monotonic() - sent_at)
            for k, n in zip(sent, got, strict=True):
                counts[k] = n if type(n) is int else 0  # an error reply: nobody took it
            got.clear()
            self._busy.difference_update(handoff.items[i][0] for handoff, i in batch)
            bus._finish(batch, counts)
        if self._pending:
            self._schedule()

    def _check(self) -> None:
        """Timer: a pipeline unanswered for ``PUBLISH_TIMEOUT`` fails the connection."""
        self._timer = False
        if not self._inflight:
            return
        waited = time.monotonic() - self._inflight[0][3]
        if waited >= PUBLISH_TIMEOUT:
            self._fail_all(TimeoutError(f"no answer from Redis in {waited:.1f} s"))
        else:
            self._timer = True
            self._loop.run_after(PUBLISH_TIMEOUT - waited, self._check)

    def _fail_all(self, exc: BaseException) -> None:
        """The connection failed: what is in flight is settled as not taken."""
        self._drop(exc)
        bus = self._bus
        bus._broke("pipelined publish", exc)
        inflight, self._inflight = self._inflight, deque()
        self._busy.clear()
        self._got = []
        for batch, counts, _, _ in inflight:
            bus._failed(batch)
            bus._finish(batch, [0] * len(counts))
        if self._pending:
            self._schedule()

    def _drop(self, exc: BaseException) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is None:
            return
        try:
            self._loop.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
