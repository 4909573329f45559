"""A byte buffer with a read index, like muduo's ``Buffer``.

Readable bytes live in ``_buf[_read:]``; the write index is the end of
``_buf``, which grows by ``append``. Retrieving only moves the read index.
The dead prefix ``_buf[:_read]`` is dropped when the buffer empties (free)
or when it is both larger than ``_COMPACT_MIN`` and at least as large as the
live content, so each byte is moved O(1) times amortised and a stream of
small retrieves from a big buffer is never quadratic.

The usual life of a connection's input buffer is one read appended and all
of it retrieved at once, so a ``bytes`` appended to an empty buffer is kept
as it is, not copied (``_buf`` is then that immutable ``bytes``), and
``retrieve_all`` hands the same object back. The next append that finds
bytes there copies them into a ``bytearray`` first, as the buffer would
have done anyway.

A Buffer is not thread safe: it belongs to the connection's loop thread.
"""

from __future__ import annotations

import socket

__all__ = ["Buffer"]

_COMPACT_MIN = 4096


class Buffer:
    """Growable byte buffer with a read index. Loop thread only (not thread safe)."""

    __slots__ = ("_buf", "_read")

    def __init__(self, initial: bytes = b"") -> None:
        self._buf: bytes | bytearray = bytes(initial)
        self._read = 0

    def __len__(self) -> int:
        return len(self._buf) - self._read

    def __bool__(self) -> bool:
        return len(self._buf) > self._read

    def __repr__(self) -> str:
        return f"<Buffer readable={len(self)} dead={self._read}>"

    def readable_bytes(self) -> int:
        """Number of bytes available to read."""
        return len(self._buf) - self._read

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Append bytes at the write end; return the readable byte count."""
        buf = self._buf
        if not buf and type(data) is bytes:
            self._buf = data
            self._read = 0
            return len(data)
        if type(buf) is bytes:
            buf = bytearray(buf[self._read :] if self._read else buf)
            self._buf = buf
            self._read = 0
        buf += data
        return len(buf) - self._read

    def peek(self) -> bytes:
        """A copy of the readable bytes, without consuming them.

        A copy rather than a memoryview: a live view of a bytearray forbids
        resizing it, so a caller that kept one would make the next append fail.
        """
        return bytes(self._buf[self._read :]) if self._read else bytes(self._buf)

    def find(self, sep: bytes, start: int = 0) -> int:
        """Offset of ``sep`` relative to the read index, searching from ``start``; -1 if absent."""
        i = self._buf.find(sep, self._read + start)
        return -1 if i < 0 else i - self._read

    def retrieve(self, n: int) -> None:
        """Consume ``n`` readable bytes (all of them if ``n`` is larger)."""
        if n < 0:
            raise ValueError("negative retrieve")
        self._read += n
        if self._read >= len(self._buf):
            self._buf = b""
            self._read = 0
        elif self._read >= _COMPACT_MIN and self._read >= len(self._buf) - self._read:
            self._buf = self._buf[self._read :]
            self._read = 0

    def retrieve_all(self) -> bytes:
        """Return every readable byte and empty the buffer."""
        data = self._buf[self._read :] if self._read else self._buf
        self._buf = b""
        self._read = 0
        return data if type(data) is bytes else bytes(data)

    def retrieve_as_bytes(self, n: int) -> bytes:
        """Return and consume the next ``n`` bytes (fewer if fewer are readable)."""
        start = self._read
        data = bytes(self._buf[start : start + n])
        self.retrieve(len(data))
        return data

    def recv_from(self, sock: socket.socket, max_bytes: int = 65536) -> int:
        """``recv`` once into the buffer; return the byte count (0 means EOF).

        ``BlockingIOError`` and other ``OSError`` propagate to the caller.
        """
        data = sock.recv(max_bytes)
        self.append(data)
        return len(data)

    def send_to(self, sock: socket.socket) -> int:
        """``send`` once from the readable bytes, consume what was sent, return the count.

        The temporary memoryview is released before ``retrieve`` may resize.
        """
        view = memoryview(self._buf)[self._read :] if self._read else self._buf
        n = sock.send(view)
        del view  # release the export before retrieve() may resize the bytearray
        self.retrieve(n)
        return n
