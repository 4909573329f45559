"""``python -m chat.cluster``: starts servers and nginx, serves, stops everything on Ctrl+C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from client.session import ChatSession
from tests.cluster.conftest import unique
from tests.support.mariadb_server import free_port
from tests.support.redis_server import RedisServer
from tests.support.server import TEST_ENV
from tests.support.wsclient import WsClient


def _port_pair() -> int:
    """A free port p with p+2 free too (the launcher's default step)."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 2))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def test_launcher_runs_a_cluster_and_stops_it(mysql_url: str,
                                              module_redis: RedisServer) -> None:
    first, listen = _port_pair(), free_port()
    first_ws, web = _port_pair(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.cluster", "--servers", "2", "--first-port", str(first),
         "--listen", str(listen), "--threads", "1", "--db", mysql_url,
         "--redis", module_redis.url, "--first-ws-port", str(first_ws),
         "--web-listen", str(web)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **TEST_ENV})
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("cluster ready: 2 chat server(s)"), banner
        assert f"127.0.0.1:{listen}" in banner
        proc.stdout.readline()  # the example command
        assert proc.stdout.readline().strip() == \
            f"or open the web client: http://127.0.0.1:{web}/"
        users = []
        for _ in range(2):
            s = ChatSession("127.0.0.1", listen)
            reg = s.register(unique("l"), "pw")
            assert s.login(reg["id"], "pw")["errno"] == 0
            users.append(s)
        assert users[0].chat(users[1].user_id, "via the launcher", seq=1)["state"] == "delivered"
        assert users[1].expect(5)["msg"] == "via the launcher"
        page = WsClient(web)  # the web client's WebSocket, through nginx's http block
        page.send_json({"msgid": 1, "id": users[0].user_id, "password": "pw"})
        assert page.expect(2)["errno"] == 2  # already online, on one of the servers
        page.close()
        for s in users:
            s.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        # everything it started is gone
        for port in (first, first + 2, listen, first_ws, first_ws + 2, web):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
