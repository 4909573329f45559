"""Fixtures of the store suite: every ``store`` test runs on SQLite and MySQL.

MySQL comes from $CHAT_TEST_MYSQL_URL (default mysql://root:@127.0.0.1:3306/);
one throw-away database per session, emptied before each test.  If MySQL
cannot be reached the MySQL tests fail, never skip: CI relies on that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.store import Store, open_store
from tests.support import mysqldb

FAST_COST = 4  # scrypt log2n for tests; test_passwords checks the default once


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/store/" in item.nodeid and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(30))


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    base = mysqldb.base_url()
    try:
        url = mysqldb.create_database(base)
    except Exception as exc:
        pytest.fail(f"MySQL at {base} is unreachable ({exc}); set CHAT_TEST_MYSQL_URL")
    yield url
    mysqldb.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    url: str = request.getfixturevalue("mysql_url")
    open_store(url, password_cost=FAST_COST).close()  # make sure the tables exist
    mysqldb.truncate_tables(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url, password_cost=FAST_COST)
    yield s
    s.close()
