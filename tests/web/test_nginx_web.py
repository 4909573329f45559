"""nginx's http block in front of the web port: the page, ws:// and wss://."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chat.cluster import NGINX_TEMPLATE, NginxBuild, render_nginx_conf
from chat.protocol import MsgId
from tests.support.nginx import NginxProcess
from tests.support.server import ServerProcess
from tests.support.tls import Pki, client_context, make_pki
from tests.support.wsclient import WsClient, web_port
from tests.web.test_gateway import register_and_login, unique

pytestmark = pytest.mark.nginx


@dataclass
class Front:
    server: ServerProcess
    plain: NginxProcess
    tls: NginxProcess
    pki: Pki


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    base = tmp_path_factory.mktemp("web-nginx")
    pki = make_pki(base / "pki")
    server = ServerProcess(f"sqlite:///{base / 'chat.db'}", extra=["--ws-port", "0"]).start()
    started: list[NginxProcess] = []
    try:
        backends, web = [("127.0.0.1", server.port)], [("127.0.0.1", web_port(server))]
        for tls in (None, (str(pki.cert), str(pki.key))):
            started.append(NginxProcess(backends, tls=tls, web_backends=web).start())
        yield Front(server, started[0], started[1], pki)
    finally:
        for nginx in started:
            nginx.cleanup()
        server.kill()


def test_rendering_keeps_the_http_block_only_with_web_backends() -> None:
    build = NginxBuild("nginx", "static", "")
    template = NGINX_TEMPLATE.read_text()
    with_web = render_nginx_conf(template, [("127.0.0.1", 7001)], "127.0.0.1:9", build,
                                 web_backends=[("127.0.0.1", 7101), ("127.0.0.1", 7103)],
                                 web_listen="127.0.0.1:10")
    lines = [ln.strip() for ln in with_web.splitlines()]
    assert "server 127.0.0.1:7101 max_fails=1 fail_timeout=5s;" in lines
    assert "server 127.0.0.1:7103 max_fails=1 fail_timeout=5s;" in lines
    assert "listen 127.0.0.1:10;" in lines and "listen 127.0.0.1:9 backlog=4096 " \
        "so_keepalive=on;" in lines
    assert "proxy_set_header Upgrade $http_upgrade;" in lines
    assert "proxy_read_timeout 1h;" in lines
    without = render_nginx_conf(template, [("127.0.0.1", 7001)], "127.0.0.1:9", build)
    assert "http {" not in without and "stream {" in without


def test_the_page_through_nginx(front: Front) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", front.plain.web_port, timeout=10)
    conn.request("GET", "/")
    reply = conn.getresponse()
    assert reply.status == 200 and b"<html" in reply.read().lower()
    conn.close()


def test_a_websocket_through_nginx_chats_with_a_tcp_user(front: Front) -> None:
    ws = WsClient(front.plain.web_port)
    tcp = front.server.connect()
    try:
        web_id = register_and_login(ws, unique("proxied"))
        tcp_id = tcp.register(unique("direct"), "pw")["id"]
        assert tcp.login(tcp_id, "pw")["errno"] == 0
        ws.send_json({"msgid": MsgId.ONE_CHAT_MSG, "to": tcp_id, "msg": "via nginx", "seq": 7})
        assert ws.expect(MsgId.CHAT_MSG_ACK)["state"] == "delivered"
        assert tcp.expect(MsgId.ONE_CHAT_MSG)["msg"] == "via nginx"
        tcp.send({"msgid": MsgId.ONE_CHAT_MSG, "to": web_id, "msg": "and back"})
        assert ws.expect(MsgId.ONE_CHAT_MSG)["msg"] == "and back"
    finally:
        ws.close()
        tcp.close()


def test_wss_through_nginx(front: Front) -> None:
    context = client_context(front.pki.ca)
    ws = WsClient(front.tls.web_port, tls=context)
    try:
        assert isinstance(ws.sock, ssl.SSLSocket)
        register_and_login(ws, unique("secure"))
    finally:
        ws.close()
    conn = http.client.HTTPSConnection("localhost", front.tls.web_port, timeout=10,
                                       context=context)
    conn.request("GET", "/app.js")
    assert conn.getresponse().status == 200
    conn.close()


def test_the_tls_template_has_the_web_block() -> None:
    text = (Path(__file__).parents[2] / "conf" / "nginx-tls.conf").read_text()
    assert "location = /ws" in text.split("\nhttp {")[1]
