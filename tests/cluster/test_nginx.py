"""nginx in front: the rendered conf/nginx.conf, and 200 clients over both servers."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from chat.cluster import NGINX_TEMPLATE, NginxBuild, render_nginx_conf
from chat.protocol import MsgId
from tests.cluster.conftest import Cluster, unique
from tests.support.mysqldb import connect

CLIENTS = 200
MESSAGES = 5


def _directives(text: str) -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [ln for ln in lines if ln]


def test_rendering_replaces_backends_listen_and_module_path(tmp_path: Path) -> None:
    (tmp_path / "ngx_stream_module.so").touch()
    template = NGINX_TEMPLATE.read_text()
    dynamic = _directives(render_nginx_conf(
        template, [("127.0.0.1", 7001), ("127.0.0.1", 7003)], "127.0.0.1:9",
        NginxBuild("nginx", "dynamic", str(tmp_path))))
    assert dynamic[0] == f"load_module {tmp_path / 'ngx_stream_module.so'};"
    servers = [d for d in dynamic if d.startswith("server 127.")]
    assert servers == ["server 127.0.0.1:7001 max_fails=1 fail_timeout=5s;",
                       "server 127.0.0.1:7003 max_fails=1 fail_timeout=5s;"]
    assert "listen 127.0.0.1:9 backlog=4096 so_keepalive=on;" in dynamic
    assert not [d for d in dynamic if d.split()[0] in ("pid", "error_log", "daemon")]
    static = _directives(render_nginx_conf(template, [("127.0.0.1", 7001)], "127.0.0.1:9",
                                           NginxBuild("nginx", "static", "")))
    assert not [d for d in static if d.startswith("load_module")]
    # The template itself is what the issue asks for (its stream part; the
    # http part, for the web client, is tested in tests/web/test_nginx_web.py).
    raw = _directives(template.split("\nhttp {")[0])
    assert "least_conn;" in raw and "listen 8000 backlog=4096 so_keepalive=on;" in raw
    # The servers learn each client's address from nginx's PROXY header.
    assert "proxy_protocol on;" in raw and "proxy_protocol on;" in dynamic
    without = _directives(render_nginx_conf(template, [("127.0.0.1", 7001)], "127.0.0.1:9",
                                            NginxBuild("nginx", "static", ""),
                                            proxy_protocol=False))
    assert "proxy_protocol on;" not in without
    assert [d for d in raw if d.startswith("server 127.")] == [
        "server 127.0.0.1:6000 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:6002 max_fails=1 fail_timeout=5s;"]


def test_200_clients_through_nginx_chat_across_both_servers(
        shared: Cluster, mysql_url: str) -> None:
    tag = unique("ring")
    ids: list[int] = [0] * CLIENTS
    everyone_in = threading.Barrier(CLIENTS, timeout=60)
    received: list[list[str]] = [[] for _ in range(CLIENTS)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            s = shared.connect(None, timeout=30)
            reg = s.register(f"{tag}-{i}", "pw")
            assert reg["errno"] == 0, reg
            ids[i] = reg["id"]
            assert s.login(reg["id"], "pw")["errno"] == 0
            everyone_in.wait()
            peer = ids[(i + 1) % CLIENTS]
            for n in range(MESSAGES):
                s.send({"msgid": 5, "to": peer, "msg": f"{i}:{n}", "seq": n})
            acks = 0
            while len(received[i]) < MESSAGES or acks < MESSAGES:
                msg = s.recv()
                if msg["msgid"] == MsgId.ONE_CHAT_MSG:
                    received[i].append(msg["msg"])
                else:
                    assert msg["msgid"] == MsgId.CHAT_MSG_ACK, msg
                    assert msg["state"] == "delivered", msg
                    acks += 1
            everyone_in.wait()  # nobody leaves before everyone has everything
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            everyone_in.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
        if len(errors) > 0:
            break
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    for i in range(CLIENTS):
        assert received[i] == [f"{(i - 1) % CLIENTS}:{n}" for n in range(MESSAGES)]
    con = connect(mysql_url)
    try:
        cur = con.cursor()
        cur.execute("SELECT server FROM user WHERE name LIKE %s AND state='online'",
                    (f"{tag}-%",))
        spread = Counter(row[0] for row in cur.fetchall())
    finally:
        con.close()
    # Every client was online at the barrier; least_conn spread them over both.
    assert len(spread) == 2 and min(spread.values()) >= CLIENTS // 4, spread
