"""What the server pushes, shown once and acknowledged in batches.  Reader thread.

Every frame that answers no request comes here (`Connection`'s ``on_push``):
chat from other users, receipts for this user's messages, errors without a
waiting request.  A chat message with a ``mid`` is counted towards the next
acknowledgement whether or not it is a repeat; a repeat (the server
delivering again after a reconnect) is not shown a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from chat.protocol import FrameError, Message, MsgId
from client import render
from client.delivery import RecentMids, SentMessages

__all__ = ["Inbox"]

_CHAT = frozenset({MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG})
MAX_MID = 2**63 - 1


class Inbox:
    def __init__(
        self,
        show: Callable[[str], None],
        acknowledge: Callable[[int], None],
        sent: SentMessages,
        recent: RecentMids | None = None,
    ) -> None:
        self._show = show
        self._acknowledge = acknowledge
        self._sent = sent
        self._recent = recent or RecentMids()
        self._lock = threading.Lock()
        self._held: list[str] | None = None  # lines kept back while a login is answered

    def hold(self) -> None:
        """Keep what is pushed from now on until `release` (main thread, before a
        login: its offline messages follow the ack at once, and belong after
        the login's own lines)."""
        with self._lock:
            self._held = []

    def release(self) -> None:
        """Show what was kept back, in order, and stop keeping (main thread)."""
        with self._lock:
            held, self._held = self._held or [], None
            for line in held:
                self._show(line)

    def _out(self, line: str) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(line)
                return
        self._show(line)

    def on_push(self, item: Message | FrameError) -> None:
        if isinstance(item, FrameError):
            self._out(render.push_line(item))
            return
        msgid = item.get("msgid")
        if msgid == MsgId.RECEIPT:
            self._out(render.receipt_line(item, self._sent.take(item.get("mid"))))
            return
        if msgid in _CHAT:
            mid = item.get("mid")
            if type(mid) is int and 0 < mid <= MAX_MID:
                repeat = self._recent.repeat(mid)
                self._acknowledge(mid)
                if repeat:
                    return
        self._out(render.push_line(item))
