"""The tables, described once, versioned, and rendered for each dialect.

Each table says which schema version created it (``since``) and which
columns later versions added (``added``); ``migrations.py`` turns version N
into the statements that make a version N-1 database a version N one, so a
fresh database and an upgraded one end with the same tables, column for
column.  ``sql/`` holds the MySQL (and SQLite) renderings for readers
(``python -m chat.store.sqlfiles sql`` writes them; a test keeps them equal).
There are no foreign keys (as in the original design): the service checks
that users and groups exist before it links them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialect import Dialect

LATEST = 2  # the schema version this code reads and writes


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]  # "<name> <type>"; {serial} {bigserial} {text} {enum:a,b}
    constraints: tuple[str, ...] = ()
    indexes: tuple[tuple[str, str], ...] = ()  # (index name, column list)
    since: int = 1  # the schema version that created the table
    added: tuple[tuple[int, str], ...] = ()  # (version, column) appended later, in order

    def columns_at(self, version: int) -> tuple[str, ...]:
        """The column specs this table has at schema ``version``."""
        return self.columns + tuple(spec for v, spec in self.added if v <= version)


TABLES: tuple[Table, ...] = (
    Table(
        "user",
        (
            "id {serial}",
            "name VARCHAR(50) NOT NULL",
            "password VARCHAR(255) NOT NULL",
            "state {enum:online,offline} NOT NULL DEFAULT 'offline'",
            "server VARCHAR(64) NULL",
        ),
        ("CONSTRAINT uq_user_name UNIQUE (name)",),
        (("idx_user_server", "server"),),
    ),
    Table(
        "friend",
        ("userid INT NOT NULL", "friendid INT NOT NULL"),
        ("PRIMARY KEY (userid, friendid)",),
    ),
    Table(
        "allgroup",
        ("id {serial}", "groupname VARCHAR(50) NOT NULL", "groupdesc VARCHAR(200) NOT NULL"),
        ("CONSTRAINT uq_allgroup_groupname UNIQUE (groupname)",),
    ),
    Table(
        "groupuser",
        (
            "groupid INT NOT NULL",
            "userid INT NOT NULL",
            "grouprole {enum:creator,normal} NOT NULL DEFAULT 'normal'",
        ),
        ("PRIMARY KEY (groupid, userid)",),
        (("idx_groupuser_userid", "userid"),),
    ),
    Table(
        "offlinemessage",
        ("id {bigserial}", "userid INT NOT NULL", "message {text} NOT NULL"),
        (),
        (("idx_offlinemessage_userid_id", "userid, id"),),
        # size: the UTF-8 byte length of message
        added=((2, "size INT NOT NULL DEFAULT 0"),),
    ),
    # Per user: how many offline messages are stored and their total size.
    Table(
        "offlinebox",
        ("userid INT NOT NULL PRIMARY KEY", "messages INT NOT NULL DEFAULT 0",
         "bytes BIGINT NOT NULL DEFAULT 0"),
        since=2,
    ),
    # Servers claim a node number (part of every message id) here.
    Table(
        "midnode",
        ("node INT NOT NULL PRIMARY KEY", "server VARCHAR(64) NOT NULL",
         "lease BIGINT NOT NULL DEFAULT 0"),
        ("CONSTRAINT uq_midnode_server UNIQUE (server)",),
        since=2,
    ),
)

# One row per migration applied; the database's version is the largest.
VERSION_TABLE = Table(
    "schema_version",
    ("version INT NOT NULL PRIMARY KEY", "applied_at DATETIME NOT NULL",
     "description VARCHAR(200) NOT NULL"),
    since=0,
)


def column_name(spec: str) -> str:
    return spec.partition(" ")[0]


def render_column(dialect: Dialect, spec: str) -> str:
    name, _, rest = spec.partition(" ")
    if rest.startswith("{enum:"):
        values, _, tail = rest[len("{enum:"):].partition("}")
        rest = dialect.enum(name, tuple(values.split(","))) + tail
    rest = rest.format(serial=dialect.serial, bigserial=dialect.bigserial,
                       text=dialect.long_text)
    return f"{name} {rest}"


def create_table(dialect: Dialect, table: Table, version: int, name: str = "") -> list[str]:
    """CREATE TABLE (and CREATE INDEX) IF NOT EXISTS for ``table`` as of ``version``.

    ``name`` renders it under another name (the original's upgrade builds
    each table beside the old one, then swaps them).
    """
    name = name or table.name
    body = [render_column(dialect, c) for c in table.columns_at(version)]
    body += list(table.constraints)
    if dialect.inline_indexes:
        body += [f"KEY {index} ({cols})" for index, cols in table.indexes]
    inner = ",\n  ".join(body)
    statements = [f"CREATE TABLE IF NOT EXISTS {name} (\n  {inner}\n){dialect.table_options}"]
    if not dialect.inline_indexes:
        statements += [f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({cols})"
                       for index, cols in table.indexes]
    return statements


def tables_at(version: int) -> tuple[Table, ...]:
    """The tables a database of schema ``version`` has (not the version table)."""
    return tuple(t for t in TABLES if 1 <= t.since <= version)


def expected_columns(version: int) -> dict[str, set[str]]:
    """Table name -> its column names at schema ``version``."""
    return {t.name: {column_name(c) for c in t.columns_at(version)} for t in tables_at(version)}
