"""An address whose connects hang: a host that does not answer, on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def unanswered_address() -> Iterator[tuple[str, int]]:
    """A listener with a backlog of 0 that never accepts, its one slot taken:
    a new connect to it waits until it times out, unlike a closed port,
    which refuses at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    filler = socket.create_connection(address)
    try:
        yield address
    finally:
        filler.close()
        listener.close()
