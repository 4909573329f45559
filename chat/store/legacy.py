"""The upgrade from the original C++ ChatServer's MySQL database.

The original's tables (its ``chat.sql``): ``user(id, name, password, state)``
with passwords in plain text, ``friend(userid, friendid)`` with one row per
direction added, ``allgroup``, ``groupuser`` with a nullable role, and
``offlinemessage(userid, message)`` without any key, latin1 or utf8 (3-byte)
text throughout.  They are recognised by their names and columns.

The upgrade builds each of today's version 1 tables beside the old one
(``<name>__upgrade``), fills it, then swaps all five in one ``RENAME TABLE``
(atomic in MySQL) and drops the old ones (``<name>__original``).  MySQL
commits every DDL statement at once, so the order is what makes a failure
safe: until the swap the original tables are untouched and a new run
starts the copies over; after it the database is today's version 1 and the
leftovers are dropped by the next run.  Migration 0002 then gives the stored
messages their ids and rewrites ``toid``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from .dialect import MYSQL
from .direct import Db, Step, ensure_version_table, record, text_of
from .passwords import hash_password
from .schema import TABLES, create_table

log = logging.getLogger("chat.store.migrate")

ORIGINAL_COLUMNS: dict[str, set[str]] = {
    "user": {"id", "name", "password", "state"},
    "friend": {"userid", "friendid"},
    "allgroup": {"id", "groupname", "groupdesc"},
    "groupuser": {"groupid", "userid", "grouprole"},
    "offlinemessage": {"userid", "message"},
}
NEW, OLD = "__upgrade", "__original"
UNUSABLE_PASSWORD = "!"  # no password verifies against it (see passwords.py)
_PROGRESS_EVERY = 500  # users hashed between two progress lines

# Everything but the users, whose passwords are hashed in Python.  INSERT
# IGNORE drops exact duplicates, which the original's keys allowed.
_COPY = (
    # Friendship is mutual now: each row also gives its reverse.
    "INSERT IGNORE INTO friend__upgrade (userid, friendid) SELECT userid, friendid FROM friend",
    "INSERT IGNORE INTO friend__upgrade (userid, friendid) SELECT friendid, userid FROM friend",
    "INSERT INTO allgroup__upgrade (id, groupname, groupdesc)"
    " SELECT id, groupname, COALESCE(groupdesc, '') FROM allgroup",
    # A member listed twice keeps the creator role if either row has it.
    "INSERT IGNORE INTO groupuser__upgrade (groupid, userid, grouprole)"
    " SELECT groupid, userid, COALESCE(grouprole, 'normal') FROM groupuser"
    " ORDER BY grouprole = 'creator' DESC",
    # The original's rows have no key, so their order is their insertion
    # order: InnoDB keeps a table without a primary key in a hidden clustered
    # index on an increasing row id, and a plain SELECT without ORDER BY
    # scans that index.  INSERT ... SELECT numbers the rows as it reads them,
    # so the new auto-increment id keeps the order each user's messages
    # arrived in.
    "INSERT INTO offlinemessage__upgrade (userid, message) SELECT userid, message"
    " FROM offlinemessage",
)


def is_leftover(table: str) -> bool:
    """A table an interrupted upgrade left behind (dropped or rebuilt)."""
    return any(table == name + suffix for name in ORIGINAL_COLUMNS for suffix in (NEW, OLD))


def is_original(db: Db, tables: set[str]) -> bool:
    """True if the five tables are there with exactly the original's columns."""
    if not set(ORIGINAL_COLUMNS) <= tables:
        return False
    return all(db.columns(name) == cols for name, cols in ORIGINAL_COLUMNS.items())


def _build() -> list[str]:
    out = []
    for table in TABLES:
        if table.name in ORIGINAL_COLUMNS:
            out.append(f"DROP TABLE IF EXISTS {table.name}{NEW}")
            out += create_table(MYSQL, table, 1, table.name + NEW)
    return out


def _swap() -> list[str]:
    pairs = ", ".join(f"{t} TO {t}{OLD}, {t}{NEW} TO {t}" for t in ORIGINAL_COLUMNS)
    return [f"RENAME TABLE {pairs}"] + [f"DROP TABLE {t}{OLD}" for t in ORIGINAL_COLUMNS]


def upgrade_step(password_cost: int) -> Step:
    """The step that turns the original's tables into today's version 1."""
    def apply(db: Db) -> None:
        for statement in _build():
            db.ddl(statement)
        _copy_users(db, password_cost)
        for statement in _COPY:
            db.run(statement)
        _keep_auto_increment(db)
        db.commit()  # the copies are complete before the swap
        for statement in _swap():
            db.ddl(statement)
        ensure_version_table(db)
        record(db, 1, "upgraded from the original C++ server's tables")
    statements = (
        *_build(), "INSERT INTO user__upgrade (id, name, password) VALUES (<each user>)",
        *_COPY, *(f"ALTER TABLE {t}{NEW} AUTO_INCREMENT = <that of {t}>"
                  for t in ("user", "allgroup")),
        *_swap(), "INSERT INTO schema_version (version, applied_at, description)"
                  " VALUES (1, <now, UTC>, 'upgraded from the original C++ server''s tables')")
    notes = (
        "every user keeps id, name and password (hashed with scrypt, log2n"
        f" {password_cost}); everybody starts offline;",
        "friendships become mutual; groups, roles and offline messages are kept, in order",
    )
    return Step("upgrade from the original C++ server", statements, notes, apply)


def _copy_users(db: Db, password_cost: int) -> None:
    rows = db.run("SELECT id, name, password FROM user ORDER BY id")
    if len(rows) >= _PROGRESS_EVERY:
        log.info("hashing the passwords of %d users (scrypt log2n %d); this takes a while",
                    len(rows), password_cost)

    def stored(password: object) -> str:
        if password is None:
            return UNUSABLE_PASSWORD
        return hash_password(text_of(password), password_cost)

    # hashlib.scrypt releases the GIL, so the hashes use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        batch = []
        for done, (row, hashed) in enumerate(
                zip(rows, pool.map(stored, (r[2] for r in rows)), strict=True), 1):
            user_id, name = row[0], row[1]
            batch.append((user_id, text_of(name) if name is not None else f"user{user_id}",
                          hashed))
            if done % _PROGRESS_EVERY == 0 or done == len(rows):
                db.many("INSERT INTO user__upgrade (id, name, password) VALUES (?, ?, ?)", batch)
                batch = []
                if len(rows) >= _PROGRESS_EVERY:
                    log.info("hashed %d of %d passwords", done, len(rows))


def _keep_auto_increment(db: Db) -> None:
    """Ids of deleted users and groups are not given again (as before the upgrade)."""
    for table in ("user", "allgroup"):
        rows = db.run("SELECT AUTO_INCREMENT FROM information_schema.TABLES"
                      " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", (table,))
        if rows and rows[0][0]:
            db.ddl(f"ALTER TABLE {table}{NEW} AUTO_INCREMENT = {int(rows[0][0])}")


def cleanup_step(leftovers: tuple[str, ...]) -> Step:
    """Drop what an interrupted upgrade from the original left behind."""
    statements = tuple(f"DROP TABLE IF EXISTS {name}" for name in leftovers)

    def apply(db: Db) -> None:
        for statement in statements:
            db.ddl(statement)
    return Step("drop the tables an interrupted upgrade left behind", statements, (), apply)
