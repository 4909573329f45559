"""A chat server with its web port, per test module, on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = f"sqlite:///{tmp_path_factory.mktemp('db') / 'chat.db'}"
    proc = ServerProcess(db, threads=2, extra=["--ws-port", "0", "--idle-timeout", "3"]).start()
    yield proc
    proc.kill()
