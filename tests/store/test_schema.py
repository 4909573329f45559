from pathlib import Path

import pytest

from chat.store import open_store
from chat.store.dialect import MYSQL, SQLITE
from chat.store.schema import TABLES, create_statements, mysql_schema_file
from tests.support import mysqldb

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "sql" / "schema.sql"


def test_schema_file_is_what_the_code_creates() -> None:
    assert SCHEMA_FILE.read_text() == mysql_schema_file(), (
        "sql/schema.sql is stale: python -m chat.store.schema > sql/schema.sql")


def test_sqlite_ddl_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for _ in range(2):
        open_store(url, password_cost=4).close()
    assert len(create_statements(SQLITE)) == len(TABLES) + 3


def _show_create(url: str) -> dict[str, str]:
    con = mysqldb.connect(url)
    try:
        cur = con.cursor()
        out = {}
        for table in TABLES:
            cur.execute(f"SHOW CREATE TABLE `{table.name}`")
            out[table.name] = cur.fetchone()[1].split("AUTO_INCREMENT=")[0]
        return out
    finally:
        con.close()


@pytest.mark.mysql
def test_mysql_file_and_code_create_the_same_tables(mysql_url: str) -> None:
    with mysqldb.throwaway_database() as by_file, mysqldb.throwaway_database() as by_code:
        con = mysqldb.connect(by_file)
        try:
            lines = [ln for ln in SCHEMA_FILE.read_text().splitlines() if not ln.startswith("--")]
            for statement in "\n".join(lines).split(";"):
                if statement.strip():
                    con.cursor().execute(statement)
        finally:
            con.close()
        open_store(by_code, password_cost=4).close()
        assert _show_create(by_file) == _show_create(by_code)
        assert "utf8mb4_bin" in _show_create(by_code)["user"]
        assert "mediumtext" in _show_create(by_code)["offlinemessage"]
    assert len(create_statements(MYSQL)) == len(TABLES)
