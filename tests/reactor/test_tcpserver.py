"""TcpServer/TcpConnection over real sockets on 127.0.0.1."""

from __future__ import annotations

import collections
import errno
import select
import socket
import struct
import sys
import threading
import time

import pytest

from reactor import Buffer, EventLoop, TcpConnection, TcpServer

from .conftest import WAIT, ServerFactory, call_in_loop


def connect(server: TcpServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=WAIT)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        assert chunk, f"EOF after {got} of {n} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class ConnTracker:
    """Connection callback that records up/down events and wakes waiters."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.up: list[TcpConnection] = []
        self.down: list[TcpConnection] = []

    def __call__(self, conn: TcpConnection) -> None:
        with self.cond:
            (self.up if conn.connected else self.down).append(conn)
            self.cond.notify_all()

    def wait_up(self, n: int) -> list[TcpConnection]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.up) >= n, WAIT)
            return list(self.up)

    def wait_down(self, n: int) -> list[TcpConnection]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.down) >= n, WAIT)
            return list(self.down)


def test_echo_round_trip_and_connection_callbacks(make_server: ServerFactory) -> None:
    tracker = ConnTracker()
    server = make_server(threads=2, on_connection=tracker)
    assert server.address[1] != 0
    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        assert conn.peer_address == sock.getsockname()
        assert conn.local_address == sock.getpeername()
        assert conn.connected and not conn.disconnected and conn.context is None
        assert server.connections() == [conn]
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"hello"
    (gone,) = tracker.wait_down(1)
    assert gone is conn and conn.disconnected and not conn.connected
    deadline = time.monotonic() + WAIT
    while server.connections() and time.monotonic() < deadline:
        time.sleep(0.005)  # removal hops through two loops; nothing to await
    assert server.connections() == []


def test_connections_spread_round_robin(make_server: ServerFactory) -> None:
    tracker = ConnTracker()
    server = make_server(threads=4, on_connection=tracker)
    socks = []
    for _ in range(8):
        socks.append(connect(server))
        tracker.wait_up(len(socks))  # one at a time so accept order is known
    conns = tracker.wait_up(8)
    loops = server.thread_pool.get_all_loops()
    assert [c.loop for c in conns] == loops + loops
    for c in conns:  # each connection's callbacks ran in its own loop's thread
        assert call_in_loop(c.loop, c.loop.is_in_loop_thread)
    for s in socks:
        s.close()
    tracker.wait_down(8)


def test_second_server_on_busy_port_raises(make_server: ServerFactory) -> None:
    server = make_server()
    with pytest.raises(OSError):
        TcpServer(EventLoop(), server.address, "dup")


def test_stop_accepting_refuses_new_clients(make_server: ServerFactory) -> None:
    server = make_server()
    with connect(server) as sock:
        sock.sendall(b"x")
        assert recv_exact(sock, 1) == b"x"
        server.stop_accepting()  # from the test thread
        call_in_loop(server.loop, lambda: None)
        with pytest.raises(OSError):
            connect(server)
        sock.sendall(b"y")  # existing connections keep working
        assert recv_exact(sock, 1) == b"y"


def test_send_from_foreign_thread_arrives_in_order(make_server: ServerFactory) -> None:
    tracker = ConnTracker()
    server = make_server(threads=2, on_connection=tracker)
    n = 20_000
    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        scratch = bytearray(8)
        for i in range(n):
            struct.pack_into("!Q", scratch, 0, i)
            conn.send(scratch)  # reused buffer: send() must copy it
        data = recv_exact(sock, 8 * n)
    assert [v for (v,) in struct.iter_unpack("!Q", data)] == list(range(n))


def test_shutdown_flushes_output_then_half_closes(make_server: ServerFactory) -> None:
    payload = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        buf.retrieve_all()
        conn.send(payload)
        conn.shutdown()
        conn.send(b"dropped after shutdown")

    server = make_server(on_message=on_message)
    with connect(server) as sock:
        sock.sendall(b"go")
        assert recv_until_eof(sock) == payload
        sock.sendall(b"still readable")  # only our read side was closed


def test_a_round_of_sends_is_written_after_the_round(make_server: ServerFactory) -> None:
    readable_during_round: list[bool] = []
    client: list[socket.socket] = []

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        buf.retrieve_all()
        for piece in (b"one ", b"two ", b"three"):
            conn.send(piece)
        # On loopback a written byte is readable at once.
        readable_during_round.append(bool(select.select(client, [], [], 0)[0]))

    server = make_server(on_message=on_message)
    with connect(server) as sock:
        client.append(sock)
        sock.sendall(b"go")
        assert recv_exact(sock, 13) == b"one two three"
    assert readable_during_round == [False]


def test_without_deferred_writes_each_send_is_written_at_once(
        make_server: ServerFactory) -> None:
    readable_during_round: list[bool] = []
    client: list[socket.socket] = []
    looked = threading.Event()

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        buf.retrieve_all()
        conn.send(b"one ")
        readable_during_round.append(bool(select.select(client, [], [], 0)[0]))
        looked.set()
        conn.send(b"two")

    server = make_server(on_message=on_message)
    server.set_deferred_writes(False)  # read at accept: before the first connection
    with connect(server) as sock:
        client.append(sock)
        sock.sendall(b"go")
        assert looked.wait(WAIT)  # the client reads nothing before the handler looked
        assert recv_exact(sock, 7) == b"one two"
    assert readable_during_round == [True]


def test_what_was_sent_before_a_force_close_still_arrives(make_server: ServerFactory) -> None:
    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        buf.retrieve_all()
        conn.send(b"bye")
        conn.force_close()

    server = make_server(on_message=on_message)
    with connect(server) as sock:
        sock.sendall(b"go")
        assert recv_until_eof(sock) == b"bye"


def test_stop_in_a_handler_still_sends_its_reply(make_server: ServerFactory) -> None:
    servers: list[TcpServer] = []

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        buf.retrieve_all()
        conn.send(b"stopping")
        servers[0].stop()  # one loop: the connection is destroyed in this round

    server = make_server(on_message=on_message)
    servers.append(server)
    with connect(server) as sock:
        sock.sendall(b"quit")
        assert recv_until_eof(sock) == b"stopping"


def test_force_close_from_foreign_thread(make_server: ServerFactory) -> None:
    tracker = ConnTracker()
    server = make_server(on_connection=tracker)
    with connect(server) as sock:
        (conn,) = tracker.wait_up(1)
        conn.force_close()
        assert recv_until_eof(sock) == b""
        tracker.wait_down(1)
        conn.send(b"ignored once closed")


def test_write_complete_runs_before_the_peer_is_read_again(make_server: ServerFactory) -> None:
    # The chat deletes delivered offline messages in its write-complete
    # callback: a logout or close the peer sends after reading them must not
    # be handled before that, or the next login fetches them again.
    order: list[str] = []
    replied, read_twice = threading.Event(), threading.Event()

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        order.append(f"read {buf.retrieve_all().decode()}")
        if len(order) == 1:
            conn.set_write_complete_callback(lambda c: order.append("written"))
            conn.send(b"data")
            # After the flush, hold the loop until the reply is there to read.
            conn.loop.call_before_poll(lambda: replied.wait(WAIT))
        else:
            read_twice.set()

    server = make_server(threads=1, on_message=on_message)
    with connect(server) as sock:
        sock.sendall(b"1")
        assert recv_exact(sock, 4) == b"data"
        sock.sendall(b"2")
        replied.set()
        assert read_twice.wait(WAIT)
    assert order == ["read 1", "written", "read 2"]


def test_high_water_mark_with_slow_reader(make_server: ServerFactory) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    count = 160  # 10 MiB queued at once, far beyond the kernel buffers
    mark = 1 << 20
    hwm_seen: list[int] = []
    hwm_fired, drained = threading.Event(), threading.Event()

    def on_hwm(conn: TcpConnection, queued: int) -> None:
        assert conn.loop.is_in_loop_thread()
        hwm_seen.append(queued)
        hwm_fired.set()

    def on_connection(conn: TcpConnection) -> None:
        if conn.connected:
            conn.set_high_water_mark_callback(on_hwm, mark)
            # The first send completes at once (write complete fires then too);
            # only a drain after the mark was crossed counts here.
            conn.set_write_complete_callback(lambda c: hwm_fired.is_set() and drained.set())
            for _ in range(count):
                conn.send(chunk)

    server = make_server(threads=1, on_connection=on_connection)
    with connect(server) as sock:
        assert hwm_fired.wait(WAIT)  # the client has not read a byte yet
        assert not drained.is_set()
        data = recv_exact(sock, len(chunk) * count)
        assert drained.wait(WAIT)
    assert data == chunk * count
    assert len(hwm_seen) == 1 and hwm_seen[0] >= mark


def test_client_reset_mid_send_leaves_others_alone(make_server: ServerFactory) -> None:
    tracker = ConnTracker()
    big = b"z" * (32 << 20)

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        data = buf.retrieve_all()
        conn.send(big if data == b"big" else data)

    server = make_server(threads=2, on_message=on_message, on_connection=tracker)
    others = [connect(server) for _ in range(3)]
    victim = connect(server)
    tracker.wait_up(4)
    victim.sendall(b"big")
    recv_exact(victim, 100_000)  # the server is mid-send now
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    victim.close()  # RST
    down = tracker.wait_down(1)
    assert down[0].peer_address != others[0].getsockname()
    for i, sock in enumerate(others):
        msg = f"still here {i}".encode() * 1000
        sock.sendall(msg)
        assert recv_exact(sock, len(msg)) == msg
        sock.close()
    tracker.wait_down(4)


def test_peer_count_matches_loops(make_server: ServerFactory) -> None:
    server = make_server(threads=3)
    socks = [connect(server) for _ in range(9)]
    for s in socks:
        s.sendall(b"p")
        assert recv_exact(s, 1) == b"p"
    per_loop = collections.Counter(c.loop for c in server.connections())
    assert sorted(per_loop.values()) == [3, 3, 3]
    for s in socks:
        s.close()


class _FdExhaustedSocket:
    """Wraps the listening socket: accept() fails with EMFILE while ``failing``."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.failing = True
        self.hits: list[float] = []
        self.cond = threading.Condition()

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        if self.failing:
            with self.cond:
                self.hits.append(time.monotonic())
                self.cond.notify_all()
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


def test_accept_pauses_on_emfile_instead_of_spinning(make_server: ServerFactory) -> None:
    server = make_server()
    acceptor = server._acceptor
    fake = _FdExhaustedSocket(acceptor._sock)
    call_in_loop(server.loop, lambda: setattr(acceptor, "_sock", fake))
    with connect(server) as sock:
        with fake.cond:
            assert fake.cond.wait_for(lambda: len(fake.hits) >= 3, WAIT)
            hits = list(fake.hits)
        # A spinning loop would retry within microseconds; the pause is 0.1 s.
        assert hits[2] - hits[0] >= 0.15
        fake.failing = False
        sock.sendall(b"served after the pause")
        assert recv_exact(sock, 22) == b"served after the pause"


def test_a_data_callback_gets_each_read_and_the_buffer_stays_empty(
        make_server: ServerFactory) -> None:
    reads: list[bytes] = []
    buffered: list[int] = []

    def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
        raise AssertionError("the data callback replaces the message callback")

    def on_data(conn: TcpConnection, data: bytes, _t: float) -> None:
        reads.append(data)
        buffered.append(len(conn.input_buffer))
        conn.send(data.upper())

    server = make_server(on_message=on_message)
    server.set_data_callback(on_data)  # before the first connection: each one takes it
    with connect(server) as sock:
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"HELLO"
        sock.sendall(b"again")
        assert recv_exact(sock, 5) == b"AGAIN"
    assert b"".join(reads) == b"helloagain"
    assert buffered == [0] * len(reads)


def test_the_write_batch_reaches_every_loop_of_the_pool(loop_thread: EventLoop) -> None:
    def build() -> TcpServer:
        server = TcpServer(loop_thread, ("127.0.0.1", 0), "batched")
        server.set_thread_num(2)
        server.set_write_batch(0)  # the whole round, as before the batch
        server.start()
        return server

    server = call_in_loop(loop_thread, build)
    try:
        loops = server.thread_pool.get_all_loops()
        assert len(loops) == 2
        assert all(loop._write_batch == sys.maxsize for loop in loops)
        with pytest.raises(ValueError):
            server.set_write_batch(-1)
    finally:
        call_in_loop(loop_thread, server.stop)
