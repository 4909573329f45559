"""Schema versions and the migrations between them.

Theory of operation
-------------------
A database records its version in ``schema_version`` (one row per migration
applied; the largest is the version).  Migration N creates the tables that
``schema.py`` dates to version N, adds the columns it dates to N, runs
its data step, and inserts row N.  ``upgrade()`` runs at every start (from
``open_store``) and from ``python -m chat.migrate``:

1. Take the schema lock: ``GET_LOCK`` on MySQL, ``BEGIN IMMEDIATE`` on
   SQLite, so servers starting together migrate once, one after the other.
2. Work out where the database stands (``detect``) from the version table,
   or, without one, from the tables and their columns: nothing at all (a
   fresh database), today's tables of the first release (version 1, which
   had no version table), or the original C++ server's tables
   (``legacy.py``).  Anything else raises :class:`UnknownSchema` before any
   change is made.
3. Run the first pending step, commit, and go back to 2 until nothing is
   pending.  On SQLite each step is one transaction.  MySQL commits every DDL
   statement at once, so there each step is written to be run again after a
   failure half-way: tables are created ``IF NOT EXISTS``, a column is added
   only if missing, and the data step and the version row share the one
   transaction that follows the DDL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from . import legacy
from .backfill import backfill_0002
from .config import Config, parse_url
from .dialect import MYSQL, SQLITE, Dialect
from .direct import Db, Step, ensure_version_table, record
from .errors import StoreError, StoreUnavailable, UnknownSchema
from .pool import direct_connection, ensure_mysql_database
from .schema import (
    LATEST,
    TABLES,
    VERSION_TABLE,
    added_at,
    column_name,
    create_table,
    expected_columns,
    render_column,
    since,
    tables_at,
)

log = logging.getLogger("chat.store.migrate")

_LOCK_WAIT = 120  # seconds another server may spend migrating before we give up
_ER_BAD_DB = 1049  # MySQL: unknown database


# -- the numbered migrations ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    title: str
    notes: tuple[str, ...] = ()
    data: Callable[[Db], None] | None = None

    def statements(self, dialect: Dialect) -> list[str]:
        out = []
        for table in TABLES:
            if since(table) == self.version:
                out += create_table(dialect, table, self.version)
            out += [f"ALTER TABLE {table.name} ADD COLUMN {render_column(dialect, spec)}"
                    for spec in added_at(table, self.version)]
        return out

    def apply(self, db: Db) -> None:
        ensure_version_table(db)
        for table in TABLES:
            if since(table) == self.version:
                for statement in create_table(db.dialect, table, self.version):
                    db.ddl(statement)
            for spec in added_at(table, self.version):
                if column_name(spec) not in db.columns(table.name):  # a re-run after a failure
                    db.ddl(f"ALTER TABLE {table.name} ADD COLUMN "
                           f"{render_column(db.dialect, spec)}")
        if self.data is not None:
            self.data(db)
        record(db, self.version, self.title)

    def step(self, dialect: Dialect) -> Step:
        recorded = ("INSERT INTO schema_version (version, applied_at, description)"
                    f" VALUES ({self.version}, <now, UTC>, '{self.title}')")
        return Step(f"{self.version:04d} {self.title}",
                    (*self.statements(dialect), recorded), self.notes, self.apply)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the tables of the first release"),
    Migration(2, "message ids and offline accounting", (
        "every stored message gets a mid (node 0, oldest row first) and its size in bytes;",
        "stored one-to-one messages carry 'to' instead of the original's 'toid';",
        "stored messages that are not JSON objects are dropped (they could never be sent);",
        "offlinebox gets each user's count and total size of stored messages",
    ), backfill_0002),
)
assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


# -- where a database stands ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    version: int  # 0: nothing yet (or the original's tables, see legacy)
    recorded: bool  # the version comes from schema_version
    legacy: bool = False  # the original C++ server's tables
    leftovers: tuple[str, ...] = ()  # tables an interrupted upgrade left behind
    missing: bool = False  # the database (or SQLite file) does not exist yet

    def describe(self) -> str:
        if self.missing:
            return "does not exist yet (it will be created)"
        if self.legacy:
            return "the original C++ server's tables"
        if self.recorded:
            return f"schema version {self.version}"
        if self.version == 1:
            return "schema version 1 (tables of an earlier release, no version table)"
        return "empty"


def detect(db: Db) -> State:
    """Where the database stands; UnknownSchema if it is not ours (nothing changed)."""
    tables = db.tables()
    leftovers = tuple(sorted(t for t in tables if legacy.is_leftover(t)))
    tables -= set(leftovers)
    recorded = None
    if VERSION_TABLE.name in tables:
        recorded = db.run("SELECT MAX(version) FROM schema_version")[0][0]
    if recorded is not None:
        _check_recorded(db, int(recorded), tables)
        return State(int(recorded), True, leftovers=leftovers)
    ours = tables & {t.name for t in TABLES}
    if not ours:
        others = sorted(tables - {VERSION_TABLE.name})
        if others:
            raise UnknownSchema(f"it holds other tables ({_names(others)}),"
                                " none of the chat server's")
        return State(0, False, leftovers=leftovers)
    if db.dialect is MYSQL and legacy.is_original(db, tables):
        return State(0, False, legacy=True, leftovers=leftovers)
    _check_columns(db, ours, 1, exact=True)
    complete = ours == {t.name for t in tables_at(1)}
    return State(1 if complete else 0, False, leftovers=leftovers)


def _check_recorded(db: Db, version: int, tables: set[str]) -> None:
    if version > LATEST:
        raise UnknownSchema(f"its schema version {version} is newer than this server knows"
                            f" ({LATEST}); run a newer release")
    missing = {t.name for t in tables_at(version)} - tables
    if missing:
        raise UnknownSchema(f"it is at schema version {version} but lacks the tables"
                            f" {_names(missing)}")
    _check_columns(db, {t.name for t in tables_at(version)}, version, exact=False)


def _check_columns(db: Db, names: set[str], version: int, *, exact: bool) -> None:
    expected = expected_columns(version)
    for name in sorted(names):
        found, want = db.columns(name), expected[name]
        if found != want if exact else not want <= found:
            raise UnknownSchema(f"its table {name} has the columns ({_names(found)}), not"
                                f" those of the chat server ({_names(want)}) nor of the"
                                " original C++ server")


def _names(names: set[str] | list[str]) -> str:
    return ", ".join(sorted(names))


def plan(state: State, dialect: Dialect, password_cost: int) -> list[Step]:
    """The steps that bring a database in ``state`` to the latest version."""
    steps = []
    if state.leftovers and not state.legacy:
        steps.append(legacy.cleanup_step(state.leftovers))
    if state.legacy:
        steps.append(legacy.upgrade_step(password_cost))
        first = 2
    elif state.version == 1 and not state.recorded:
        steps.append(_recognise_step(dialect))
        first = 2
    else:
        first = state.version + 1
    return steps + [m.step(dialect) for m in MIGRATIONS[first - 1:]]


def _recognise_step(dialect: Dialect) -> Step:
    def apply(db: Db) -> None:
        ensure_version_table(db)
        record(db, 1, "the tables of the first release, found in place")
    return Step("record version 1 (tables made by an earlier release)",
                tuple(create_table(dialect, VERSION_TABLE, LATEST)), (), apply)


# -- running them -----------------------------------------------------------------


def upgrade(config: Config) -> list[str]:
    """Bring the database to the latest version; return the titles of the steps run.

    Raises UnknownSchema (nothing changed), StoreUnavailable, or StoreError
    if a step failed (rolled back as far as the store allows; run it again).
    """
    db = Db(direct_connection(config), config.dialect)
    try:
        with _schema_lock(db, config.database):
            return _run_pending(db, config.options["password_cost"])
    except UnknownSchema as exc:
        raise _about(config, exc) from None
    finally:
        db.con.close()


def _about(config: Config, exc: UnknownSchema) -> UnknownSchema:
    return UnknownSchema(f"{config.describe()} is not a chat database this release knows:"
                         f" {exc}; nothing was changed")


def _run_pending(db: Db, password_cost: int) -> list[str]:
    done: list[str] = []
    while True:
        pending: list[Step] = []
        try:
            db.begin()
            pending = plan(detect(db), db.dialect, password_cost)
            if pending:
                log.info("schema: %s", pending[0].title)
                pending[0].apply(db)
            db.commit()
        except BaseException as exc:
            with suppress(Exception):  # the connection may be what failed
                db.rollback()
            explained = _explained(exc, pending[0].title if pending else "")
            if explained is exc:
                raise
            raise explained from exc
        if not pending:
            return done
        done.append(pending[0].title)


def _explained(exc: BaseException, title: str) -> BaseException:
    """A driver error as a StoreError that says which step failed; others as they are."""
    if not isinstance(exc, _driver_errors()):
        return exc
    reason = f"{type(exc).__name__}: {exc}"
    if not title:  # could not even read the schema (say, "file is not a database")
        return StoreUnavailable(reason)
    return StoreError(f"{title} failed: {reason}")


def _driver_errors() -> tuple[type[BaseException], ...]:
    try:
        import MySQLdb
    except ImportError:  # pragma: no cover - depends on the install
        return (sqlite3.Error,)
    return (sqlite3.Error, MySQLdb.Error)


class _schema_lock:  # noqa: N801 - used as a context manager, reads like one
    """MySQL: a named lock per database, held while migrating (SQLite locks per step)."""

    def __init__(self, db: Db, database: str) -> None:
        self._db = db
        self._name = f"chat.schema.{database}"[:64]

    def __enter__(self) -> None:
        if self._db.dialect is MYSQL:
            got = self._db.run("SELECT GET_LOCK(?, ?)", (self._name, _LOCK_WAIT))[0][0]
            if got != 1:
                raise StoreUnavailable(f"another server held the schema lock for"
                                       f" {_LOCK_WAIT} s")

    def __exit__(self, *exc: object) -> None:
        if self._db.dialect is MYSQL:
            self._db.run("SELECT RELEASE_LOCK(?)", (self._name,))


def inspect(config: Config) -> tuple[State, list[Step]]:
    """Where the database stands and what ``upgrade`` would run; changes nothing."""
    missing = State(0, False, missing=True)
    cost = config.options["password_cost"]
    if config.dialect is SQLITE and not os.path.exists(config.database):
        return missing, plan(missing, SQLITE, cost)
    try:
        db = Db(direct_connection(config, read_only=True), config.dialect)
    except StoreUnavailable as exc:
        cause = exc.__cause__
        if config.dialect is MYSQL and cause is not None and cause.args[:1] == (_ER_BAD_DB,):
            return missing, plan(missing, MYSQL, cost)
        raise
    try:
        if config.dialect is MYSQL:
            db.run("START TRANSACTION READ ONLY")
        state = detect(db)
        return state, plan(state, config.dialect, cost)
    except UnknownSchema as exc:
        raise _about(config, exc) from None
    finally:
        db.rollback()
        db.con.close()


def prepare(url: str, **options: Any) -> Config:
    """Parse ``url`` and, for MySQL, create the database if allowed."""
    config = parse_url(url, **options)
    if config.dialect is MYSQL and config.options["create_database"]:
        ensure_mysql_database(config)
    return config
