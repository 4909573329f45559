"""A chat server per test module, over each storage backend, and users to drive it."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from client.session import ChatSession
from tests.support.server import ServerProcess

BACKENDS = ["sqlite", "mysql"]


@pytest.fixture(scope="module", params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'chat.db'}"
    url: str = request.getfixturevalue("mysql_url")
    return url


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(db_url, threads=2).start()
    yield proc
    proc.kill()


@dataclass
class Account:
    id: int
    name: str
    password: str


_counter = itertools.count()


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{next(_counter)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def sessions(server: ServerProcess) -> Iterator[Callable[[], ChatSession]]:
    """Opens connections to the module's server; closes them after the test."""
    opened: list[ChatSession] = []

    def connect() -> ChatSession:
        s = server.connect()
        opened.append(s)
        return s

    yield connect
    for s in opened:
        s.close()


@pytest.fixture
def account(sessions: Callable[[], ChatSession]) -> Callable[..., Account]:
    """Registers a fresh user and returns its id, name and password."""

    def make(name: str | None = None, password: str = "secret") -> Account:
        name = name or unique_name()
        with_conn = sessions()
        ack = with_conn.register(name, password)
        assert ack["errno"] == 0, ack
        with_conn.close()
        return Account(ack["id"], name, password)

    return make


@pytest.fixture
def user(sessions: Callable[[], ChatSession],
         account: Callable[..., Account]) -> Callable[..., ChatSession]:
    """A logged-in session of a fresh user; ``session.account`` holds its account."""

    def make(name: str | None = None) -> ChatSession:
        acct = account(name)
        s = sessions()
        ack = s.login(acct.id, acct.password)
        assert ack["errno"] == 0, ack
        s.account = acct  # type: ignore[attr-defined]
        s.login_ack = ack  # type: ignore[attr-defined]
        return s

    return make

