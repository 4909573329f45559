"""Fixtures for the reactor tests: a loop in a thread and servers on 127.0.0.1:0."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from reactor import Buffer, EventLoop, EventLoopThread, TcpConnection, TcpServer

T = TypeVar("T")
WAIT = 20.0  # upper bound for any single wait; tests normally finish in ms


def call_in_loop(loop: EventLoop, fn: Callable[[], T], timeout: float = WAIT) -> T:
    """Run ``fn`` in ``loop``'s thread and return its result (or raise its exception)."""
    done = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test thread
            box["error"] = exc
        finally:
            done.set()

    loop.run_in_loop(run)
    assert done.wait(timeout), "loop did not run the callback in time"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


@pytest.fixture
def loop_thread() -> Iterator[EventLoop]:
    thread = EventLoopThread("test-loop")
    loop = thread.start_loop()
    yield loop
    thread.stop(timeout=WAIT)


def echo_on_message(conn: TcpConnection, buf: Buffer, _t: float) -> None:
    conn.send(buf.retrieve_all())


ServerFactory = Callable[..., TcpServer]


@pytest.fixture
def make_server(loop_thread: EventLoop) -> Iterator[ServerFactory]:
    """Build and start TcpServers in ``loop_thread``; stop them all at teardown."""
    servers: list[TcpServer] = []

    def factory(
        threads: int = 0,
        on_message: Callable[[TcpConnection, Buffer, float], None] = echo_on_message,
        on_connection: Callable[[TcpConnection], None] | None = None,
        name: str = "test",
    ) -> TcpServer:
        def build() -> TcpServer:
            server = TcpServer(loop_thread, ("127.0.0.1", 0), name)
            server.set_thread_num(threads)
            server.set_message_callback(on_message)
            if on_connection is not None:
                server.set_connection_callback(on_connection)
            server.start()
            return server

        server = call_in_loop(loop_thread, build)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        call_in_loop(loop_thread, server.stop)
