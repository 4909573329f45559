"""A connection's owner-only methods check their thread and raise elsewhere,
never returning silently; a move withdraws the flush it leaves behind."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from reactor import Buffer, EventLoop, TcpConnection, tcpconnection

from .conftest import WAIT, ServerFactory, call_in_loop
from .test_move import serve_tracked, settle
from .test_tcpserver import connect, recv_exact

Call = Callable[[TcpConnection, TcpConnection, EventLoop], object]

OWNER_ONLY: dict[str, Call] = {
    "send_in_loop": lambda c, p, o: c.send_in_loop(b"x"),
    "_flush": lambda c, p, o: c._flush(),
    "_drained": lambda c, p, o: c._drained(),
    "handle_read": lambda c, p, o: c.handle_read(),
    "handle_write": lambda c, p, o: c.handle_write(),
    "_handle_events": lambda c, p, o: c._handle_events(selectors.EVENT_READ),
    "handle_error": lambda c, p, o: c.handle_error(OSError("test")),
    "handle_close": lambda c, p, o: c.handle_close(),
    "connect_destroyed": lambda c, p, o: c.connect_destroyed(),
    "_shutdown_in_loop": lambda c, p, o: c._shutdown_in_loop(),
    "_force_close_in_loop": lambda c, p, o: c._force_close_in_loop(),
    "_drain_mail": lambda c, p, o: c._drain_mail(),
    "_move_in_loop": lambda c, p, o: c._move_in_loop(o),
    "_adopt": lambda c, p, o: c._adopt(),
    "_unregister": lambda c, p, o: c._unregister(),
    "talks_to": lambda c, p, o: c.talks_to(p),
    "talks_to_loop": lambda c, p, o: c.talks_to_loop(o),
    "set_tcp_no_delay": lambda c, p, o: c.set_tcp_no_delay(False),
}


def in_another_thread(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a fresh thread; what it raised, if anything."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # handed back to the test thread
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    return raised[0] if raised else None


@pytest.fixture
def established() -> Iterator[tuple[TcpConnection, TcpConnection, EventLoop]]:
    """Two connections established in this thread's loop, and a second loop."""
    loop, other = EventLoop(), EventLoop()
    pairs = [socket.socketpair() for _ in range(2)]
    conn, peer = (TcpConnection(loop, f"c{i}", pair[0], None, serial=2 - i)
                  for i, pair in enumerate(pairs))
    conn.connect_established()
    peer.connect_established()
    pairs[0][1].sendall(b"unread")  # a read from the wrong thread would take it
    yield conn, peer, other
    for c in (conn, peer):
        if not c.disconnected:
            c.handle_close()
        c.connect_destroyed()
    for lp in (loop, other):
        lp.close()
    for pair in pairs:
        pair[1].close()


def test_the_tests_run_with_the_per_message_checks_on() -> None:
    assert tcpconnection.CHECK_OWNER  # tests/conftest.py sets REACTOR_DEBUG=1


@pytest.mark.parametrize("name", sorted(OWNER_ONLY))
def test_an_owner_only_method_raises_in_another_thread(
        name: str, established: tuple[TcpConnection, TcpConnection, EventLoop]) -> None:
    conn, peer, other = established
    raised = in_another_thread(lambda: OWNER_ONLY[name](conn, peer, other))
    assert isinstance(raised, RuntimeError) and "belongs to thread" in str(raised)
    assert conn.connected and conn.loop is not other  # and it changed nothing
    assert len(conn.input_buffer) == 0


def test_connect_established_raises_in_another_thread() -> None:
    loop = EventLoop()
    a, b = socket.socketpair()
    try:
        conn = TcpConnection(loop, "c", a, None)
        raised = in_another_thread(conn.connect_established)
        assert isinstance(raised, RuntimeError)
        assert not conn.connected
    finally:
        loop.close()
        a.close()
        b.close()


def discard(_conn: TcpConnection, buf: Buffer, _t: float) -> None:
    buf.retrieve_all()


def test_a_move_writes_the_rounds_output_and_withdraws_its_flush(
        make_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # The send and the move run in one drain of the mailbox: the flush the
    # send queued for the old loop's next poll must not run there after the move.
    server, tracker = serve_tracked(make_server, 2, discard)
    first, second = server.thread_pool.get_all_loops()
    caplog.set_level(logging.ERROR)
    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        conn.post(lambda: conn.send(b"before the move;"))
        conn.move_to(second)
        conn.post(lambda: conn.send(b"after"))
        settle(first, second)
        assert call_in_loop(second, lambda: conn.loop) is second
        assert recv_exact(sock, 21) == b"before the move;after"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
