"""Schema versions: fresh databases, re-runs, today's-code databases, message ids."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from chat.store import StoreError, UnknownSchema, open_store
from chat.store.backfill import MID_EPOCH_MS, migration_mids, rewrite_stored
from chat.store.config import parse_url
from chat.store.dialect import MYSQL, SQLITE, Dialect
from chat.store.migrations import MIGRATIONS, inspect, upgrade
from chat.store.passwords import hash_password
from chat.store.schema import LATEST, create_table, expected_columns, tables_at
from tests.support import mysqldb

COST = 4


# -- message ids and the rewrite of stored messages (pure) ---------------------------


def test_migration_mids_follow_the_formula() -> None:
    now = MID_EPOCH_MS + 1000
    mids = migration_mids(now)
    first = [next(mids) for _ in range(4097)]
    assert first[0] == 1000 << 22
    assert first[4095] == (1000 << 22) | 4095
    assert first[4096] == 1001 << 22  # seq ran out: the next millisecond, seq 0
    assert all(a < b for a, b in zip(first, first[1:], strict=False))
    assert all((m >> 12) & 0x3FF == 0 for m in first)  # node 0, reserved for migrations


def test_rewrite_gives_a_mid_and_renames_toid_in_place() -> None:
    mids = iter([77])
    text = '{"id":1,"msg":"hello","msgid":5,"name":"li si","toid":2,"time":"t"}'
    new = rewrite_stored(text, mids)
    assert new is not None
    assert list(orjson.loads(new).items()) == [
        ("id", 1), ("msg", "hello"), ("msgid", 5), ("name", "li si"), ("to", 2),
        ("time", "t"), ("mid", 77)]


def test_rewrite_keeps_a_message_that_has_a_mid_byte_for_byte() -> None:
    text = '{"msgid":9,"id":1,"groupid":3,"msg":"hi","mid":5}'
    assert rewrite_stored(text, iter(())) == text
    group = '{"msgid":9,"id":1,"groupid":3,"msg":"hi","toid":4}'  # toid only matters in 5
    assert orjson.loads(rewrite_stored(group, iter([8])) or "") == {
        "msgid": 9, "id": 1, "groupid": 3, "msg": "hi", "toid": 4, "mid": 8}


@pytest.mark.parametrize("text", ['{"msgid":5,"msg":"cut at 500 cha', "[1,2]", "7", ""])
def test_rewrite_refuses_what_is_not_a_json_object(text: str) -> None:
    assert rewrite_stored(text, iter([1])) is None


# -- a database as today's code (version 1, no version table) made it -----------------


def make_version_1(db: Any, dialect: Dialect) -> None:
    """Tables and rows as the release before versioning wrote them."""
    cur = db.cursor()
    for table in tables_at(1):
        for statement in create_table(dialect, table, 1):
            cur.execute(statement)
    p = "?" if dialect is SQLITE else "%s"
    cur.executemany(f"INSERT INTO user (name, password) VALUES ({p}, {p})",
                    [(name, hash_password(f"pw-{name}", COST)) for name in ("ann", "bob")])
    cur.executemany(f"INSERT INTO friend (userid, friendid) VALUES ({p}, {p})", [(1, 2), (2, 1)])
    cur.execute("INSERT INTO allgroup (groupname, groupdesc) VALUES ('g', 'd')")
    cur.execute("INSERT INTO groupuser (groupid, userid, grouprole) VALUES (1, 1, 'creator')")
    cur.executemany(f"INSERT INTO offlinemessage (userid, message) VALUES ({p}, {p})", [
        (2, '{"msgid":5,"id":1,"name":"ann","to":2,"msg":"one €","time":"t1"}'),
        (2, '{"msgid":9,"id":1,"name":"ann","groupid":1,"msg":"two","time":"t2"}'),
        (1, '{"msgid":5,"id":2,"name":"bob","to":1,"msg":"three","time":"t3"}'),
    ])
    db.commit()


def check_version_1_kept(url: str) -> None:
    store = open_store(url, password_cost=COST)
    try:
        assert store.authenticate(1, "pw-ann") is not None
        assert [f.name for f in store.friends_of(2)] == ["ann"]
        assert [(g.name, g.members[0].role) for g in store.groups_of(1)] == [("g", "creator")]
    finally:
        store.close()
    stored = [orjson.loads(text) for text in stored_texts(url, 2)]
    assert [m["msg"] for m in stored] == ["one €", "two"]
    assert stored[0]["mid"] < stored[1]["mid"]


def stored_texts(url: str, user_id: int) -> list[str]:
    """The user's stored messages, oldest first, read past the store's API."""
    config = parse_url(url)
    con = sqlite3.connect(config.database) if config.dialect is SQLITE else mysqldb.connect(url)
    try:
        return [r[0] for r in rows(con, "SELECT message FROM offlinemessage"
                                        f" WHERE userid = {int(user_id)} ORDER BY id")]
    finally:
        con.close()


def rows(db: Any, query: str) -> list[tuple[Any, ...]]:
    cur = db.cursor()
    cur.execute(query)
    return [tuple(r) for r in cur.fetchall()]


# -- SQLite ------------------------------------------------------------------------


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


def test_fresh_sqlite_gets_every_migration_in_order(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    assert upgrade(parse_url(url)) == [f"{m.version:04d} {m.title}" for m in MIGRATIONS]
    db = sqlite3.connect(tmp_path / "chat.db")
    assert [r[0] for r in rows(db, "SELECT version FROM schema_version ORDER BY applied_at,"
                                   " version")] == list(range(1, LATEST + 1))
    for table, columns in expected_columns(LATEST).items():
        assert {r[1] for r in rows(db, f"PRAGMA table_info({table})")} == columns


def test_running_again_changes_nothing(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade(parse_url(url))
    db = sqlite3.connect(tmp_path / "chat.db")
    before = rows(db, "SELECT * FROM sqlite_master"), rows(db, "SELECT * FROM schema_version")
    assert upgrade(parse_url(url)) == []
    open_store(url, password_cost=COST).close()
    assert (rows(db, "SELECT * FROM sqlite_master"),
            rows(db, "SELECT * FROM schema_version")) == before


def test_a_sqlite_file_of_todays_code_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_version_1(sqlite3.connect(tmp_path / "chat.db"), SQLITE)
    state, steps = inspect(parse_url(url))
    assert (state.version, state.recorded) == (1, False)
    assert [s.title for s in steps][0].startswith("record version 1")
    check_version_1_kept(url)
    db = sqlite3.connect(tmp_path / "chat.db")
    assert [r[0] for r in rows(db, "SELECT version FROM schema_version")] == [1, 2]
    sizes = rows(db, "SELECT userid, size, length(CAST(message AS BLOB)) FROM offlinemessage"
                             " ORDER BY id")
    assert all(size == length for _, size, length in sizes)
    assert rows(db, "SELECT userid, messages, bytes FROM offlinebox ORDER BY userid") == [
        (1, 1, sizes[2][1]), (2, 2, sizes[0][1] + sizes[1][1])]


def test_a_newer_sqlite_version_is_refused_untouched(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade(parse_url(url))
    db = sqlite3.connect(tmp_path / "chat.db")
    db.execute("INSERT INTO schema_version VALUES (?, '2030-01-01 00:00:00', 'future')",
               (LATEST + 1,))
    db.commit()
    before = (tmp_path / "chat.db").read_bytes()
    with pytest.raises(UnknownSchema, match=f"schema version {LATEST + 1} is newer"):
        open_store(url, password_cost=COST)
    assert (tmp_path / "chat.db").read_bytes() == before


def test_a_dry_run_does_not_even_create_the_file(tmp_path: Path) -> None:
    state, steps = inspect(parse_url(sqlite_url(tmp_path)))
    assert state.version == 0 and len(steps) == LATEST
    assert not (tmp_path / "chat.db").exists()


def test_servers_starting_together_migrate_once(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_version_1(sqlite3.connect(tmp_path / "chat.db"), SQLITE)
    ran = run_together(url, 4)
    # Each step once in all; on SQLite each is a transaction of its own, so
    # one server may run the first and another the second (seen on a slow host).
    steps = [step for r in ran for step in r]
    assert len(steps) == 2 and len(set(steps)) == 2, ran
    check_version_1_kept(url)


def run_together(url: str, count: int) -> list[list[str]]:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def one() -> None:
        start.wait()
        try:
            results.append(upgrade(parse_url(url, password_cost=COST)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


# -- MariaDB -----------------------------------------------------------------------


@pytest.fixture
def mysql_db(mysql_url: str) -> Any:
    with mysqldb.throwaway_database() as url:
        yield url


@pytest.mark.mysql
def test_a_mysql_database_of_todays_code_is_upgraded_keeping_its_rows(mysql_db: str) -> None:
    make_version_1(mysqldb.connect(mysql_db), MYSQL)
    ran = run_together(mysql_db, 3)
    assert sorted(len(r) for r in ran) == [0, 0, 2]
    check_version_1_kept(mysql_db)
    con = mysqldb.connect(mysql_db)
    assert rows(con, "SELECT version FROM schema_version ORDER BY version") == [(1,), (2,)]
    assert rows(con, "SELECT COUNT(*) FROM offlinemessage WHERE size = LENGTH(message)") == [(3,)]


@pytest.mark.mysql
def test_a_mysql_table_of_another_shape_is_refused_untouched(mysql_db: str) -> None:
    con = mysqldb.connect(mysql_db)
    con.cursor().execute("CREATE TABLE user (id INT PRIMARY KEY, email VARCHAR(99))")
    with pytest.raises(UnknownSchema, match=r"table user has the columns \(email, id\)"):
        open_store(mysql_db, password_cost=COST)
    assert rows(con, "SHOW TABLES") == [("user",)]


@pytest.mark.mysql
def test_a_failed_step_says_which_and_can_run_again(mysql_db: str) -> None:
    make_version_1(mysqldb.connect(mysql_db), MYSQL)
    con = mysqldb.connect(mysql_db)
    # A row 0002 cannot write (its id clashes with the version row it inserts last).
    con.cursor().execute("CREATE TABLE schema_version (version INT NOT NULL PRIMARY KEY,"
                         " applied_at DATETIME NOT NULL, description VARCHAR(200) NOT NULL)")
    con.cursor().execute("CREATE TRIGGER no_two BEFORE INSERT ON schema_version FOR EACH ROW"
                         " BEGIN IF NEW.version = 2 THEN SIGNAL SQLSTATE '45000'"
                         " SET MESSAGE_TEXT = 'refused'; END IF; END")
    with pytest.raises(StoreError, match="0002 message ids and offline accounting failed"):
        upgrade(parse_url(mysql_db))
    assert rows(con, "SELECT version FROM schema_version") == [(1,)]
    assert rows(con, "SELECT COUNT(*) FROM offlinebox") == [(0,)]  # rolled back with it
    con.cursor().execute("DROP TRIGGER no_two")
    assert upgrade(parse_url(mysql_db, password_cost=COST)) == [
        "0002 message ids and offline accounting"]
    check_version_1_kept(mysql_db)
