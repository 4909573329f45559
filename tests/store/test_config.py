import pytest

from chat.store.config import parse_url
from chat.store.dialect import MYSQL, SQLITE


def test_sqlite_paths() -> None:
    assert parse_url("sqlite:///chat.db").database == "chat.db"
    assert parse_url("sqlite:///data/chat.db").database == "data/chat.db"
    assert parse_url("sqlite:////var/lib/chat.db").database == "/var/lib/chat.db"
    assert parse_url("sqlite:///chat.db").dialect is SQLITE


def test_mysql_url_and_options() -> None:
    c = parse_url("mysql://u%40x:p%2Fw@db.example:3307/chat?pool_size=3&ping=0", ping=7)
    assert c.dialect is MYSQL and c.database == "chat"
    assert c.server == {"host": "db.example", "port": 3307, "user": "u@x", "password": "p/w"}
    assert c.options["pool_size"] == 3 and c.options["ping"] == 7
    assert c.describe() == "mysql://u@x@db.example:3307/chat"  # no password in logs


def test_password_cost_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SCRYPT_LOG2N", "5")
    assert parse_url("sqlite:///x.db").options["password_cost"] == 5
    assert parse_url("sqlite:///x.db", password_cost=6).options["password_cost"] == 6
    monkeypatch.delenv("CHAT_SCRYPT_LOG2N")
    assert parse_url("sqlite:///x.db").options["password_cost"] == 14


@pytest.mark.parametrize("url", [
    "sqlite:///", "sqlite:///:memory:", "postgres://x/y", "mysql://root@h/",
    "mysql://root@h/bad`name", "sqlite:///x.db?pool_sise=3", "sqlite:///x.db?pool_size=0",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)
