"""The few places where SQLite and MySQL spell things differently.

Queries are written once, in qmark style (``?``) with ``{insert_ignore}``
where a duplicate row must be skipped, and :meth:`Dialect.sql` turns them into
what the driver expects.  DDL differences (auto-increment keys, the long text
type, enums, table options, where secondary indexes go) live here too, and
``schema.py`` renders one table description through them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    paramstyle: str  # 'qmark' (sqlite3) or 'format' (MySQLdb)
    insert_ignore: str
    serial: str  # an INT auto-increment primary key column
    bigserial: str  # a 64-bit one
    long_text: str  # holds a 64 KiB frame and more (1 MiB tested)
    table_options: str  # appended after the closing parenthesis
    inline_indexes: bool  # KEY inside CREATE TABLE (MySQL) or CREATE INDEX after
    native_enum: bool
    upsert: str  # "add on conflict": {key} is the key column, {sets} col=col+new.col pairs
    new_row: str  # how the upsert's SET names the proposed row's column
    lock_rows: str  # appended to a SELECT whose rows the transaction goes on to change

    @functools.lru_cache(maxsize=256)  # noqa: B019 - two dialect instances, live forever
    def sql(self, query: str) -> str:
        """Translate a qmark query with ``{insert_ignore}`` for this driver."""
        text = query.replace("{insert_ignore}", self.insert_ignore)
        if self.paramstyle == "format":
            # MySQLdb interpolates with %, so a literal % must be doubled.
            text = text.replace("%", "%%").replace("?", "%s")
        return text

    def upsert_adding(self, table: str, key: str, columns: tuple[str, ...]) -> str:
        """INSERT of one row whose ``columns`` add to those of an existing ``key`` row."""
        names = ", ".join((key, *columns))
        marks = ", ".join("?" for _ in (key, *columns))
        sets = ", ".join(f"{c} = {c} + {self.new_row.format(c)}" for c in columns)
        return (f"INSERT INTO {table} ({names}) VALUES ({marks})"
                + self.upsert.format(key=key, sets=sets))

    def enum(self, column: str, values: tuple[str, ...]) -> str:
        """Column type of a small enumeration."""
        quoted = ",".join(f"'{v}'" for v in values)
        if self.native_enum:
            return f"ENUM({quoted})"
        width = max(len(v) for v in values)
        return f"VARCHAR({width}) CHECK ({column} IN ({quoted}))"


SQLITE = Dialect(
    name="sqlite",
    paramstyle="qmark",
    insert_ignore="INSERT OR IGNORE",
    # AUTOINCREMENT: ids of deleted rows are never reused (user ids are
    # public, offline message ids are compared by delete_offline).
    serial="INTEGER PRIMARY KEY AUTOINCREMENT",
    bigserial="INTEGER PRIMARY KEY AUTOINCREMENT",
    long_text="TEXT",
    table_options="",
    inline_indexes=False,
    native_enum=False,
    upsert=" ON CONFLICT({key}) DO UPDATE SET {sets}",
    new_row="excluded.{}",
    lock_rows="",  # writers are serialized: the transaction began IMMEDIATE
)

MYSQL = Dialect(
    name="mysql",
    paramstyle="format",
    insert_ignore="INSERT IGNORE",
    serial="INT NOT NULL AUTO_INCREMENT PRIMARY KEY",
    bigserial="BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
    long_text="MEDIUMTEXT",  # up to 16 MiB; TEXT stops at 64 KiB
    table_options=" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    inline_indexes=True,
    native_enum=True,
    upsert=" ON DUPLICATE KEY UPDATE {sets}",
    new_row="VALUES({})",
    lock_rows=" FOR UPDATE",
)
