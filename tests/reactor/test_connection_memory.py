"""What an idle connection holds: a server keeps tens of thousands of them."""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator

import pytest

from reactor import EventLoop, TcpConnection

COUNT = 200
# Bytes the reactor allocates per established idle connection, with its
# selector entry: 914 measured on Python 3.11 over socketpairs (1,727 with a
# dict of attributes and a mailbox made up front; a TCP socket's own address,
# no longer kept, added 145 more); the bound leaves room for other versions.
BOUND = 1_400


@pytest.fixture
def socketpairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [socket.socketpair() for _ in range(COUNT)]
    yield pairs
    for pair in pairs:
        for sock in pair:
            sock.close()


def test_an_idle_connection_is_small(
        socketpairs: list[tuple[socket.socket, socket.socket]]) -> None:
    loop = EventLoop()
    try:
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            conns = [TcpConnection(loop, f"test-127.0.0.1:{40000 + i}#{i}", a,
                                   ("127.0.0.1", 40000 + i), i)
                     for i, (a, _) in enumerate(socketpairs)]
            for conn in conns:
                conn.connect_established()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        assert grown / COUNT < BOUND
        for conn in conns:
            conn.handle_close()
            conn.connect_destroyed()
    finally:
        loop.close()


def test_the_mailbox_is_made_by_a_post_and_dropped_once_drained(
        socketpairs: list[tuple[socket.socket, socket.socket]]) -> None:
    loop = EventLoop()
    try:
        conn = TcpConnection(loop, "c", socketpairs[0][0], None)
        conn.connect_established()
        assert conn._mail is None
        ran: list[int] = []
        conn.post(lambda: ran.append(1))
        conn.post(lambda: ran.append(2))
        assert conn._mail is not None and len(conn._mail) == 2
        loop._do_pending()
        assert ran == [1, 2] and conn._mail is None
        conn.post(lambda: ran.append(3))  # a later post makes a new one
        loop._do_pending()
        assert ran == [1, 2, 3] and conn._mail is None
        conn.handle_close()
        conn.connect_destroyed()
    finally:
        loop.close()


def test_an_attribute_of_the_applications_own_still_fits(
        socketpairs: list[tuple[socket.socket, socket.socket]]) -> None:
    loop = EventLoop()
    try:
        conn = TcpConnection(loop, "c", socketpairs[0][0], None)
        conn.extra = "kept"  # type: ignore[attr-defined]
        assert conn.extra == "kept"  # type: ignore[attr-defined]
    finally:
        conn.connect_destroyed()
        loop.close()
