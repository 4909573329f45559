"""Acknowledged delivery on the client's side, as pure logic plus one timer thread.

Theory of operation (PROTOCOL.md, "Message ids, acknowledged delivery and
receipts").  The client logs in with ``"ack": true``; every chat message the
server then delivers carries a ``mid``.  ``{"msgid":17,"mid":M}`` confirms
every message delivered on this connection up to and including the one with
``mid`` M, so the client acknowledges the mid of the *last message it
received*, in arrival order (mids of different senders are not ordered
among themselves), and never one per message: `AckBatcher` lets at most
``every`` messages, or ``delay`` seconds after the first unconfirmed one,
go by before an acknowledgement, whichever comes first.

After a reconnect the server delivers again what was not acknowledged, with
the same mids, so `RecentMids` remembers the last few thousand mids and the
client shows a repeat only once (it still acknowledges it).

`SentMessages` remembers what this client sent, by mid, so that a receipt
(``{"msgid":18,"mid":M,"to":R}``) can name the message it is about: a
terminal cannot put the ✓✓ on the line printed when the message was sent, so
the receipt is a short line of its own that quotes the message.

A server that ignores ``"ack"`` sends no mids: nothing is deduplicated and
nothing acknowledged.

`Acknowledger` is the thread that sends the acknowledgements when the batch
timer runs out; `AckBatcher` and `RecentMids` are pure and not thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["AckBatcher", "Acknowledger", "RecentMids", "SentMessages"]

ACK_EVERY = 32
ACK_DELAY = 0.1
RECENT_MIDS = 4096
SENT_REMEMBERED = 1024


class AckBatcher:
    """Decides when to acknowledge, and which mid.  Pure: time is passed in."""

    def __init__(self, every: int = ACK_EVERY, delay: float = ACK_DELAY) -> None:
        self.every = every
        self.delay = delay
        self._last_mid: int | None = None
        self._unconfirmed = 0
        self._since: float | None = None

    def received(self, mid: int, now: float) -> int | None:
        """Note a delivered message; the mid to acknowledge at once, if the batch is full."""
        self._last_mid = mid
        self._unconfirmed += 1
        if self._since is None:
            self._since = now
        return self.take() if self._unconfirmed >= self.every else None

    def deadline(self) -> float | None:
        """When the pending acknowledgement is due; None when there is none."""
        return None if self._since is None else self._since + self.delay

    def due(self, now: float) -> int | None:
        """The mid to acknowledge if the timer has run out, else None."""
        deadline = self.deadline()
        return self.take() if deadline is not None and now >= deadline else None

    def take(self) -> int | None:
        """The mid to acknowledge now (None if nothing is unconfirmed); starts a new batch."""
        mid = self._last_mid if self._unconfirmed else None
        self._unconfirmed = 0
        self._since = None
        return mid

    def reset(self) -> None:
        """Forget everything (a new login: the old connection's mids mean nothing)."""
        self._last_mid = None
        self.take()


class RecentMids:
    """A bounded set of the mids seen last: ``repeat(mid)`` is True the second time."""

    def __init__(self, capacity: int = RECENT_MIDS) -> None:
        self.capacity = capacity
        self._order: deque[int] = deque()
        self._set: set[int] = set()

    def repeat(self, mid: int) -> bool:
        if mid in self._set:
            return True
        self._order.append(mid)
        self._set.add(mid)
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._order)


class SentMessages:
    """What this client sent, by mid, for the receipt lines.  Bounded: oldest go first.

    The main thread adds (from the CHAT_MSG_ACK), the reader thread takes (at
    the RECEIPT), so the map is guarded by a lock.
    """

    def __init__(self, capacity: int = SENT_REMEMBERED) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._sent: OrderedDict[int, tuple[int, str]] = OrderedDict()

    def sent(self, mid: int, to: int, text: str) -> None:
        with self._lock:
            self._sent[mid] = (to, text)
            if len(self._sent) > self.capacity:
                self._sent.popitem(last=False)

    def take(self, mid: object) -> tuple[int, str] | None:
        """(recipient, text) of message ``mid``, forgotten from now on; None if unknown."""
        if type(mid) is not int:
            return None
        with self._lock:
            return self._sent.pop(mid, None)


class Acknowledger:
    """Sends the batched acknowledgements; ``received`` is called by the reader thread.

    ``send_ack(mid)`` is called without the lock held, from this object's
    thread (timer) or from the caller of ``received``/``flush`` (full batch).
    """

    def __init__(
        self,
        send_ack: Callable[[int], None],
        batcher: AckBatcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send_ack = send_ack
        self._batcher = batcher or AckBatcher()
        self._clock = clock
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="acknowledger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def received(self, mid: int) -> None:
        with self._cond:
            now_due = self._batcher.received(mid, self._clock())
            self._cond.notify()
        if now_due is not None:
            self._send_ack(now_due)

    def flush(self) -> None:
        """Acknowledge what was received so far, now (before a logout)."""
        with self._cond:
            mid = self._batcher.take()
        if mid is not None:
            self._send_ack(mid)

    def reset(self) -> None:
        with self._cond:
            self._batcher.reset()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                mid = self._wait_due()
                if mid is None:
                    return
            self._send_ack(mid)

    def _wait_due(self) -> int | None:
        """Under the lock: block until an acknowledgement is due; None once stopped."""
        while not self._stopped:
            deadline = self._batcher.deadline()
            now = self._clock()
            if deadline is not None and now >= deadline:
                return self._batcher.due(now)
            self._cond.wait(None if deadline is None else deadline - now)
        return None
