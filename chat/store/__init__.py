"""Storage port of the chat server: SQLite or MySQL behind one API.

    store = open_store("sqlite:///chat.db")
    store = open_store("mysql://chat:secret@127.0.0.1:3306/chat?pool_size=8")

See docs/storage.md for the URL options, the schema and the failure model.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from .config import parse_url
from .dialect import MYSQL
from .errors import GroupNameTaken, NameTaken, StoreError, StoreUnavailable, UnknownSchema
from .migrations import upgrade
from .pool import Blocking, ConnectionPool, ensure_mysql_database
from .records import Group, GroupMember, User
from .store import Store

__all__ = [
    "Group", "GroupMember", "GroupNameTaken", "NameTaken", "Store", "StoreError",
    "StoreUnavailable", "UnknownSchema", "User", "open_store",
]


def open_store(url: str, *, blocking: Blocking = nullcontext, **options: Any) -> Store:
    """Open (and if needed create) the database at ``url``; safe to share by threads.

    Pending schema migrations run first (see ``migrations.py``).  Every query
    and password hash runs inside ``blocking()`` (see ``pool.py``).

    Raises ValueError for a malformed URL or option, StoreUnavailable if the
    database cannot be reached, UnknownSchema (having changed nothing) if it
    holds tables this code does not know, StoreError if a migration failed.
    """
    config = parse_url(url, **options)
    if config.dialect is MYSQL and config.options["create_database"]:
        ensure_mysql_database(config)
    upgrade(config)
    return Store(ConnectionPool(config, blocking), config.options["password_cost"])
