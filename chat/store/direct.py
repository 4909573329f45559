"""What a migration step works with: one direct connection, and the version table.

Migrations do not go through the pool: they need their own transactions
(SQLite's ``BEGIN IMMEDIATE``), MySQL's named lock on one connection, and
the tables' columns, which the store's queries never ask for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .dialect import SQLITE, Dialect
from .schema import LATEST, VERSION_TABLE, create_table


class Db:
    """A direct connection, the dialect's spelling, and a little introspection."""

    def __init__(self, con: Any, dialect: Dialect) -> None:
        self.con = con
        self.dialect = dialect

    def run(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.con.cursor()
        cur.execute(self.dialect.sql(query), params)
        return list(cur.fetchall()) if cur.description else []

    def many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.con.cursor().executemany(self.dialect.sql(query), rows)

    def ddl(self, statement: str) -> None:
        self.con.cursor().execute(statement)  # no parameters: nothing is interpolated

    def tables(self) -> set[str]:
        if self.dialect is SQLITE:
            query = ("SELECT name FROM sqlite_master WHERE type = 'table'"
                     " AND name NOT LIKE 'sqlite?_%' ESCAPE '?'")
            return {r[0] for r in self.con.execute(query).fetchall()}
        return {text_of(r[0]) for r in self.run(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")}

    def columns(self, table: str) -> set[str]:
        if self.dialect is SQLITE:
            return {r[1] for r in self.con.execute(f'PRAGMA table_info("{table}")').fetchall()}
        return {text_of(r[0]) for r in self.run(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", (table,))}

    def begin(self) -> None:
        if self.dialect is SQLITE:
            self.con.execute("BEGIN IMMEDIATE")  # the writer lock: one migrator at a time

    def commit(self) -> None:
        if self.dialect is SQLITE:
            if self.con.in_transaction:
                self.con.execute("COMMIT")
        else:
            self.con.commit()

    def rollback(self) -> None:
        if self.dialect is SQLITE:
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")
        else:
            self.con.rollback()


def text_of(value: Any) -> str:
    """A text column's value as str (MySQLdb may return bytes for a binary collation)."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Step:
    """One unit of an upgrade: committed as a whole where the store allows."""

    title: str
    statements: tuple[str, ...]  # the SQL it runs, for --dry-run and sql/
    notes: tuple[str, ...]  # what it does beyond that SQL, in words
    apply: Callable[[Db], None]


def ensure_version_table(db: Db) -> None:
    for statement in create_table(db.dialect, VERSION_TABLE, LATEST):
        db.ddl(statement)


def record(db: Db, version: int, description: str) -> None:
    """Note that ``version`` is reached (in the caller's transaction)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    db.run("INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
           (version, now, description))
