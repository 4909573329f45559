"""Routing of messages to users who are not connected to this process.

The service first looks a recipient up in its own online map.  Only when the
recipient is not connected here does it ask the bus: ``publish(user_id,
payload)`` returns True when another process holds the user and took the
message, False when nobody does (the service then stores the message
offline).  A process announces the users it holds with ``subscribe`` and
``unsubscribe``; messages published to them by other processes come back
through the ``deliver(user_id, payload)`` callback given to ``start``.

A message stored offline because nobody seemed to hold the user may race
with the user logging in on another process, which may already have fetched
its offline messages: ``notify_stored`` asks whoever holds the user now to
flush them, which the bus passes on through the ``flush(user_id)`` callback.
``is_alive(server_id)`` tells login whether the process that holds a user
online is still running, so that a crashed process cannot lock its users out.

A bus that waits on a network (Redis) does every wait inside a
``blocking()`` context manager given to it, as the store does: the server
passes ``reactor.blocking`` so a loop thread waiting on Redis lets the
other loops run.

A bus whose ``later`` is true publishes chat asynchronously: the service
hands it a `Handoff` (one request's messages, one per recipient) and is
called back, from the thread that published it, once each message was either taken
by a holder or, nobody having taken it, given to the ``settle`` callback
(the router, which stores it offline) before anything published after it.
What arrives from other processes may come in batches (``deliver_many``:
``(user, payload)`` in arrival order, a payload of None asking to flush the
user's stored messages).

`LocalBus` is the single-process router: there is no other process, so a
user who is not connected here is offline.  `chat.redisbus.RedisBus` is the
cluster's (docs/cluster.md).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

Deliver = Callable[[int, bytes], None]
Flush = Callable[[int], object]
Blocking = Callable[[], AbstractContextManager[object]]
# (user, payload) in arrival order; a payload of None: flush the user's stored messages
DeliverMany = Callable[[list[tuple[int, bytes | None]]], None]
# (handoff, user, payload) that nobody took: stored (or refused) before the bus goes on
Settle = Callable[[list[tuple["Handoff", int, bytes]]], None]


class Handoff:
    """One request's messages for users not connected here, handed to a ``later`` bus.

    ``items`` are (user, payload), one per user.  The bus publishes each; for
    those nobody took it calls its ``settle`` callback (which stores them and
    counts ``stored``, or marks the handoff ``unknown`` or ``error``), in the
    thread that published them (a loop's round or the bus's publisher
    thread), before it publishes the next message for those users; once
    every item is settled it calls ``done(handoff)`` in that thread too.  A
    ``notice`` (a receipt) is best effort: one nobody took is dropped.
    """

    __slots__ = ("items", "done", "check", "notice", "reached", "stored", "unknown", "error",
                 "left")

    def __init__(self, items: list[tuple[int, bytes]],
                 done: Callable[[Handoff], None] | None = None, *,
                 check: bool = False, notice: bool = False) -> None:
        self.items = items
        self.done = done
        self.check = check  # a user nobody holds may not exist: look before storing
        self.notice = notice
        self.reached = 0  # items a holder took
        self.stored = 0  # items stored offline
        self.unknown = False  # a user that does not exist (``check``)
        self.error: Exception | None = None  # storing failed
        self.left = len(items)  # items not settled yet (the bus's thread only)


class Bus(Protocol):
    later: bool  # chat is handed off (``hand_off``), not published by ``publish``
    # The reactor loop that reads chat from other servers, if one does: a
    # connection that keeps handing chat off is best served there.
    home_loop: object | None

    def start(self, deliver: Deliver, flush: Flush | None = None,
              deliver_many: DeliverMany | None = None, settle: Settle | None = None) -> None:
        """Begin routing; the callbacks may be called from any thread.

        ``deliver_many``, if given, takes what arrives in batches instead of
        ``deliver`` and ``flush``; ``settle`` is what a ``later`` bus does with
        the handed-off messages nobody took.
        """

    def hand_off(self, handoff: Handoff) -> None:
        """Publish ``handoff``'s items later, in order per user (``later`` buses)."""

    def subscribe(self, user_id: int) -> None:
        """This process now holds ``user_id``.  Safe from any thread."""

    def unsubscribe(self, user_id: int) -> None:
        """This process no longer holds ``user_id``.  Safe from any thread.

        Returns once no message for the user can reach this process any more
        (each one that did was handed to ``deliver``), so that a login
        elsewhere after it does not share the user's messages with us.
        """

    def unsubscribe_many(self, user_ids: list[int]) -> None:
        """``unsubscribe`` each user, waiting for all at once."""

    def publish(self, user_id: int, payload: bytes) -> bool:
        """Hand ``payload`` to whichever process holds ``user_id``; False if none."""

    def publish_many(self, user_ids: list[int], payload: bytes) -> list[int]:
        """``publish`` to each user in one round trip; returns the users nobody took."""

    def notify_each(self, notices: list[tuple[int, bytes]]) -> None:
        """Best effort, in one round trip: each (user, payload) to whoever holds the user.

        For what may be dropped (receipts): a failure is not remembered, and
        nothing is stored for a user nobody holds.
        """

    def notify_stored(self, user_id: int) -> None:
        """A message for ``user_id`` was stored offline; its holder, if any, flushes."""

    def notify_stored_many(self, user_ids: list[int]) -> None:
        """``notify_stored`` for each user, in one round trip."""

    def is_alive(self, server_id: str) -> bool:
        """False only if ``server_id`` is known to have stopped (crashed)."""

    def close(self) -> None:
        """Stop routing and release resources."""


class LocalBus:
    """The in-process router: one process is the whole system."""

    later = False
    home_loop: object | None = None

    def start(self, deliver: Deliver, flush: Flush | None = None,
              deliver_many: DeliverMany | None = None, settle: Settle | None = None) -> None:
        pass  # nothing ever arrives from another process

    def hand_off(self, handoff: Handoff) -> None:
        raise NotImplementedError("LocalBus publishes nothing later")

    def subscribe(self, user_id: int) -> None:
        pass

    def unsubscribe(self, user_id: int) -> None:
        pass

    def unsubscribe_many(self, user_ids: list[int]) -> None:
        pass

    def publish(self, user_id: int, payload: bytes) -> bool:
        return False

    def publish_many(self, user_ids: list[int], payload: bytes) -> list[int]:
        return user_ids

    def notify_each(self, notices: list[tuple[int, bytes]]) -> None:
        pass  # nobody else holds anyone

    def notify_stored(self, user_id: int) -> None:
        pass  # the service already looked in its own online map

    def notify_stored_many(self, user_ids: list[int]) -> None:
        pass

    def is_alive(self, server_id: str) -> bool:
        return True  # no heartbeats without a cluster: never take a user over

    def close(self) -> None:
        pass
