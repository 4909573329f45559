"""Throw-away MySQL/MariaDB databases for tests.

The server comes from ``$CHAT_TEST_MYSQL_URL`` (default
``mysql://root:@127.0.0.1:3306/``).  A test session makes its own database
with a random name and drops it at the end, so parallel runs and leftovers of
other runs never meet.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_URL = "mysql://root:@127.0.0.1:3306/"
TABLES = ("user", "friend", "allgroup", "groupuser", "offlinemessage", "offlinebox", "midnode")


def base_url() -> str:
    """The server to test against, with or without a database name."""
    return os.environ.get("CHAT_TEST_MYSQL_URL", DEFAULT_URL)


def new_database_name(prefix: str = "chat_test") -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (query options are kept)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, ""))


def connect(url: str, *, with_db: bool = True, connect_timeout: int = 5) -> Any:
    """A plain MySQLdb connection (autocommit) for fixtures and checks."""
    import MySQLdb

    p = urlsplit(url)
    args: dict[str, Any] = {
        "host": p.hostname or "127.0.0.1", "port": p.port or 3306,
        "user": unquote(p.username or "root"), "password": unquote(p.password or ""),
        "charset": "utf8mb4", "autocommit": True, "connect_timeout": connect_timeout,
    }
    name = p.path.lstrip("/")
    if with_db and name:
        args["database"] = name
    return MySQLdb.connect(**args)


def _run(url: str, *statements: str) -> None:
    con = connect(url, with_db=False)
    try:
        cur = con.cursor()
        for statement in statements:
            cur.execute(statement)
    finally:
        con.close()


def create_database(url: str | None = None, name: str | None = None) -> str:
    """Create a fresh database on the server of ``url``; return its URL."""
    url = url or base_url()
    name = name or new_database_name()
    _run(url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    return with_database(url, name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _run(url, f"DROP DATABASE IF EXISTS `{name}`")


def truncate_tables(url: str, tables: tuple[str, ...] = TABLES) -> None:
    """Empty the chat tables (and reset their auto-increment counters)."""
    con = connect(url)
    try:
        cur = con.cursor()
        for table in tables:
            cur.execute(f"TRUNCATE TABLE `{table}`")
    finally:
        con.close()


@contextmanager
def throwaway_database(url: str | None = None) -> Iterator[str]:
    """``with throwaway_database() as db_url:`` a database dropped afterwards."""
    db_url = create_database(url)
    try:
        yield db_url
    finally:
        drop_database(db_url)
