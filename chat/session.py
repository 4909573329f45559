"""Per-connection state and the connection interface the service relies on."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chat.limits import TokenBucket
from chat.outbox import Outbox
from chat.protocol import DEFAULT_MAX_FRAME, Dialect, FrameDecoder
from chat.proxyproto import ProxyHeaderReader


class Connection(Protocol):
    """What the business layer may do with a connection (reactor's TcpConnection)."""

    context: Any

    @property
    def name(self) -> str: ...

    @property
    def peer_address(self) -> Any: ...

    @property
    def connected(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    def run(self, cb: Callable[[], None]) -> None: ...

    def post(self, cb: Callable[[], None]) -> None: ...

    def owned_here(self) -> bool: ...

    def queued_bytes(self) -> int: ...

    def talks_to(self, peer: Any) -> None: ...

    def talks_to_loop(self, loop: Any) -> None: ...

    def set_write_complete_callback(self, cb: Callable[[Any], None] | None) -> None: ...

    def shutdown(self) -> None: ...

    def force_close(self) -> None: ...


@dataclass(slots=True)
class Session:
    """What the server knows about one connection; kept in ``conn.context``.

    ``post`` runs a callable in the connection's own loop thread (the entry
    point wires it to the connection's ``post``, which follows the
    connection when it moves to another loop), so work that must not
    interleave with the connection's handlers, such as the rest of a request
    a worker thread did, can be sent there from other threads.
    """

    post: Callable[[Callable[[], None]], None]
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(DEFAULT_MAX_FRAME))
    bucket: TokenBucket | None = None  # request rate limit; None: unlimited
    # The client's address: the socket's peer, or what the PROXY header said
    # (``proxy_reader`` waits for that header, with --proxy-protocol).
    peer_host: str = ""
    proxy_reader: ProxyHeaderReader | None = None
    user_id: int | None = None
    name: str | None = None
    refused: int = 0  # requests refused for the rate, in a row
    # A request of this connection waits for a worker (chat/workers.py): the
    # frames decoded behind it and the bytes read since wait here, in order.
    # Both made only when used: an empty list and bytearray, kept by every
    # idle connection, would cost it 112 bytes.
    suspended: bool = False
    waiting: Sequence[Any] = ()
    held: bytearray | None = None
    rate_noted: bool = False  # "over the rate" was logged: one line a connection
    opened: float = field(default_factory=time.monotonic)
    # Idle means no complete frame: a trickle of bytes that never ends a frame
    # must not hold a connection open, so only a terminator refreshes this.
    last_seen: float = 0.0  # of the last complete frame; __post_init__ sets it
    read_at: float = 0.0  # of the last read: the rate clock; __post_init__ sets it
    closing_since: float | None = None  # told to go (idle, full, slow): closed soon
    backlogged_since: float | None = None  # over the high-water mark since then
    outbox: Outbox | None = None  # this login's chat messages on their way out

    def __post_init__(self) -> None:
        self.last_seen = self.read_at = self.opened  # one float, not three

    @property
    def legacy(self) -> bool:
        return self.decoder.dialect is _LEGACY

    @property
    def terminator(self) -> bytes:
        return b"\0" if self.decoder.dialect is _LEGACY else b"\n"


_LEGACY = Dialect.LEGACY  # fetching an enum member costs ~150 ns on Python 3.11
