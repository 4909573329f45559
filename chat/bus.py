"""Routing of messages to users who are not connected to this process.

The service first looks a recipient up in its own online map.  Only when the
recipient is not connected here does it ask the bus: ``publish(user_id,
payload)`` returns True when another process holds the user and took the
message, False when nobody does (the service then stores the message
offline).  A process announces the users it holds with ``subscribe`` and
``unsubscribe``; messages published to them by other processes come back
through the ``deliver(user_id, payload)`` callback given to ``start``.

`LocalBus` is the single-process router: there is no other process, so a
user who is not connected here is offline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Deliver = Callable[[int, bytes], None]


class Bus(Protocol):
    def start(self, deliver: Deliver) -> None:
        """Begin routing; ``deliver`` may be called from any thread."""

    def subscribe(self, user_id: int) -> None:
        """This process now holds ``user_id``.  Safe from any thread."""

    def unsubscribe(self, user_id: int) -> None:
        """This process no longer holds ``user_id``.  Safe from any thread."""

    def publish(self, user_id: int, payload: bytes) -> bool:
        """Hand ``payload`` to whichever process holds ``user_id``; False if none."""

    def close(self) -> None:
        """Stop routing and release resources."""


class LocalBus:
    """The in-process router: one process is the whole system."""

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def subscribe(self, user_id: int) -> None:
        pass

    def unsubscribe(self, user_id: int) -> None:
        pass

    def publish(self, user_id: int, payload: bytes) -> bool:
        return False

    def close(self) -> None:
        pass
