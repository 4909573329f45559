"""The store when the database goes away and comes back.

The MySQL test runs a PRIVATE mariadbd (tests/support/mariadb_server.py) so it
can be stopped and restarted; the shared server is never touched.
"""

import logging
import time
from pathlib import Path

import pytest

from chat.store import Store, StoreUnavailable, User, open_store
from tests.support.mariadb_server import MariaDBServer, free_port


def _unavailable_calls(store: Store, uid: int) -> None:
    for call in (lambda: store.get_user(uid), lambda: store.register("during", "pw"),
                 lambda: store.store_offline(uid, "lost?"), lambda: store.offline_page(uid, 10)):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert time.monotonic() - start < 5
        assert str(info.value)  # carries the driver's reason


@pytest.mark.mysql
@pytest.mark.timeout(90)
def test_mysql_restart_is_survived_without_manual_steps(caplog: pytest.LogCaptureFixture) -> None:
    with MariaDBServer() as db:
        store = open_store(db.url + "chat", password_cost=4, pool_size=2,
                           connect_timeout=1, read_timeout=5, write_timeout=5)
        uid = store.register("survivor", "pw")
        store.store_offline(uid, "kept")
        assert store.mark_online(uid, "s1")
        db.stop()
        with caplog.at_level(logging.DEBUG, logger="chat.store"):
            _unavailable_calls(store, uid)
            _unavailable_calls(store, uid)  # more failures than pooled connections
            db.start()
            assert store.get_user(uid) == User(uid, "survivor", "online")
        warnings = [r for r in caplog.records
                    if r.name == "chat.store" and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
        assert any("available again" in r.getMessage() for r in caplog.records)
        assert [m for _, m in store.offline_page(uid, 10)] == ["kept"]
        assert store.authenticate(uid, "pw") is not None
        assert store.register("after", "pw") > uid
        store.close()


@pytest.mark.mysql
def test_mysql_unreachable_at_open_is_quick() -> None:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        open_store(f"mysql://root:@127.0.0.1:{free_port()}/chat", connect_timeout=1)
    assert time.monotonic() - start < 5


def test_sqlite_garbage_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        open_store(f"sqlite:///{path}")


def test_sqlite_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        open_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


def test_sqlite_pool_recovers_after_failures(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ok.db'}", password_cost=4, pool_size=1)
    with pytest.raises(StoreUnavailable):
        store._pool.run(lambda cur: cur.execute("SELECT * FROM no_such_table"))
    with pytest.raises(StoreUnavailable):  # read-only: retried once, still failing
        store._pool.run(lambda cur: cur.execute("SELECT * FROM no_such_table"),
                        read_only=True)
    # the broken connections were discarded, not leaked: a pool of one still works
    assert store.register("fine", "pw") == 1
    store.close()
