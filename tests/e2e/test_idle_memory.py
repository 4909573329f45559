"""What a logged-in idle user keeps in the server's Python objects.

``benchmarks/memory.py`` measures a deployed server's whole RSS at 10,000
connections; this counts, with the server in this process and its clients
on real sockets, only what the server's own code allocates and keeps for
each connection and login, so that a regression shows in the tests.
"""

from __future__ import annotations

import gc
import os
import socket
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import orjson
import pytest

import chat
import reactor
from chat.protocol import MsgId, encode
from chat.server import ChatServer, parse_args
from reactor import EventLoopThread
from tests.support.server import TEST_ENV

COUNT = 200
WARM = 20
# Bytes kept per logged-in idle user by chat/ and reactor/ code, the socket
# objects included: 2,480 on Python 3.11 (3,806 with a mailbox kept after a
# login's one post, a set, a list and a bytearray made up front per session,
# and the socket's own address kept); the bound leaves room for other versions.
BOUND = 2_900
TIMEOUT = 30.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    args = parse_args(["-H", "127.0.0.1", "-p", "0", "-t", "2", "--db",
                       f"sqlite:///{tmp_path / 'chat.db'}", "--log-level", "WARNING"])
    thread = EventLoopThread("memory-main")
    loop = thread.start_loop()
    built: Future[ChatServer] = Future()

    def build() -> None:
        try:
            srv = ChatServer(loop, args)
            srv.start()
            built.set_result(srv)
        except BaseException as exc:
            built.set_exception(exc)

    loop.run_in_loop(build)
    srv = built.result(TIMEOUT)
    yield srv
    # The test's logins end as it closes its sockets: their releases finish
    # here, not in a thread that outlives the test.
    assert srv.service.presence.settle(TIMEOUT)

    def stop() -> None:
        srv.service.shutdown()
        srv.tcp.stop()
        loop.quit()

    loop.run_in_loop(stop)
    thread.stop(TIMEOUT)


def _replies(sock: socket.socket, count: int) -> list[dict[str, object]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, "the server closed a connection"
        data += chunk
    return [orjson.loads(line) for line in data.split(b"\n")[:count]]


def _register(port: int, count: int) -> list[int]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"".join(encode({"msgid": MsgId.REG_MSG, "name": f"idle{i}",
                                      "password": "pw"}) for i in range(count)))
        return [int(str(r["id"])) for r in _replies(sock, count)]


def _log_in(port: int, ids: list[int]) -> list[socket.socket]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in ids]
    for sock, uid in zip(socks, ids, strict=True):
        sock.sendall(encode({"msgid": MsgId.LOGIN_MSG, "id": uid, "password": "pw"}))
    for sock in socks:
        (ack,) = _replies(sock, 1)
        assert ack["msgid"] == MsgId.LOGIN_MSG_ACK and ack["errno"] == 0, ack
    return socks


def test_a_logged_in_idle_user_is_small(server: ChatServer) -> None:
    port = server.tcp.address[1]
    ids = _register(port, WARM + COUNT)
    warm = _log_in(port, ids[:WARM])  # the first use of each code path is not counted
    ours = [tracemalloc.Filter(True, os.path.join(os.path.dirname(pkg.__file__), "*"),
                               all_frames=True) for pkg in (chat, reactor)]
    gc.collect()
    tracemalloc.start(40)
    try:
        before = tracemalloc.take_snapshot().filter_traces(ours)
        socks = _log_in(port, ids[WARM:])
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(ours)
    finally:
        tracemalloc.stop()
    try:
        kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        assert kept / COUNT < BOUND, after.compare_to(before, "lineno")[:10]
    finally:
        for sock in warm + socks:
            sock.close()
