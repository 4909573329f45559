"""Servers with small limits, one per test, so each limit can be reached quickly."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from client.session import ChatSession
from tests.support.server import ServerProcess


@pytest.fixture
def limited_server(tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*options: str, threads: int = 2) -> ServerProcess:
        db = f"sqlite:///{tmp_path / f'chat{len(started)}.db'}"
        proc = ServerProcess(db, threads=threads, extra=list(options)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def logged_in(server: ServerProcess, name: str, password: str = "pw") -> ChatSession:
    s = server.connect()
    uid = s.register(name, password)["id"]
    assert s.login(uid, password)["errno"] == 0
    return s
