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
* Writing: ``send_in_loop`` appends to ``output_buffer`` and asks the loop
  to ``_flush`` the connection before it polls again
  (``EventLoop.call_before_poll``), so what a batch of handlers (the round,
  or 32 of its handlers in a longer round: ``WRITE_BATCH``) sends a
  connection leaves in one ``send`` after the batch, as Redis writes its
  replies before it sleeps. Where muduo writes at once, a round serving
  ~80 ready sockets woke the waiting peers every few messages; written
  after the batch, a peer woken by its first message finds most of the
  others there too, and the chat ping-pong benchmark got cheaper on both
  sides (see benchmarks/HISTORY.md); written only at the end of a round of
  hundreds, each reply left after its data had left the CPU caches. What
  the kernel does not take waits for EVENT_WRITE, which is removed again
  as soon as ``handle_write`` drains the buffer: an idle connection costs
  nothing and a busy one is not woken for writability it does not need. A
  close or a move first writes what is due (``force_close`` and
  ``connect_destroyed`` as far as the kernel takes it at once), so no
  message a handler sent is dropped for being deferred.
  ``set_deferred_writes(False)`` (the server's ``--no-deferred-writes``)
  writes at each send instead, as muduo does, to measure what deferring
  saves; it posts the write-complete callback, since one that sends again
  from inside the send would recurse.
* ``shutdown`` half-closes (SHUT_WR) once the output has drained, so queued
  data still reaches the peer; reading continues until the peer closes.
* Any ``OSError`` on the socket closes this connection only.
* Moving: ``move_to`` hands the connection to another loop of the pool, so
  that two connections that talk to each other are served by one thread
  and a message between them needs no hop (``talks_to`` is the hint that
  asks for it; where to move is the server's ``Placement``, see
  reactor/placement.py). The old loop unregisters the socket, and only then
  does the new one register it (``_adopt``): one loop owns it at every moment.
  A move runs among the old loop's pending callbacks, which come after
  the batch of ready sockets, so no event of that batch is left for it.
  What the round sent is due in the old loop's before-poll list: the move
  withdraws that flush from the list and writes the bytes itself, so no
  stale flush runs in a loop that no longer owns the connection.
* The mailbox: whatever other threads ask of a connection (``send``,
  ``shutdown``, ``force_close``, ``post``) goes into its own queue, drained
  by one task in the owner's loop (the "drain token": at most one is queued
  or running). A move runs inside that task and passes the token to
  ``_adopt``, so the queue follows the connection and keeps its order
  across moves. In the owner's thread a ``send`` queues at once, as in
  muduo: what a handler sends goes out before what other threads queued
  meanwhile (a login's offline messages before live ones). Only between a
  move and ``_adopt`` (the socket registered nowhere) does the new owner's
  thread queue behind the mailbox, so that what was queued before the move
  still goes first. After ``_adopt`` nothing a thread queued before it
  owned the connection is left: its earlier messages ran in the drain that
  the old owner queued ahead of ``_adopt``, or in ``_adopt`` itself.

Thread contract: ``send``, ``post``, ``move_to``, ``shutdown``,
``force_close`` and the read-only properties are safe from any thread;
everything else is owner loop thread only, the owner being ``loop``, and
starts by checking so (``EventLoop.assert_in_loop_thread``: it raises).
The methods run once or more per message (reads, writes, ``send_in_loop``,
the mailbox, ``talks_to``) check only when ``REACTOR_DEBUG`` is set in the
environment at import (the tests set it): the check costs ~65 ns a call,
about 1.5% of the server's CPU per chat message (13 us) for the three or
four such calls a message makes (timeit, Python 3.11).
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from reactor.buffer import Buffer
from reactor.eventloop import EventLoop
from reactor.placement import Placement

__all__ = [
    "CloseCallback",
    "ConnectionCallback",
    "DataCallback",
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
DataCallback = Callable[["TcpConnection", bytes, float], None]
HighWaterMarkCallback = Callable[["TcpConnection", int], None]

_CONNECTING, _CONNECTED, _DISCONNECTING, _DISCONNECTED = range(4)
_STATE_NAMES = ("connecting", "connected", "disconnecting", "disconnected")
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_READ_WRITE = _READ | _WRITE
_DEFAULT_HIGH_WATER_MARK = 64 * 1024 * 1024
# Whether the per-message methods check their thread too (see the module docstring).
CHECK_OWNER = os.environ.get("REACTOR_DEBUG", "") not in ("", "0")


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

    # Slots: a server holds tens of thousands of these (benchmarks/memory.py).
    # ``__dict__`` stays, created only if somebody sets an attribute of their own.
    __slots__ = (
        "__dict__", "__weakref__", "_close_cb", "_connection_cb", "_data_cb", "_deferred",
        "_drain_queued", "_flush_cb", "_flush_due", "_high_water_mark", "_high_water_mark_cb",
        "_mail", "_mail_lock", "_message_cb", "_placement", "_registered_in", "_sock", "_state",
        "_write_complete_cb", "_writing", "context", "input_buffer", "loop",
        "name", "output_buffer", "peer_address", "serial",
    )

    def __init__(
        self, loop: EventLoop, name: str, sock: socket.socket, peer_address: Any,
        serial: int = 0,
    ) -> None:
        sock.setblocking(False)
        self.loop = loop
        self.name = name
        self.peer_address = peer_address
        self.context: Any = None
        self.input_buffer = Buffer()
        self.output_buffer = Buffer()
        self._sock = sock
        self._state = _CONNECTING
        self._writing = False  # registered for EVENT_WRITE: the kernel did not take it all
        self._flush_due = False  # a _flush is queued before the owner polls; owner only
        self._deferred = True  # write after the round; off: at each send (an A/B switch)
        self._flush_cb = self._flush  # bound once: one per message is measurable
        # The thread of the loop the socket is registered with, 0 while it is
        # registered nowhere (before start, in transit between loops, closed):
        # one comparison tells a send whether it may queue at once.
        self._registered_in = 0
        self._high_water_mark = _DEFAULT_HIGH_WATER_MARK
        self._connection_cb: ConnectionCallback = default_connection_callback
        self._message_cb: MessageCallback = default_message_callback
        self._data_cb: DataCallback | None = None  # set: the input buffer is skipped
        self._write_complete_cb: WriteCompleteCallback | None = None
        self._high_water_mark_cb: HighWaterMarkCallback | None = None
        self._close_cb: CloseCallback = _noop_close
        self._placement: Placement | None = None  # talks_to is a no-op without one
        # Made by a post and dropped once drained: a deque takes 760 bytes,
        # and most connections hear from another thread only now and then
        # (a login's password check, say).
        self._mail: deque[Callable[[], None]] | None = None
        self._mail_lock = threading.Lock()
        self._drain_queued = False  # the drain token is out; guarded by _mail_lock
        self.serial = serial  # of two that talk, the higher one moves (Placement)
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

    @property
    def local_address(self) -> Any:
        """The socket's own address, asked of the kernel (OSError once closed).

        Not kept: the tuple would cost every connection 145 bytes, and hardly
        anybody asks.
        """
        return self._sock.getsockname()

    # -------------------------------------------------------------- callbacks
    def set_connection_callback(self, cb: ConnectionCallback) -> None:
        """``cb(conn)`` on establish and teardown. Before ``connect_established``."""
        self._connection_cb = cb

    def set_message_callback(self, cb: MessageCallback) -> None:
        """``cb(conn, input_buffer, receive_time)`` after each read; receive_time is time.time()."""
        self._message_cb = cb

    def set_data_callback(self, cb: DataCallback | None) -> None:
        """``cb(conn, data, receive_time)`` with the bytes of each read, in place of
        the message callback.

        For a protocol that frames its input itself and keeps what a read
        leaves of a frame (the chat's decoder, h11, wsproto): the bytes go to
        it as ``recv`` returned them, without a pass through ``input_buffer``.
        """
        self._data_cb = cb

    def set_write_complete_callback(self, cb: WriteCompleteCallback | None) -> None:
        """``cb(conn)``, in the loop thread, whenever the output becomes empty after a send.

        It runs where the last bytes were written, before the loop reads again.
        """
        self._write_complete_cb = cb

    def set_high_water_mark_callback(self, cb: HighWaterMarkCallback | None, mark: int) -> None:
        """``cb(conn, queued_bytes)``, queued in the loop, when output crosses ``mark`` upward."""
        self._high_water_mark_cb = cb
        self._high_water_mark = mark

    def set_close_callback(self, cb: CloseCallback) -> None:
        """Internal: ``cb(conn)`` after teardown, used by the owner (TcpServer)."""
        self._close_cb = cb

    def set_deferred_writes(self, on: bool) -> None:
        """Write what a round sent after the round (the default), or at each
        ``send`` as muduo does (to measure what deferring gains). Before
        ``connect_established``."""
        self._deferred = on

    def set_placement(self, placement: Placement | None) -> None:
        """Internal: the policy that ``talks_to`` informs (set by the owning TcpServer)."""
        self._placement = placement

    def set_tcp_no_delay(self, on: bool) -> None:
        """Enable or disable TCP_NODELAY (on by default). Before ``connect_established``
        or in the loop thread."""
        if self._state != _CONNECTING:
            self.loop.assert_in_loop_thread()
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
        if self._registered_in == threading.get_ident():
            self.send_in_loop(data)
        else:
            if type(data) is not bytes:
                data = bytes(data)
            self.post(partial(self.send_in_loop, data))

    def send_in_loop(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``, written before the loop polls again. Loop thread only."""
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        if self._state == _DISCONNECTED:
            return  # closed while the data was queued in the loop
        queued = self.output_buffer.append(data)
        mark = self._high_water_mark
        if self._high_water_mark_cb is not None and queued - len(data) < mark <= queued:
            self.post(partial(self._high_water_mark_cb, self, queued))
        if not self._writing and not self._flush_due:
            if self._deferred:
                self._flush_due = True
                self.loop.call_before_poll(self._flush_cb)
            else:
                self._flush(in_send=True)

    def _flush(self, in_send: bool = False) -> None:
        # Before the owner's next poll: one write of what the round queued.
        # Unlike handle_write, which sends a backlog from the buffer in place,
        # it takes the round's bytes out whole: usually one bytes object, no copy.
        # A move withdraws the queued call, so this runs in the owner's thread only.
        # ``in_send`` (--no-deferred-writes, written at the send as muduo does):
        # the write-complete callback is posted, not called, since a callback
        # that sends again (an outbox paging a backlog) would recurse once per page.
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        self._flush_due = False
        if self._writing:
            return  # the kernel is full: handle_write sends it once it takes more
        if self._state == _DISCONNECTED:
            return  # closed after the send: what was queued goes nowhere
        data = self.output_buffer.retrieve_all()
        if not data:
            return
        try:
            written = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            self.handle_error(exc)
            return
        if written == len(data):
            if in_send:
                if self._write_complete_cb is not None or self._state == _DISCONNECTING:
                    self.post(self._drained_if_empty)
            elif self._state == _DISCONNECTING:
                self._drained()
            elif self._write_complete_cb is not None:
                self._write_complete_cb(self)  # what _drained does, a call less per write
            return
        self.output_buffer.append(memoryview(data)[written:])
        self._writing = True  # the kernel took only part: wait until it takes more
        self.loop.modify(self._sock, _READ_WRITE, self._handle_events)

    def _drained_if_empty(self) -> None:
        if not self.output_buffer and self._state != _DISCONNECTED:
            self._drained()

    def _drained(self) -> None:
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        if self._state == _DISCONNECTING:
            self._shutdown_in_loop()
        # Called, not queued as muduo does: writes happen after the round, so
        # a queued callback would run after the next round's reads, and one
        # that acts on the write (the chat deletes delivered offline messages)
        # must be done before the peer's next request is handled.
        if self._write_complete_cb is not None:
            self._write_complete_cb(self)

    # ------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Half-close (SHUT_WR) once the queued output has drained. Safe from any thread."""
        if self._state == _CONNECTED:
            self._state = _DISCONNECTING
            if self._registered_in == threading.get_ident():
                self._shutdown_in_loop()
            else:
                self.post(self._shutdown_in_loop)

    def _shutdown_in_loop(self) -> None:
        self.loop.assert_in_loop_thread()
        if not self.output_buffer and self._state == _DISCONNECTING:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                logger.debug("%s: shutdown failed: %s", self.name, exc)

    def force_close(self) -> None:
        """Close now; of the queued output, what the kernel does not take at once is dropped.

        Safe from any thread.
        """
        if self._state in (_CONNECTED, _DISCONNECTING):
            self._state = _DISCONNECTING
            self.post(self._force_close_in_loop)

    def _force_close_in_loop(self) -> None:
        self.loop.assert_in_loop_thread()
        if self._state in (_CONNECTED, _DISCONNECTING):
            self._flush()  # what was sent before the close, as far as the kernel takes it
            self.handle_close()

    # ------------------------------------------------------ mailbox and moves
    def post(self, cb: Callable[[], None]) -> None:
        """Run ``cb()`` in the owner's thread after what is queued before it.

        Safe from any thread; ``cb`` follows the connection when it moves.
        """
        with self._mail_lock:
            mail = self._mail
            if mail is None:
                mail = self._mail = deque()
            mail.append(cb)
            if self._drain_queued:
                return
            self._drain_queued = True
            loop = self.loop
        loop.queue_in_loop(self._drain_mail)

    def run(self, cb: Callable[[], None]) -> None:
        """Run ``cb()`` now if called in the owner's thread, else ``post`` it.

        Safe from any thread. In the owner's thread it goes ahead of what
        other threads posted and is still queued, as a ``send`` does.
        """
        if self._registered_in == threading.get_ident():
            cb()
        else:
            self.post(cb)

    def owned_here(self) -> bool:
        """Whether the calling thread owns the connection now. Safe from any thread."""
        return self._registered_in == threading.get_ident()

    def queued_bytes(self) -> int:
        """Bytes handed to ``send`` and not yet taken by the kernel. Owner's thread."""
        return self.output_buffer.readable_bytes()

    def _drain_mail(self) -> None:
        # Holds the drain token (see the module docstring), so self.loop is
        # this thread's loop: a move happens only inside a drain.
        loop = self.loop
        if CHECK_OWNER:
            loop.assert_in_loop_thread()
        mail = self._mail
        assert mail is not None  # a drain is queued only by a post, which made it
        lock = self._mail_lock
        with lock:
            due = len(mail)
        for _ in range(due):
            with lock:
                cb = mail.popleft()
            try:
                cb()
            except Exception:
                logger.exception("%s: queued callback %r failed", self.name, cb)
            if self.loop is not loop:
                return  # moved: _adopt drains the rest in the new owner's thread
        with lock:
            if not mail:
                self._mail = None
                self._drain_queued = False
                return
        # Queued meanwhile: on the loop's next round, as with queue_in_loop,
        # so a callback that keeps posting cannot starve the other sockets.
        loop.queue_in_loop(self._drain_mail)

    def move_to(self, loop: EventLoop) -> None:
        """Hand the connection to ``loop``'s thread. Safe from any thread.

        It takes effect in the owner's thread once the callbacks running
        and queued before it are done; a closed connection does not move.
        """
        self.post(partial(self._move_in_loop, loop))

    def _move_in_loop(self, loop: EventLoop) -> None:
        self.loop.assert_in_loop_thread()
        if loop is self.loop or self._state not in (_CONNECTED, _DISCONNECTING):
            return
        if self._flush_due:
            # Written here, where it was sent; the flush queued for this
            # loop's next poll would run where the connection no longer lives.
            self.loop.cancel_before_poll(self._flush_cb)
            self._flush()
            if self._state == _DISCONNECTED:
                return  # the write failed
        if self._registered_in:
            self._registered_in = 0
            self.loop.unregister(self._sock)
        with self._mail_lock:
            self.loop = loop
        logger.debug("%s moves to loop %#x", self.name, id(loop))
        loop.queue_in_loop(self._adopt)

    def _adopt(self) -> None:
        self.loop.assert_in_loop_thread()
        if self._state in (_CONNECTED, _DISCONNECTING):
            if self._writing:
                self.loop.register(self._sock, _READ_WRITE, self._handle_events)
            else:
                self.loop.register(self._sock, _READ, self.handle_read)
            self._registered_in = threading.get_ident()
        self._drain_mail()

    def talks_to(self, peer: TcpConnection) -> None:
        """Hint: this connection just sent ``peer`` a message. Loop thread only.

        The placement of the TcpServer that owns the connection may move one
        of the two so that one thread serves both (reactor/placement.py);
        without one it does nothing.
        """
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        placement = self._placement
        if placement is not None:
            placement.hint(self, peer)

    def talks_to_loop(self, loop: EventLoop) -> None:
        """Hint: this connection just sent a message to something that ``loop``
        serves (not a connection: a cluster's bus, say). Loop thread only.

        The placement may move the connection there (reactor/placement.py);
        without one it does nothing.
        """
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        placement = self._placement
        if placement is not None:
            placement.hint_loop(self, loop)

    # ---------------------------------------------------------- event handlers
    def _handle_events(self, mask: int) -> None:
        # The selector key's data while output is queued; when only reading
        # it is handle_read itself, one call less per message.
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        if mask & _READ:
            self.handle_read()
        if mask & _WRITE and self._writing:
            self.handle_write()

    def handle_read(self, _mask: int = _READ) -> None:
        """Read once; hand the bytes to the data callback, or append them to
        ``input_buffer`` and call the message callback. Loop thread only."""
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
        view = self.loop.recv_buffer  # the owner's: only its thread reads into it
        try:
            n = self._sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.handle_error(exc)
            return
        if n:
            data = view[:n].tobytes()
            data_cb = self._data_cb
            if data_cb is not None:
                data_cb(self, data, self.loop.poll_return_time)
            else:
                self.input_buffer.append(data)
                self._message_cb(self, self.input_buffer, self.loop.poll_return_time)
        else:
            self.handle_close()

    def handle_write(self) -> None:
        """Send queued output; stop watching writability once drained. Loop thread only."""
        if CHECK_OWNER:
            self.loop.assert_in_loop_thread()
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
        self.loop.modify(self._sock, _READ, self.handle_read)
        self._drained()

    def handle_error(self, exc: OSError) -> None:
        """A socket error closes this connection only. Loop thread only."""
        self.loop.assert_in_loop_thread()
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
        self.loop.assert_in_loop_thread()
        self._writing = False
        if self._registered_in:
            self._registered_in = 0
            self.loop.unregister(self._sock)

    # -------------------------------------------------------------- lifecycle
    def connect_established(self) -> None:
        """Start reading and call the connection callback (up). Loop thread only, once."""
        self.loop.assert_in_loop_thread()
        if self._state != _CONNECTING:
            raise RuntimeError(f"{self.name}: connect_established in state {self._state}")
        self._state = _CONNECTED
        self.loop.register(self._sock, _READ, self.handle_read)
        self._registered_in = threading.get_ident()
        self._connection_cb(self)

    def connect_destroyed(self) -> None:
        """Final step: close the socket (after a callback if still up). Loop thread only."""
        self.loop.assert_in_loop_thread()
        if self._state in (_CONNECTED, _DISCONNECTING):
            self._flush()  # what was sent before, as far as the kernel takes it
        if self._state in (_CONNECTED, _DISCONNECTING):  # unless that write failed
            self._state = _DISCONNECTED
            self._unregister()
            self._connection_cb(self)
        self._sock.close()
