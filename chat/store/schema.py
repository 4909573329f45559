"""The tables, described once, versioned, and rendered for each dialect.

``TABLES`` describes the tables as the code uses them now; ``TABLE_SINCE``
and ``COLUMN_SINCE`` say which schema version created each table and added
each later column, and ``migrations.py`` turns version N into the statements
that make a version N-1 database a version N one, so a fresh database and an
upgraded one end with the same tables, column for column.  ``sql/`` holds
the MySQL (and SQLite) renderings for readers (``python -m
chat.store.sqlfiles sql`` writes them; a test keeps them equal).
There are no foreign keys (as in the original design): the service checks
that users and groups exist before it links them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialect import Dialect

LATEST = 2  # the schema version this code reads and writes


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # "<name> <type>"; {serial} {bigserial} {text} {enum:a,b}
    constraints: tuple[str, ...] = ()
    indexes: tuple[tuple[str, str], ...] = ()  # (index name, column list)


# The history of the tables below: the schema version that created a table
# (1 if not listed), and the version that added a column to an older table
# (such columns come last, in version order, as ALTER TABLE appends them).
TABLE_SINCE: dict[str, int] = {"offlinebox": 2, "midnode": 2}
COLUMN_SINCE: dict[tuple[str, str], int] = {("offlinemessage", "size"): 2}

# One row per migration applied; the database's version is the largest.
VERSION_TABLE = Table(
    "schema_version",
    ("version INT NOT NULL PRIMARY KEY", "applied_at DATETIME NOT NULL",
     "description VARCHAR(200) NOT NULL"),
)


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
        ("id {bigserial}", "userid INT NOT NULL", "message {text} NOT NULL",
         "size INT NOT NULL DEFAULT 0"),
        (),
        (("idx_offlinemessage_userid_id", "userid, id"),),
    ),
    # Per user: how many offline messages are stored and their total size, so
    # the caps cost one row, not a scan of the backlog.
    Table(
        "offlinebox",
        ("userid INT NOT NULL PRIMARY KEY", "messages INT NOT NULL DEFAULT 0",
         "bytes BIGINT NOT NULL DEFAULT 0"),
    ),
    # The node numbers that servers claim for their message ids (chat/mids.py).
    Table(
        "midnode",
        ("node INT NOT NULL PRIMARY KEY", "server VARCHAR(64) NOT NULL",
         "lease BIGINT NOT NULL DEFAULT 0"),
        ("CONSTRAINT uq_midnode_server UNIQUE (server)",),
    ),
)


def column_name(spec: str) -> str:
    return spec.partition(" ")[0]


def since(table: Table) -> int:
    """The schema version that created ``table``."""
    return TABLE_SINCE.get(table.name, 1)


def column_since(table: Table, spec: str) -> int:
    """The schema version that gave ``table`` the column ``spec``."""
    return COLUMN_SINCE.get((table.name, column_name(spec)), since(table))


def columns_at(table: Table, version: int) -> tuple[str, ...]:
    """The column specs ``table`` has at schema ``version``."""
    return tuple(c for c in table.columns if column_since(table, c) <= version)


def added_at(table: Table, version: int) -> tuple[str, ...]:
    """The columns migration ``version`` adds to ``table``, made by an earlier one."""
    if since(table) >= version:
        return ()
    return tuple(c for c in table.columns if column_since(table, c) == version)


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
    body = [render_column(dialect, c) for c in columns_at(table, version)]
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
    return tuple(t for t in TABLES if since(t) <= version)


def expected_columns(version: int) -> dict[str, set[str]]:
    """Table name -> its column names at schema ``version``."""
    return {t.name: {column_name(c) for c in columns_at(t, version)} for t in tables_at(version)}
