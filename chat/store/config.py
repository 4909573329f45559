"""Parse a store URL plus keyword options into what the pool needs.

    sqlite:///chat.db               a file relative to the working directory
    sqlite:////var/lib/chat/chat.db an absolute path (four slashes, as SQLAlchemy)
    mysql://user:password@host:3306/dbname?pool_size=8&ping=1

Options come from the query string and from keyword arguments (keywords win);
an unknown option is an error, so a typo does not pass silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .dialect import MYSQL, SQLITE, Dialect
from .passwords import DEFAULT_LOG2N

# option -> default; None means "backend decides"
_DEFAULTS: dict[str, int] = {
    "pool_size": 8,  # most connections open at once (and kept idle)
    "ping": 1,  # DBUtils: check a MySQL connection when it leaves the pool
    "password_cost": -1,  # scrypt log2n; -1: $CHAT_SCRYPT_LOG2N or 14
    "connect_timeout": 5,  # seconds (MySQL)
    "read_timeout": 30,  # seconds (MySQL); a hung server fails a call at most this late
    "write_timeout": 30,  # seconds (MySQL)
    "busy_timeout": 5000,  # milliseconds (SQLite): wait for the writer lock this long
    "create_database": 1,  # MySQL: CREATE DATABASE IF NOT EXISTS when allowed
}

_DB_NAME = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


@dataclass(frozen=True)
class Config:
    dialect: Dialect
    database: str  # SQLite file path or MySQL database name
    options: dict[str, int]
    server: dict[str, Any] = field(default_factory=dict)  # MySQL host/port/user/password

    def describe(self) -> str:
        """The URL without the password, for logs."""
        if self.dialect is SQLITE:
            return f"sqlite:///{self.database}"
        s = self.server
        return f"mysql://{s['user']}@{s['host']}:{s['port']}/{self.database}"


def _options(query: str, overrides: dict[str, Any]) -> dict[str, int]:
    given: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    given.update(overrides)
    unknown = set(given) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown store option(s): {', '.join(sorted(unknown))}")
    options = dict(_DEFAULTS)
    for key, value in given.items():
        options[key] = int(value)
    if options["password_cost"] < 0:
        options["password_cost"] = int(os.environ.get("CHAT_SCRYPT_LOG2N", DEFAULT_LOG2N))
    if options["pool_size"] < 1:
        raise ValueError("pool_size must be at least 1")
    return options


def parse_url(url: str, **overrides: Any) -> Config:
    """Split ``url`` into a :class:`Config`; raise ValueError if it is malformed."""
    parts = urlsplit(url)
    options = _options(parts.query, overrides)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:])  # drop the slash after the empty host
        if parts.netloc or not path or path == ":memory:":
            raise ValueError(f"expected sqlite:///path/to/file.db, got {url!r}")
        return Config(SQLITE, path, options)
    if parts.scheme in ("mysql", "mariadb"):
        name = parts.path.lstrip("/")
        if not _DB_NAME.match(name):
            raise ValueError(f"expected mysql://user:password@host:port/dbname, got {url!r}")
        server = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
        }
        return Config(MYSQL, name, options, server)
    raise ValueError(f"unsupported store URL scheme in {url!r} (sqlite or mysql)")
