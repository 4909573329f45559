"""A TCP connection owned by exactly one EventLoop (muduo's ``TcpConnection``).

Theory of operation
-------------------
States: CONNECTING -> CONNECTED -> (DISCONNECTING) -> DISCONNECTED.

* ``connect_established`` (loop thread) registers the socket for reading and
  calls the connection callback; ``handle_close`` (EOF, error, or
  ``force_close``) unregisters it, calls the connection callback again with
  ``connected == False`` and then the close callback, through which the
  owner (TcpServer) drops it and schedules ``connect_destroyed``, which
  closes the socket.
* Writing: ``send_in_loop`` tries ``sock.send`` at once when nothing is
  queued and appends what the kernel did not take to ``output_buffer``;
  only then is EVENT_WRITE added, and it is removed again as soon as
  ``handle_write`` drains the buffer. So an idle connection costs nothing
  and a busy one is not woken for writability it does not need.
* ``shutdown`` half-closes (SHUT_WR) once the output has drained, so queued
  data still reaches the peer; reading continues until the peer closes.
* Any ``OSError`` on the socket closes this connection only.

Thread contract: ``send``, ``shutdown``, ``force_close`` and the read-only
properties are safe from any thread; everything else is loop thread only.
"""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from reactor.buffer import Buffer
from reactor.eventloop import EventLoop

__all__ = [
    "CloseCallback",
    "ConnectionCallback",
    "HighWaterMarkCallback",
    "MessageCallback",
    "TcpConnection",
    "WriteCompleteCallback",
]

logger = logging.getLogger(__name__)

ConnectionCallback = Callable[["TcpConnection"], None]
CloseCallback = Callable[["TcpConnection"], None]
WriteCompleteCallback = Callable[["TcpConnection"], None]
MessageCallback = Callable[["TcpConnection", Buffer, float], None]
HighWaterMarkCallback = Callable[["TcpConnection", int], None]

_CONNECTING, _CONNECTED, _DISCONNECTING, _DISCONNECTED = range(4)
_STATE_NAMES = ("connecting", "connected", "disconnecting", "disconnected")
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_READ_WRITE = _READ | _WRITE
_RECV_SIZE = 65536
_DEFAULT_HIGH_WATER_MARK = 64 * 1024 * 1024


def default_connection_callback(conn: TcpConnection) -> None:
    """Log connection up/down at debug level."""
    logger.debug("%s is %s", conn.name, "up" if conn.connected else "down")


def default_message_callback(conn: TcpConnection, buf: Buffer, receive_time: float) -> None:
    """Discard the input (a server that set no message callback)."""
    buf.retrieve_all()


def _noop_close(conn: TcpConnection) -> None:
    pass


class TcpConnection:
    """One accepted (or connected) socket, owned by ``loop``."""

    def __init__(
        self, loop: EventLoop, name: str, sock: socket.socket, peer_address: Any
    ) -> None:
        sock.setblocking(False)
        self.loop = loop
        self.name = name
        self.peer_address = peer_address
        self.local_address: Any = sock.getsockname()
        self.context: Any = None
        self.input_buffer = Buffer()
        self.output_buffer = Buffer()
        self._sock = sock
        self._state = _CONNECTING
        self._writing = False
        self._registered = False
        self._high_water_mark = _DEFAULT_HIGH_WATER_MARK
        self._connection_cb: ConnectionCallback = default_connection_callback
        self._message_cb: MessageCallback = default_message_callback
        self._write_complete_cb: WriteCompleteCallback | None = None
        self._high_water_mark_cb: HighWaterMarkCallback | None = None
        self._close_cb: CloseCallback = _noop_close
        self.set_tcp_no_delay(True)

    def __repr__(self) -> str:
        return f"<TcpConnection {self.name} {_STATE_NAMES[self._state]}>"

    # ------------------------------------------------------------- properties
    @property
    def connected(self) -> bool:
        """True while established and not closing. Safe from any thread (a snapshot)."""
        return self._state == _CONNECTED

    @property
    def disconnected(self) -> bool:
        """True once closed. Safe from any thread (a snapshot)."""
        return self._state == _DISCONNECTED

    @property
    def socket(self) -> socket.socket:
        """The underlying socket; only touch it in the loop thread."""
        return self._sock

    # -------------------------------------------------------------- callbacks
    def set_connection_callback(self, cb: ConnectionCallback) -> None:
        """``cb(conn)`` on establish and teardown. Before ``connect_established``."""
        self._connection_cb = cb

    def set_message_callback(self, cb: MessageCallback) -> None:
        """``cb(conn, input_buffer, receive_time)`` after each read; receive_time is time.time()."""
        self._message_cb = cb

    def set_write_complete_callback(self, cb: WriteCompleteCallback | None) -> None:
        """``cb(conn)``, queued in the loop, whenever the output becomes empty after a send."""
        self._write_complete_cb = cb

    def set_high_water_mark_callback(self, cb: HighWaterMarkCallback | None, mark: int) -> None:
        """``cb(conn, queued_bytes)``, queued in the loop, when output crosses ``mark`` upward."""
        self._high_water_mark_cb = cb
        self._high_water_mark = mark

    def set_close_callback(self, cb: CloseCallback) -> None:
        """Internal: ``cb(conn)`` after teardown, used by the owner (TcpServer)."""
        self._close_cb = cb

    def set_tcp_no_delay(self, on: bool) -> None:
        """Enable or disable TCP_NODELAY (on by default). Loop thread only."""
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)
        except OSError:
            logger.debug("%s: TCP_NODELAY not supported", self.name)

    # ---------------------------------------------------------------- sending
    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for the peer, in order. Safe from any thread.

        Data sent while not connected (or after ``shutdown``) is dropped.
        From another thread a mutable ``data`` is copied, so the caller may reuse it.
        """
        if self._state != _CONNECTED:
            return
        if self.loop.is_in_loop_thread():
            self.send_in_loop(data)
        else:
            if type(data) is not bytes:
                data = bytes(data)
            self.loop.queue_in_loop(partial(self.send_in_loop, data))

    def send_in_loop(self, data: bytes | bytearray | memoryview) -> None:
        """Write now if possible, buffer the rest. Loop thread only."""
        if self._state == _DISCONNECTED:
            return  # closed while the data was queued in the loop
        written = 0
        if not self._writing:
            try:
                written = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._on_send_error(exc)
                return
            if written == len(data):
                if self._write_complete_cb is not None:
                    self.loop.queue_in_loop(partial(self._write_complete_cb, self))
                return
        self._queue_output(memoryview(data)[written:] if written else data)

    def _queue_output(self, rest: bytes | bytearray | memoryview) -> None:
        out = self.output_buffer
        old_len = len(out)
        out.append(rest)
        new_len = len(out)
        mark = self._high_water_mark
        if self._high_water_mark_cb is not None and old_len < mark <= new_len:
            self.loop.queue_in_loop(partial(self._high_water_mark_cb, self, new_len))
        if not self._writing and self._registered:
            self._writing = True
            self.loop.modify(self._sock, _READ_WRITE, self._handle_events)

    def _on_send_error(self, exc: OSError) -> None:
        # EPIPE/ECONNRESET: the read side will see it too, but close now so
        # that we do not buffer data nobody will read.
        logger.debug("%s: send failed: %s", self.name, exc)
        self.loop.queue_in_loop(self._force_close_in_loop)

    # ------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Half-close (SHUT_WR) once the queued output has drained. Safe from any thread."""
        if self._state == _CONNECTED:
            self._state = _DISCONNECTING
            self.loop.run_in_loop(self._shutdown_in_loop)

    def _shutdown_in_loop(self) -> None:
        if not self._writing and self._state == _DISCONNECTING:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                logger.debug("%s: shutdown failed: %s", self.name, exc)

    def force_close(self) -> None:
        """Close now, dropping unsent output. Safe from any thread."""
        if self._state in (_CONNECTED, _DISCONNECTING):
            self._state = _DISCONNECTING
            self.loop.queue_in_loop(self._force_close_in_loop)

    def _force_close_in_loop(self) -> None:
        if self._state in (_CONNECTED, _DISCONNECTING):
            self.handle_close()

    # ---------------------------------------------------------- event handlers
    def _handle_events(self, mask: int) -> None:
        # The selector key's data: one bound-method call per ready socket.
        if mask & _READ:
            self.handle_read()
        if mask & _WRITE and self._writing:
            self.handle_write()

    def handle_read(self) -> None:
        """Read once into ``input_buffer`` and call the message callback. Loop thread only."""
        try:
            data = self._sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.handle_error(exc)
            return
        if data:
            self.input_buffer.append(data)
            self._message_cb(self, self.input_buffer, self.loop.poll_return_time)
        else:
            self.handle_close()

    def handle_write(self) -> None:
        """Send queued output; stop watching writability once drained. Loop thread only."""
        out = self.output_buffer
        try:
            out.send_to(self._sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.handle_error(exc)
            return
        if out:
            return
        self._writing = False
        self.loop.modify(self._sock, _READ, self._handle_events)
        if self._write_complete_cb is not None:
            self.loop.queue_in_loop(partial(self._write_complete_cb, self))
        if self._state == _DISCONNECTING:
            self._shutdown_in_loop()

    def handle_error(self, exc: OSError) -> None:
        """A socket error closes this connection only. Loop thread only."""
        logger.debug("%s: socket error: %s", self.name, exc)
        self.handle_close()

    def handle_close(self) -> None:
        """Tear down: unregister, connection callback (down), close callback. Loop thread only."""
        self.loop.assert_in_loop_thread()
        if self._state == _DISCONNECTED:
            return
        self._state = _DISCONNECTED
        self._unregister()
        self._connection_cb(self)
        self._close_cb(self)

    def _unregister(self) -> None:
        self._writing = False
        if self._registered:
            self._registered = False
            self.loop.unregister(self._sock)

    # -------------------------------------------------------------- lifecycle
    def connect_established(self) -> None:
        """Start reading and call the connection callback (up). Loop thread only, once."""
        self.loop.assert_in_loop_thread()
        if self._state != _CONNECTING:
            raise RuntimeError(f"{self.name}: connect_established in state {self._state}")
        self._state = _CONNECTED
        self.loop.register(self._sock, _READ, self._handle_events)
        self._registered = True
        self._connection_cb(self)

    def connect_destroyed(self) -> None:
        """Final step: close the socket (after a callback if still up). Loop thread only."""
        self.loop.assert_in_loop_thread()
        if self._state in (_CONNECTED, _DISCONNECTING):
            self._state = _DISCONNECTED
            self._unregister()
            self._connection_cb(self)
        self._sock.close()
