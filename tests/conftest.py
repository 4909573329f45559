"""Fixtures shared by every tier of tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Before anything imports the reactor: its per-message methods check their
# thread too, here and in every server the tests start (reactor/tcpconnection.py).
os.environ["REACTOR_DEBUG"] = "1"

import pytest

from tests.support.mysqldb import throwaway_database


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A throw-away database on the MariaDB of $CHAT_TEST_MYSQL_URL, dropped at the end.

    An unreachable MariaDB makes the tests that need it fail, never skip.
    """
    with throwaway_database() as url:
        yield url
