from pathlib import Path

import pytest

from chat.store import open_store
from chat.store.schema import LATEST, TABLES, VERSION_TABLE, expected_columns
from chat.store.sqlfiles import all_files
from tests.support import mysqldb

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SCHEMA_FILE = SQL_DIR / "schema.sql"
ALL_TABLES = [VERSION_TABLE.name] + [t.name for t in TABLES]


def test_sql_files_are_what_the_code_runs() -> None:
    files = all_files()
    for name, text in files.items():
        assert (SQL_DIR / name).read_text() == text, (
            f"sql/{name} is stale: python -m chat.store.sqlfiles sql")
    on_disk = {str(p.relative_to(SQL_DIR)) for p in SQL_DIR.rglob("*.sql")}
    assert on_disk == set(files), "sql/ holds files the code no longer renders"


def test_latest_version_has_every_table() -> None:
    assert set(expected_columns(LATEST)) == {t.name for t in TABLES}
    assert "size" in expected_columns(LATEST)["offlinemessage"]
    assert "size" not in expected_columns(1)["offlinemessage"]


def test_sqlite_open_twice_is_harmless(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):
        open_store(url, password_cost=4).close()


def _show_create(url: str) -> dict[str, str]:
    con = mysqldb.connect(url)
    try:
        cur = con.cursor()
        out = {}
        for name in ALL_TABLES:
            cur.execute(f"SHOW CREATE TABLE `{name}`")
            definition = cur.fetchone()[1]
            out[name] = " ".join(p for p in definition.split() if "AUTO_INCREMENT=" not in p)
        return out
    finally:
        con.close()


def load_schema_file(url: str) -> None:
    con = mysqldb.connect(url)
    try:
        lines = [ln for ln in SCHEMA_FILE.read_text().splitlines() if not ln.startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                con.cursor().execute(statement)
    finally:
        con.close()


@pytest.mark.mysql
def test_mysql_file_and_code_create_the_same_tables(mysql_url: str) -> None:
    with mysqldb.throwaway_database() as by_file, mysqldb.throwaway_database() as by_code:
        load_schema_file(by_file)
        open_store(by_code, password_cost=4).close()
        assert _show_create(by_file) == _show_create(by_code)
        assert "utf8mb4_bin" in _show_create(by_code)["user"]
        assert "mediumtext" in _show_create(by_code)["offlinemessage"]
        # Loaded by hand, the database is at the latest version: a start changes nothing.
        before = _show_create(by_file)
        open_store(by_file, password_cost=4).close()
        assert _show_create(by_file) == before
