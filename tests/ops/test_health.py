"""/healthz follows the store and Redis, /readyz the server's life (issue 20, items 2 and 5).

The database and Redis here are PRIVATE servers (tests/support/), stopped and
started again while a chat server watches them; never the shared ones.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from chat.monitor import Monitor
from chat.protocol import MsgId
from tests.ops.conftest import get, metrics_port, scrape, value, wait_until
from tests.support.mariadb_server import MariaDBServer
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(120)
DB_OPTIONS = "?connect_timeout=2&read_timeout=5&write_timeout=5&pool_size=4"


def _status(port: int, path: str = "/healthz") -> int:
    return get(port, path)[0]


@pytest.mark.mysql
def test_healthz_is_503_while_the_database_is_stopped(tmp_path: Path) -> None:
    with MariaDBServer() as db:
        proc = ServerProcess(db.url + "chat" + DB_OPTIONS, threads=1,
                             extra=["--metrics-port", "0", "--log-format", "json"]).start()
        try:
            port = metrics_port(proc)
            assert get(port, "/healthz") == (200, "ok\n")
            with proc.connect() as s:
                ack = s.register(f"h{uuid.uuid4().hex[:8]}", "pw")
                assert s.login(ack["id"], "pw")["errno"] == 0
                db.stop()
                wait_until(lambda: _status(port) == 503)
                status, body = get(port, "/healthz")
                assert status == 503 and body.startswith("store: "), body
                assert s.add_friend(ack["id"] + 1000)["errno"] == 9  # and the log says why
                db.start()
                wait_until(lambda: _status(port) == 200)
        finally:
            proc.kill()
    entries = [json.loads(line) for line in proc.lines]  # every line is one JSON object
    failed = [e for e in entries if e.get("errno") == 9]
    assert failed, proc.log_text()
    assert failed[0]["user"] == ack["id"]
    assert failed[0]["msgid"] == MsgId.ADD_FRIEND_MSG
    assert failed[0]["connection"].startswith("chat-")
    assert failed[0]["level"] == "WARNING" and failed[0]["logger"].startswith("chat")


@pytest.mark.redis
def test_healthz_is_503_while_redis_is_down(tmp_path: Path) -> None:
    redis = RedisServer().start()
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1,
                         extra=["--metrics-port", "0", "--redis", redis.url]).start()
    try:
        port = metrics_port(proc)
        wait_until(lambda: _status(port) == 200)
        assert value(scrape(port), "chat_redis_up") == 1
        redis.kill()
        wait_until(lambda: _status(port) == 503)
        assert get(port, "/healthz")[1] == "redis: not connected\n"
        assert value(scrape(port), "chat_redis_up") == 0
        redis.start()
        wait_until(lambda: _status(port) == 200)
    finally:
        proc.kill()
        redis.cleanup()


def test_readyz_is_503_while_draining(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1,
                         extra=["--metrics-port", "0"]).start()
    try:
        port = metrics_port(proc)
        assert get(port, "/readyz") == (200, "ready\n")
        with proc.connect() as s:  # an open connection keeps the drain going
            assert s.register(f"d{uuid.uuid4().hex[:8]}", "pw")["errno"] == 0
            proc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            proc.wait_for_log("shutting down")
            assert get(port, "/readyz") == (503, "draining\n")
            assert s.closed_by_server(timeout=10)
        assert proc.terminate() == 0
    finally:
        proc.kill()


def test_a_monitor_is_not_ready_until_told() -> None:
    monitor = Monitor("127.0.0.1", 0, cache=60.0)
    monitor.start()
    try:
        port = monitor.address[1]
        assert get(port, "/readyz") == (503, "starting\n")
        assert get(port, "/healthz") == (503, "starting: the store is not open yet\n")
        assert get(port, "/nothing")[0] == 404
        calls: list[int] = []
        monitor.add_check("db", lambda: calls.append(1) or None)
        for _ in range(5):  # a storm of probes within the cache time runs the check once
            assert get(port, "/healthz") == (200, "ok\n")
        assert calls == [1]
    finally:
        monitor.close()
