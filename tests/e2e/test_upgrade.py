"""Drop-in upgrade: the original C++ server's database under this server, and refusals.

The original's tables are made and filled as the original does it
(tests/support/original_db.py), upgraded with ``python -m chat.migrate``, and
served by a real server; unknown databases make both entry points exit 2
with one line and leave the database as it was.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from chat.protocol import MsgId
from chat.store.backfill import MID_EPOCH_MS
from tests.support import mysqldb, original_db
from tests.support.original_db import GROUP_ID, GROUP_NAME, LI, TO_LI, WANG, ZHANG
from tests.support.server import TEST_ENV, ServerProcess

pytestmark = pytest.mark.timeout(90)


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **TEST_ENV})


def migrate(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run("chat.migrate", "--db", db, *args)


def start_server(db: str) -> subprocess.CompletedProcess[str]:
    """``python -m chat.server`` on a database it should refuse (it never listens)."""
    return run("chat.server", "-p", "0", "-t", "1", "--db", db)


@pytest.fixture
def original(mysql_url: str) -> Iterator[str]:
    with mysqldb.throwaway_database() as url:
        original_db.create(url)
        original_db.fill(url)
        yield url


@pytest.mark.mysql
def test_a_dry_run_shows_the_upgrade_and_changes_nothing(original: str) -> None:
    before = original_db.snapshot(original)
    done = migrate(original, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "the original C++ server's tables" in done.stdout
    assert "RENAME TABLE user TO user__original" in done.stdout
    assert "0002 message ids and offline accounting" in done.stdout
    assert original_db.snapshot(original) == before


@pytest.mark.mysql
def test_the_originals_users_carry_on_after_the_upgrade(original: str) -> None:
    done = migrate(original)
    assert done.returncode == 0, done.stderr
    assert "now at schema version 2" in done.stdout
    server = ServerProcess(original, threads=2).start()
    try:
        with server.connect() as li, server.connect() as zhang:
            assert li.login(LI.id, "123456")["errno"] == 1  # another user's password
            ack = li.login(LI.id, LI.password)
            assert ack["errno"] == 0, ack
            check_li_sees_what_the_original_stored(ack)
            # zhang san was online when the C++ server stopped: now offline, may log in
            ack = zhang.login(ZHANG.id, ZHANG.password)
            assert ack["errno"] == 0, ack
            assert [(f["id"], f["state"]) for f in ack["friends"]] == [
                (LI.id, "online"), (WANG.id, "offline")]  # both made friends one way only
            zhang.chat(LI.id, "welcome to the new server")
            got = li.expect(MsgId.ONE_CHAT_MSG, msg="welcome to the new server")
            assert (got["id"], got["name"], got["to"]) == (ZHANG.id, ZHANG.name, LI.id)
        with server.connect() as wang, server.connect() as newcomer:
            assert wang.login(WANG.id, WANG.password)["errno"] == 0
            # the original's user 4 was deleted: its id is not given again
            assert newcomer.register("newcomer", "pw")["id"] == original_db.DELETED + 1
    finally:
        server.kill()
    assert "Traceback" not in server.log_text()


def check_li_sees_what_the_original_stored(ack: dict[str, object]) -> None:
    offline = ack["offlinemsg"]
    assert isinstance(offline, list)
    expected = [orjson.loads(text) for text in TO_LI]
    for message in expected:
        if message["msgid"] == MsgId.ONE_CHAT_MSG:
            message["to"] = message.pop("toid")
    mids = [m.pop("mid") for m in offline]
    assert offline == expected  # in the original's order, with `to` instead of `toid`
    assert mids == sorted(mids) and len(set(mids)) == len(mids)
    now_ms = time.time() * 1000
    assert all(abs((mid >> 22) + MID_EPOCH_MS - now_ms) < 600_000  # given at migration time
               and (mid >> 12) & 0x3FF == 0 for mid in mids)  # by node 0
    assert ack["friends"] == [{"id": ZHANG.id, "name": ZHANG.name, "state": "offline"}]
    groups = ack["groups"]
    assert isinstance(groups, list) and len(groups) == 1
    assert (groups[0]["id"], groups[0]["groupname"]) == (GROUP_ID, GROUP_NAME)
    assert [(u["id"], u["role"]) for u in groups[0]["users"]] == [
        (ZHANG.id, "creator"), (LI.id, "normal"), (WANG.id, "normal")]


@pytest.mark.mysql
def test_the_upgraded_tables_are_those_of_a_fresh_database(original: str) -> None:
    assert migrate(original).returncode == 0
    with mysqldb.throwaway_database() as fresh:
        assert migrate(fresh).returncode == 0
        assert definitions(original) == definitions(fresh)


def definitions(url: str) -> dict[str, str]:
    return {name: " ".join(w for w in text.split() if not w.startswith("AUTO_INCREMENT="))
            for name, (text, _) in original_db.snapshot(url).items()}  # type: ignore[misc]


@pytest.mark.mysql
def test_an_interrupted_upgrade_runs_again(original: str) -> None:
    con = mysqldb.connect(original)
    # what a run that died while copying leaves behind
    con.cursor().execute("CREATE TABLE friend__upgrade (userid INT, friendid INT)")
    con.cursor().execute("INSERT INTO friend__upgrade VALUES (9, 9)")
    done = migrate(original)
    assert done.returncode == 0, done.stderr
    cur = con.cursor()
    cur.execute("SELECT userid, friendid FROM friend ORDER BY userid, friendid")
    assert cur.fetchall() == ((1, 2), (1, 3), (2, 1), (3, 1))
    cur.execute("SHOW TABLES LIKE '%\\_\\_%'")
    assert cur.fetchall() == ()


UNKNOWN = {
    "a user table of another shape": ["CREATE TABLE user (id INT PRIMARY KEY, email TEXT)"],
    "another application's tables": ["CREATE TABLE posts (id INT PRIMARY KEY, body TEXT)"],
    "a newer schema version": [
        "CREATE TABLE schema_version (version INT NOT NULL PRIMARY KEY,"
        " applied_at DATETIME NOT NULL, description VARCHAR(200) NOT NULL)",
        "INSERT INTO schema_version VALUES (99, '2030-01-01 00:00:00', 'from the future')"],
}


@pytest.mark.mysql
@pytest.mark.parametrize("case", list(UNKNOWN))
def test_an_unknown_mysql_database_gets_one_line_and_exit_2(mysql_url: str, case: str) -> None:
    with mysqldb.throwaway_database() as url:
        con = mysqldb.connect(url)
        for statement in UNKNOWN[case]:
            con.cursor().execute(statement)
        before = original_db.snapshot(url)
        for done in (migrate(url), migrate(url, "--dry-run"), start_server(url)):
            assert done.returncode == 2, done.stderr
            assert len(done.stderr.splitlines()) == 1, done.stderr
            assert "is not a chat database this release knows" in done.stderr
            assert "nothing was changed" in done.stderr
        assert original_db.snapshot(url) == before


def test_an_unknown_sqlite_database_gets_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert migrate(url).returncode == 0
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("INSERT INTO schema_version VALUES (3, '2030-01-01 00:00:00', 'newer')")
    con.commit()
    before = (tmp_path / "other.db").read_bytes()
    for done in (migrate(url), start_server(url)):
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert "schema version 3 is newer than this server knows (2)" in done.stderr
    assert (tmp_path / "other.db").read_bytes() == before
    (tmp_path / "junk.db").write_bytes(b"not a database at all, just some bytes" * 200)
    for junk in (migrate(f"sqlite:///{tmp_path / 'junk.db'}"),
                 start_server(f"sqlite:///{tmp_path / 'junk.db'}")):
        assert junk.returncode == 1, junk.stderr  # unusable rather than unknown
        assert junk.stderr.count("\n") == 1 and "not a database" in junk.stderr, junk.stderr


@pytest.mark.mysql
def test_leftovers_of_an_upgrade_stopped_after_the_swap_are_dropped(original: str) -> None:
    assert migrate(original).returncode == 0
    con = mysqldb.connect(original)
    # the swap happened, the process died before dropping the old tables
    con.cursor().execute("CREATE TABLE offlinemessage__original (userid INT, message TEXT)")
    done = migrate(original)
    assert done.returncode == 0, done.stderr
    assert "drop the tables an interrupted upgrade left behind" in done.stdout
    cur = con.cursor()
    cur.execute("SHOW TABLES LIKE '%\\_\\_%'")
    assert cur.fetchall() == ()


@pytest.mark.mysql
def test_many_users_are_hashed_in_batches_with_progress(mysql_url: str) -> None:
    with mysqldb.throwaway_database() as url:
        original_db.create(url)
        con = mysqldb.connect(url)
        con.cursor().executemany(
            "insert into user(name, password, state) values(%s, %s, 'offline')",
            [(f"user {i}", f"secret {i}") for i in range(1, 1202)])
        done = migrate(url)
        assert done.returncode == 0, done.stderr
        assert [line for line in done.stderr.splitlines() if line.startswith("hashed")] == [
            "hashed 500 of 1201 passwords", "hashed 1000 of 1201 passwords",
            "hashed 1201 of 1201 passwords"]
        server = ServerProcess(url, threads=1).start()
        try:
            for user_id in (1, 500, 501, 1201):
                with server.connect() as s:
                    assert s.login(user_id, f"secret {user_id}")["name"] == f"user {user_id}"
        finally:
            server.kill()
