"""A second TcpServer on another port, served by the first one's sub-reactors."""

from __future__ import annotations

import socket
import threading

import pytest

from reactor import Buffer, EventLoop, TcpConnection, TcpServer

from .conftest import WAIT, call_in_loop


def test_two_ports_one_pool(loop_thread: EventLoop) -> None:
    served_in: dict[str, set[int]] = {"first": set(), "second": set()}
    lock = threading.Lock()

    def tagging_echo(tag: bytes) -> object:
        def on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
            with lock:
                served_in[tag.decode()].add(threading.get_ident())
            conn.send(tag + b":" + buf.retrieve_all())
        return on_message

    def build() -> tuple[TcpServer, TcpServer]:
        first = TcpServer(loop_thread, ("127.0.0.1", 0), "first")
        first.set_thread_num(2)
        first.set_message_callback(tagging_echo(b"first"))  # type: ignore[arg-type]
        second = TcpServer(loop_thread, ("127.0.0.1", 0), "second", share_pool_of=first)
        second.set_message_callback(tagging_echo(b"second"))  # type: ignore[arg-type]
        first.start()
        second.start()
        return first, second

    first, second = call_in_loop(loop_thread, build)
    try:
        assert second.thread_pool is first.thread_pool
        pool_threads = call_in_loop(loop_thread, lambda: {
            call_in_loop(loop, threading.get_ident) for loop in first.thread_pool.get_all_loops()})
        assert len(pool_threads) == 2
        for server, tag in ((first, b"first"), (second, b"second")):
            for _ in range(4):  # round robin: both loops of the pool get some
                with socket.create_connection(server.address, timeout=WAIT) as sock:
                    sock.sendall(b"hi")
                    assert sock.recv(64) == tag + b":hi"
        assert served_in["first"] == pool_threads
        assert served_in["second"] == pool_threads
    finally:
        call_in_loop(loop_thread, second.stop)  # before the owner, which stops the pool
        # The owner's pool still runs: its port still serves.
        with socket.create_connection(first.address, timeout=WAIT) as sock:
            sock.sendall(b"still")
            assert sock.recv(64) == b"first:still"
        call_in_loop(loop_thread, first.stop)


def test_sharing_needs_the_same_accepting_loop(loop_thread: EventLoop) -> None:
    other = EventLoop()  # this thread's loop, never run
    first = call_in_loop(loop_thread, lambda: TcpServer(loop_thread, ("127.0.0.1", 0), "first"))
    with pytest.raises(ValueError, match="owner's loop"):
        TcpServer(other, ("127.0.0.1", 0), "second", share_pool_of=first)
    call_in_loop(loop_thread, first.stop)
    other.close()
