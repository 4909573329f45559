"""One DB-API connection pool (DBUtils PooledDB) for SQLite and MySQL.

Theory of operation
-------------------
Every store call is ``pool.run(work)``: borrow a dedicated connection, mark a
transaction (``begin()``, which also stops DBUtils from silently reconnecting
and replaying half a transaction), run ``work(cursor)``, commit, and give the
connection back.  Any other exception rolls back and re-raises.

A driver error that means the database is gone or failing (OperationalError,
InterfaceError, InternalError, or a bare DatabaseError such as "file is not a
database") discards the connection instead of returning it, and becomes
:class:`StoreUnavailable` carrying the reason.  The first such failure after a
healthy period is logged as a warning, later ones only at debug level, and the
first success afterwards at info level, so an outage is one line in the log,
not one per request.  Read-only work is retried once on a fresh connection;
writes are not, since a write whose reply was lost may have happened.  MySQL
deadlocks and lock wait timeouts are not outages: the transaction is rolled
back and run again (up to three times).

MySQL connections are checked with ``ping`` when they leave the pool (DBUtils
``ping=1``), so after a database restart stale connections are replaced
without any manual step.

The whole of ``run`` happens inside ``blocking()``, a context manager the
caller may supply: the server passes ``reactor.blocking`` so that a loop
thread waiting on the database lets the other loops run (this package does
not import the reactor; it only calls what it is given).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote

from dbutils.pooled_db import PooledDB

from chat import metrics

from .config import Config
from .dialect import SQLITE
from .errors import StoreUnavailable

log = logging.getLogger("chat.store")

T = TypeVar("T")
Work = Callable[[Any], T]  # receives a DB-API cursor
Blocking = Callable[[], AbstractContextManager[object]]

_MYSQL_RETRYABLE = {1213, 1205}  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_DEADLOCK_RETRIES = 3


class _Retry(Exception):
    """Internal: the transaction lost a deadlock and may simply run again."""


def _mysql_module() -> ModuleType:
    try:
        import MySQLdb
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StoreUnavailable("MySQL needs mysqlclient: pip install mysqlclient") from exc
    module: ModuleType = MySQLdb
    return module


def _mysql_args(config: Config, with_db: bool = True) -> dict[str, Any]:
    s, o = config.server, config.options
    args = {
        "host": s["host"], "port": s["port"], "user": s["user"], "password": s["password"],
        "charset": "utf8mb4", "autocommit": False,
        "connect_timeout": o["connect_timeout"],
        "read_timeout": o["read_timeout"], "write_timeout": o["write_timeout"],
    }
    if with_db:
        args["database"] = config.database
    return args


def _mysql_alive(con: Any) -> bool:
    # Our own check: DBUtils would call ping(False), deprecated in mysqlclient 2.2.
    con.ping()
    return True


def _make_pooled(config: Config) -> tuple[PooledDB, ModuleType]:
    size = config.options["pool_size"]
    common = {"mincached": 0, "maxcached": size, "maxconnections": size, "blocking": True}
    if config.dialect is SQLITE:
        session = ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                   f"PRAGMA busy_timeout={config.options['busy_timeout']}"]
        pool = PooledDB(sqlite3, setsession=session, ping=0, **common,
                        database=config.database, check_same_thread=False,
                        isolation_level="IMMEDIATE",
                        timeout=config.options["busy_timeout"] / 1000)
        return pool, sqlite3
    mysql = _mysql_module()
    # READ COMMITTED: each statement sees the latest commits, and InnoDB takes
    # fewer gap locks, so concurrent INSERT IGNOREs deadlock less.
    session = ["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]
    flag = config.options["ping"]
    pool = PooledDB(mysql, setsession=session, ping=(flag, _mysql_alive) if flag else 0,
                    **common, **_mysql_args(config))
    return pool, mysql


class ConnectionPool:
    """Borrow-run-return around PooledDB.  Safe from any thread."""

    def __init__(self, config: Config, blocking: Blocking = nullcontext) -> None:
        self.config = config
        self.blocking = blocking
        self.dialect = config.dialect
        self._pool, self._module = _make_pooled(config)
        m = self._module
        self._failures: tuple[type[BaseException], ...] = (
            m.OperationalError, m.InterfaceError, m.InternalError)
        self.integrity_error: type[BaseException] = m.IntegrityError
        self._healthy = True
        self._lock = threading.Lock()

    def run(self, work: Work[T], *, read_only: bool = False) -> T:
        """Run ``work(cursor)`` in one transaction; see the module docstring."""
        timer = metrics.DB_CALL.labels(metrics.store_operation()).time()
        with timer, self.blocking():
            return self._run(work, read_only)

    def _run(self, work: Work[T], read_only: bool) -> T:
        attempts = 2 if read_only else 1
        retries = 0
        while True:
            try:
                result = self._run_once(work)
            except _Retry as exc:
                retries += 1
                if retries > _DEADLOCK_RETRIES:
                    raise self._unavailable(exc.__cause__ or exc) from exc
                continue
            except StoreUnavailable:
                attempts -= 1
                if attempts == 0:
                    raise
                continue
            self._mark_healthy()
            return result

    def _is_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, self._failures) or type(exc) is self._module.DatabaseError

    def _run_once(self, work: Work[T]) -> T:
        try:
            with metrics.DB_POOL_WAIT.time():
                con = self._pool.connection(shareable=False)
        except Exception as exc:
            if self._is_failure(exc):
                raise self._unavailable(exc) from exc
            raise
        metrics.DB_POOL_IN_USE.inc()
        try:
            return self._run_on(con, work)
        finally:
            metrics.DB_POOL_IN_USE.dec()

    def _run_on(self, con: Any, work: Work[T]) -> T:
        try:
            con.begin()
            cursor = con.cursor()
            result = work(cursor)
            cursor.close()
            con.commit()
        except Exception as exc:
            if self._is_retryable(exc):
                self._give_back(con, rollback=True)
                raise _Retry() from exc
            if self._is_failure(exc):
                self._discard(con)
                raise self._unavailable(exc) from exc
            self._give_back(con, rollback=True)
            raise
        except BaseException:  # KeyboardInterrupt and friends: clean up, never swallow
            self._give_back(con, rollback=True)
            raise
        self._give_back(con, rollback=False)
        return result

    def _is_retryable(self, exc: BaseException) -> bool:
        return (self.dialect is not SQLITE and isinstance(exc, self._failures)
                and bool(exc.args) and exc.args[0] in _MYSQL_RETRYABLE)

    @staticmethod
    def _give_back(con: Any, *, rollback: bool) -> None:
        if rollback:
            with suppress(Exception):
                con.rollback()
        con.close()  # PooledDB: back into the idle cache

    def _discard(self, con: Any) -> None:
        """Close a broken connection for good instead of caching it.

        PooledDB has no public "this one is broken" call, so this reaches into
        its proxy (``_con``) and counter (``_connections``, guarded by
        ``_lock``); both have been stable since DBUtils 2.0.
        """
        steady, con._con = con._con, None
        if steady is not None:
            steady._close()
        with self._pool._lock:
            self._pool._connections -= 1
            self._pool._lock.notify()

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            was_healthy, self._healthy = self._healthy, False
        level = logging.WARNING if was_healthy else logging.DEBUG
        log.log(level, "database %s unavailable: %s", self.config.describe(), reason)
        return StoreUnavailable(reason)

    def _mark_healthy(self) -> None:
        if self._healthy:
            return
        with self._lock:
            was_healthy, self._healthy = self._healthy, True
        if not was_healthy:
            log.info("database %s is available again", self.config.describe())

    def close(self) -> None:
        self._pool.close()


def ensure_mysql_database(config: Config) -> None:
    """CREATE DATABASE IF NOT EXISTS, tolerating an account that may not."""
    mysql = _mysql_module()
    try:
        con = mysql.connect(**_mysql_args(config, with_db=False))
    except mysql.Error as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
    try:
        with suppress(mysql.OperationalError, mysql.ProgrammingError):  # e.g. access denied
            con.cursor().execute(
                f"CREATE DATABASE IF NOT EXISTS `{config.database}`"
                " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        con.close()


def direct_connection(config: Config, *, read_only: bool = False) -> Any:
    """One plain DB-API connection outside the pool, for schema migrations.

    MySQL: autocommit off (DDL still commits at once, as MySQL does).
    SQLite: autocommit mode, so the caller's own ``BEGIN IMMEDIATE`` makes a
    whole migration one transaction; ``read_only`` opens the file read-only
    and never creates it.  Raises StoreUnavailable if it cannot connect.
    """
    if config.dialect is SQLITE:
        target, uri = config.database, False
        if read_only:
            target, uri = f"file:{quote(config.database)}?mode=ro", True
        try:
            return sqlite3.connect(target, uri=uri, isolation_level=None,
                                   timeout=config.options["busy_timeout"] / 1000)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
    mysql = _mysql_module()
    try:
        return mysql.connect(**_mysql_args(config))
    except mysql.Error as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
