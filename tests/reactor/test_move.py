"""Moving a connection between loops: its socket, its unsent output and what
other threads send it all follow it, in order; ``talks_to`` gathers two
connections that talk to each other in one loop."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from reactor import Buffer, EventLoop, TcpConnection, TcpServer, blocking
from reactor.placement import FOLLOW_AFTER, ROOF

from .conftest import WAIT, ServerFactory, call_in_loop
from .test_tcpserver import ConnTracker, connect, recv_exact


def settle(*loops: EventLoop) -> None:
    """Wait until what each loop had queued, and what that queued next in the
    following ones, has run: a move queues ``_adopt`` on its new loop."""
    for loop in loops:
        call_in_loop(loop, lambda: None)


def thread_name_of(loop: EventLoop) -> str:
    return call_in_loop(loop, lambda: threading.current_thread().name)


def readline(sock: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "EOF before the end of a line"
        line += chunk
    return bytes(line)


def reply_with_thread_name(conn: TcpConnection, buf: Buffer, _t: float) -> None:
    buf.retrieve_all()
    conn.send(threading.current_thread().name.encode() + b"\n")


def serve_tracked(make_server: ServerFactory, threads: int,
               on_message: Callable[[TcpConnection, Buffer, float], None],
               ) -> tuple[TcpServer, ConnTracker]:
    tracker = ConnTracker()
    return make_server(threads=threads, on_message=on_message, on_connection=tracker), tracker


def test_a_moved_connection_is_read_and_written_by_its_new_loop(
        make_server: ServerFactory) -> None:
    server, tracker = serve_tracked(make_server, 2, reply_with_thread_name)
    first, second = server.thread_pool.get_all_loops()
    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        assert conn.loop is first
        sock.sendall(b"?")
        assert readline(sock) == thread_name_of(first).encode() + b"\n"
        ran_in: list[str] = []
        conn.move_to(second)  # from a thread that is neither loop's
        conn.post(lambda: ran_in.append(threading.current_thread().name))
        settle(first, second)
        assert conn.loop is second
        assert ran_in == [thread_name_of(second)]  # what was queued behind the move
        sock.sendall(b"?")
        assert readline(sock) == thread_name_of(second).encode() + b"\n"
        conn.move_to(first)
        settle(second, first)
        sock.sendall(b"?")
        assert readline(sock) == thread_name_of(first).encode() + b"\n"


def test_unsent_output_moves_with_the_connection(make_server: ServerFactory) -> None:
    server, tracker = serve_tracked(make_server, 2, reply_with_thread_name)
    first, second = server.thread_pool.get_all_loops()
    blob = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold

    def send_blob() -> int:
        conn.send(blob)
        return len(conn.output_buffer)

    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        assert call_in_loop(first, send_blob) > 0  # the peer is not reading yet
        conn.move_to(second)
        settle(first, second)
        call_in_loop(second, lambda: conn.send(b"tail"))
        assert recv_exact(sock, len(blob) + 4) == blob + b"tail"


def test_the_new_owner_sends_behind_what_was_queued_before_the_move(
        make_server: ServerFactory) -> None:
    # Between the move and _adopt the new owner's thread must not write at
    # once: what another thread queued after the move request goes first.
    server, tracker = serve_tracked(make_server, 2, reply_with_thread_name)
    first, second = server.thread_pool.get_all_loops()
    go, moved = threading.Event(), threading.Event()

    def hold(until: threading.Event) -> Callable[[], None]:
        def wait() -> None:
            with blocking():  # let the other loop run meanwhile
                assert until.wait(WAIT)
        return wait

    def in_the_gap() -> None:
        hold(moved)()
        conn.send(b"3")

    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        first.queue_in_loop(hold(go))
        second.queue_in_loop(in_the_gap)  # _adopt will be queued behind it
        conn.move_to(second)
        conn.send(b"2")  # in the mailbox behind the move
        go.set()
        settle(first)
        assert conn.loop is second
        moved.set()
        assert recv_exact(sock, 2) == b"23"


def test_a_handler_sends_before_what_other_threads_queued_meanwhile(
        make_server: ServerFactory) -> None:
    # As in muduo: a login sends its offline messages at once, and a live
    # message that another thread sent meanwhile follows them.
    queued = threading.Event()

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        buf.retrieve_all()
        threading.Thread(target=lambda: (conn.send(b"live"), queued.set())).start()
        with blocking():
            assert queued.wait(WAIT)
        conn.send(b"first")

    server, tracker = serve_tracked(make_server, 2, on_message)
    with connect(server) as sock:
        sock.sendall(b"login")
        assert recv_exact(sock, 9) == b"firstlive"


def test_sends_from_every_loop_keep_their_order_while_the_target_moves(
        make_server: ServerFactory) -> None:
    per_sender = 3_000
    server, tracker = serve_tracked(make_server, 3, reply_with_thread_name)
    loops = server.thread_pool.get_all_loops()
    owners_seen: set[int] = set()
    rng = random.Random(7)  # where each move goes; seeded so a failure repeats

    with connect(server) as sock:
        (target,) = tracker.wait_up(1)

        def sender(i: int, n: int = 0) -> None:
            # One message per pending callback, so the loops interleave with
            # the moves instead of sending everything in one go.
            target.send(b"%d:%d\n" % (i, n))
            owners_seen.add(id(target.loop))
            if n % 7 == 0:
                target.move_to(rng.choice(loops))
            if n + 1 < per_sender:
                loops[i].queue_in_loop(lambda: sender(i, n + 1))

        for i, loop in enumerate(loops):
            loop.queue_in_loop(lambda i=i: sender(i))  # type: ignore[misc]
        sock.settimeout(WAIT)
        reader = sock.makefile("rb")
        received: list[list[int]] = [[] for _ in loops]
        for _ in range(per_sender * len(loops)):
            i, n = reader.readline().split(b":")
            received[int(i)].append(int(n))
    # It moved while the senders ran. Not necessarily through every loop:
    # with turns a loop may run all its senders in a few slices, before the
    # queued moves get their hops.
    assert len(owners_seen) >= 2
    assert received == [list(range(per_sender))] * len(loops)


def test_a_callback_that_keeps_posting_does_not_starve_its_loop(
        make_server: ServerFactory) -> None:
    server, tracker = serve_tracked(make_server, 1, reply_with_thread_name)
    stop = threading.Event()
    rounds: list[int] = []

    def again() -> None:
        rounds.append(1)
        if not stop.is_set():
            busy.post(again)

    with connect(server) as _chained, connect(server) as other:
        busy, _ = tracker.wait_up(2)
        busy.post(again)
        other.sendall(b"?")  # served between two rounds of the chain
        assert readline(other).endswith(b"\n")
        stop.set()
    assert rounds


def test_a_connection_closed_while_moving_closes_once_in_its_new_loop(
        make_server: ServerFactory) -> None:
    server, tracker = serve_tracked(make_server, 2, reply_with_thread_name)
    first, second = server.thread_pool.get_all_loops()
    closed_in: list[str] = []
    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        conn.set_connection_callback(
            lambda c: closed_in.append(threading.current_thread().name))
        conn.move_to(second)
        conn.force_close()  # queued behind the move
        sock.settimeout(WAIT)
        assert sock.recv(1) == b""
        settle(first, second)
    assert closed_in == [thread_name_of(second)]
    assert conn.disconnected and conn.loop is second


def test_stop_closes_a_connection_on_its_way_to_a_loop_that_stops_first(
        make_server: ServerFactory, loop_thread: EventLoop) -> None:
    # The pool stops its loops in order; a move to the first one, made while
    # the second is still busy, must not land in a loop that has quit.
    server, tracker = serve_tracked(make_server, 2, reply_with_thread_name)
    first, second = server.thread_pool.get_all_loops()
    first_thread = call_in_loop(first, threading.current_thread)

    def until_first_has_quit() -> None:
        with blocking():  # the first loop needs the turn to quit
            first_thread.join(0.25)  # it does not, if stop waits for the destroys

    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        conn.move_to(second)
        settle(first, second)
        assert conn.loop is second
        conn.post(until_first_has_quit)
        conn.move_to(first)  # runs once the first loop has quit, or 0.25 s passed
        call_in_loop(loop_thread, server.stop)
        sock.settimeout(WAIT)
        assert sock.recv(1) == b""
    assert tracker.wait_down(1) == [conn]
    assert conn.disconnected


@dataclass
class Talkers:
    """Two clients whose server-side connections relay to each other."""

    server: TcpServer
    tracker: ConnTracker
    a: socket.socket
    b: socket.socket
    low: TcpConnection  # a's end, the lower serial
    high: TcpConnection
    first: EventLoop
    second: EventLoop

    def loops(self) -> tuple[EventLoop, EventLoop]:
        return self.low.loop, self.high.loop

    def ping_pong(self, rounds: int) -> None:
        for _ in range(rounds):
            self.a.sendall(b"p")
            assert recv_exact(self.b, 1) == b"p"
            self.b.sendall(b"q")
            assert recv_exact(self.a, 1) == b"q"


@contextmanager
def talkers(make_server: ServerFactory, moves: bool = True) -> Iterator[Talkers]:
    conns: dict[int, TcpConnection] = {}

    def relay_to_peer(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        peer = conns[3 - conn.serial]
        peer.send(buf.retrieve_all())
        conn.talks_to(peer)

    server, tracker = serve_tracked(make_server, 2, relay_to_peer)
    server.set_moves(moves)  # read at accept: before the first connection
    first, second = server.thread_pool.get_all_loops()
    with connect(server) as a, connect(server) as b:
        conns.update((c.serial, c) for c in tracker.wait_up(2))
        yield Talkers(server, tracker, a, b, conns[1], conns[2], first, second)


def test_talks_to_brings_the_higher_serial_end_to_its_peer(
        make_server: ServerFactory) -> None:
    with talkers(make_server) as t:
        assert t.loops() == (t.first, t.second)
        t.ping_pong(FOLLOW_AFTER - 1)
        settle(t.first, t.second, t.first)
        assert t.loops() == (t.first, t.second)  # not yet
        t.ping_pong(1)
        settle(t.second, t.first)
        assert t.loops() == (t.first, t.first)
        t.ping_pong(2 * FOLLOW_AFTER)  # and they keep talking there
        assert t.loops() == (t.first, t.first)


def test_with_moves_off_talkers_stay_where_they_were_placed(
        make_server: ServerFactory) -> None:
    with talkers(make_server, moves=False) as t:
        t.ping_pong(3 * FOLLOW_AFTER)
        settle(t.second, t.first, t.second)
        assert t.loops() == (t.first, t.second)


def test_talks_to_brings_the_peer_when_its_loop_is_full(make_server: ServerFactory) -> None:
    with talkers(make_server) as t:
        idle = [connect(t.server) for _ in range(8)]
        for extra in t.tracker.wait_up(10)[2:]:
            extra.move_to(t.first)  # crowd the loop of the lower serial end
        settle(t.first, t.second, t.first)
        assert t.first.registered_count() > 2 * t.second.registered_count()
        t.ping_pong(FOLLOW_AFTER)
        settle(t.second, t.first, t.second)
        assert t.loops() == (t.second, t.second)
        for sock in idle:
            sock.close()


def test_talks_to_loop_brings_the_connection_to_that_loop_however_full_it_is(
        make_server: ServerFactory) -> None:
    """What a loop serves that is not a connection (a cluster's bus) cannot move:
    the connection that keeps talking to it does, past the roof."""
    home: list[EventLoop] = []

    def talk_to_home(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        conn.send(buf.retrieve_all())
        conn.talks_to_loop(home[0])

    server, tracker = serve_tracked(make_server, 2, talk_to_home)
    first, second = server.thread_pool.get_all_loops()
    home.append(first)
    idle = [connect(server) for _ in range(9)]  # so that the next one is second's
    try:
        for extra in tracker.wait_up(9):
            extra.move_to(first)  # crowd the home loop far past ROOF
        settle(first, second, first)
        with connect(server) as sock:
            (conn,) = [c for c in tracker.wait_up(10) if c.loop is not first]
            for n in range(FOLLOW_AFTER):
                settle(second, first)
                assert conn.loop is second, n  # not before FOLLOW_AFTER sends
                sock.sendall(b"x")
                assert recv_exact(sock, 1) == b"x"
            settle(second, first)
            assert conn.loop is first
            assert first.registered_count() > ROOF * (first.registered_count()
                                                     + second.registered_count()) / 2
    finally:
        for s in idle:
            s.close()


def test_talks_to_moves_nothing_without_a_placer() -> None:
    # A connection made outside a TcpServer has no pool to balance against.
    loops = [EventLoop(), EventLoop()]
    pairs = [socket.socketpair() for _ in loops]
    try:
        low, high = (TcpConnection(loop, f"c{i}", pair[0], None, serial=i + 1)
                     for i, (loop, pair) in enumerate(zip(loops, pairs, strict=True)))
        for _ in range(2 * FOLLOW_AFTER):
            high.talks_to(low)
        assert (low.loop, high.loop) == (loops[0], loops[1])
        assert not high._mail  # no move was even asked for
    finally:
        for loop in loops:
            loop.close()
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_a_connection_closed_in_the_middle_of_a_streak_is_forgotten(
        make_server: ServerFactory, loop_thread: EventLoop) -> None:
    with talkers(make_server) as t:
        t.ping_pong(FOLLOW_AFTER - 1)
        settle(t.first, t.second)
        streaks = t.server._placement._streaks
        assert set(streaks) == {t.high}  # only the higher serial end counts
        t.b.close()
        assert t.tracker.wait_down(1) == [t.high]
        settle(t.high.loop, loop_thread)  # its close callback, then the server's removal
        assert not streaks
