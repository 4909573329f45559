"""The web port over real sockets: HTTP for the page, WebSocket for chat."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wsproto.events import CloseConnection, Ping, Pong
from wsproto.utilities import generate_accept_token

from chat.protocol import MsgId
from tests.support.server import ServerProcess
from tests.support.wsclient import Rejected, WsClient, web_port


@pytest.fixture
def ws(web_server: ServerProcess) -> Iterator[WsClient]:
    client = WsClient(web_port(web_server))
    yield client
    client.close()


def register_and_login(client: WsClient, name: str) -> int:
    client.send_json({"msgid": MsgId.REG_MSG, "name": name, "password": "pw"})
    ack = client.expect(MsgId.REG_MSG_ACK)
    assert ack["errno"] == 0, ack
    client.send_json({"msgid": MsgId.LOGIN_MSG, "id": ack["id"], "password": "pw"})
    login = client.expect(MsgId.LOGIN_MSG_ACK)
    assert login["errno"] == 0, login
    user_id: int = ack["id"]
    return user_id


def unique(prefix: str) -> str:
    return f"{prefix}{os.urandom(4).hex()}"


def read_http_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {head!r}"
        head += chunk
    return head


# -- HTTP -----------------------------------------------------------------------


def test_page_and_assets_are_served_with_keep_alive(web_server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web_port(web_server), timeout=10)
    conn.request("GET", "/")
    page = conn.getresponse()
    body = page.read()
    assert page.status == 200
    assert page.getheader("Content-Type", "").startswith("text/html")
    assert b"<html" in body.lower()
    index = Path(__file__).parents[2] / "chat" / "web" / "static" / "index.html"
    assert body == index.read_bytes()
    conn.request("GET", "/app.js")  # the same socket: keep-alive
    script = conn.getresponse()
    assert script.status == 200
    assert script.getheader("Content-Type", "").startswith("text/javascript")
    assert script.read()
    conn.request("GET", "/../pyproject.toml")
    missing = conn.getresponse()
    assert missing.status == 404
    missing.read()
    conn.close()


def test_a_malformed_request_gets_400(web_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", web_port(web_server)), timeout=10) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        assert read_http_head(sock).startswith(b"HTTP/1.1 400 ")


def test_a_bad_handshake_gets_400(web_server: ServerProcess) -> None:
    request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")  # no Sec-WebSocket-Key
    with socket.create_connection(("127.0.0.1", web_port(web_server)), timeout=10) as sock:
        sock.sendall(request)
        assert read_http_head(sock).startswith(b"HTTP/1.1 400 ")


# -- the handshake ------------------------------------------------------------------


def test_a_handshake_split_byte_by_byte_is_accepted(web_server: ServerProcess) -> None:
    port = web_port(web_server)
    key = base64.b64encode(os.urandom(16))
    request = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               b"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:%d\r\n\r\n"
               % (port, key, port))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            sock.send(request[i:i + 1])
        head = read_http_head(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
    headers = {name.lower(): value for name, value in headers.items()}
    assert headers[b"sec-websocket-accept"] == generate_accept_token(key)


def test_a_foreign_origin_is_refused(web_server: ServerProcess) -> None:
    with pytest.raises(Rejected) as refused:
        WsClient(web_port(web_server), origin="http://evil.example")
    assert refused.value.status == 403
    web_server.wait_for_log("origin 'http://evil.example' refused")


# -- WebSocket frames -------------------------------------------------------------------


def test_chat_frames_and_errors_over_websocket(ws: WsClient) -> None:
    register_and_login(ws, unique("w"))
    ws.send_text('{"msgid": 99}')
    error = ws.expect(MsgId.ERROR_MSG)
    assert error["errno"] == 4 and error["ref"] == 99
    ws.send_text("not json")
    assert ws.expect(MsgId.ERROR_MSG)["errno"] == 4
    ws.send_text('{\n"msgid": 10\n}')  # raw newlines are whitespace: still one request
    assert ws.expect(MsgId.LOGINOUT_MSG_ACK)["errno"] == 0


def test_a_message_over_the_limit_closes_with_1009(ws: WsClient) -> None:
    ws.send_text('{"msgid": 3, "name": "' + "x" * (64 * 1024) + '"}')
    closed = ws.wait_closed()
    assert closed.code == 1009


def test_a_binary_message_closes_with_1003(ws: WsClient) -> None:
    ws.send_bytes(b'{"msgid": 3}')
    assert ws.wait_closed().code == 1003


def test_a_ping_is_answered(ws: WsClient) -> None:
    ws.sock.sendall(ws.ws.send(Ping(b"are you there")))
    event = ws.recv_event()
    assert isinstance(event, Pong) and event.payload == b"are you there"


def test_an_idle_socket_is_pinged_and_an_answering_one_stays(ws: WsClient) -> None:
    # The module's server has --idle-timeout 3: pings after 1 s of silence.
    register_and_login(ws, unique("idle"))
    deadline = time.monotonic() + 5  # past the idle timeout, answering every ping
    while time.monotonic() < deadline:
        event = ws.recv_event(timeout=5)
        assert not isinstance(event, CloseConnection)
    assert ws.pings >= 2


def test_a_silent_socket_is_closed(web_server: ServerProcess) -> None:
    client = WsClient(web_port(web_server), auto_pong=False)
    register_and_login(client, unique("dead"))
    assert client.wait_closed(timeout=8).code == 1008
    assert client.pings >= 1
    client.close()


# -- web and TCP users ----------------------------------------------------------------------


def test_a_web_user_and_a_tcp_user_chat_both_ways(web_server: ServerProcess,
                                                  ws: WsClient) -> None:
    web_id = register_and_login(ws, unique("web"))
    tcp = web_server.connect()
    try:
        tcp_name = unique("tcp")
        tcp_id = tcp.register(tcp_name, "pw")["id"]
        assert tcp.login(tcp_id, "pw")["errno"] == 0
        ack = tcp.chat(web_id, "hi from tcp", seq=1)
        assert ack == {"msgid": MsgId.CHAT_MSG_ACK, "seq": 1, "errno": 0, "ref": 5,
                       "state": "delivered", "mid": ack["mid"]}
        got = ws.expect(MsgId.ONE_CHAT_MSG)
        assert got["mid"] == ack["mid"]
        assert (got["id"], got["name"], got["msg"]) == (tcp_id, tcp_name, "hi from tcp")
        ws.send_json({"msgid": MsgId.ONE_CHAT_MSG, "to": tcp_id, "msg": "hi from the web",
                      "seq": 1})
        assert ws.expect(MsgId.CHAT_MSG_ACK)["state"] == "delivered"
        back = tcp.expect(MsgId.ONE_CHAT_MSG)
        assert (back["id"], back["msg"]) == (web_id, "hi from the web")
    finally:
        tcp.close()


def test_a_closed_websocket_logs_its_user_out(web_server: ServerProcess) -> None:
    client = WsClient(web_port(web_server))
    name = unique("gone")
    user_id = register_and_login(client, name)
    client.close()
    again = WsClient(web_port(web_server))
    try:
        deadline = time.monotonic() + 10
        while True:  # the close reaches the server a moment after our close()
            again.send_json({"msgid": MsgId.LOGIN_MSG, "id": user_id, "password": "pw"})
            ack = again.expect(MsgId.LOGIN_MSG_ACK)
            if ack["errno"] != 2 or time.monotonic() > deadline:
                break
        assert ack["errno"] == 0, ack
    finally:
        again.close()


def test_sigterm_closes_websockets_with_1001(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1,
                           extra=["--ws-port", "0"]).start()
    try:
        client = WsClient(web_port(server))
        register_and_login(client, unique("bye"))
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert client.wait_closed().code == 1001
        assert server.proc.wait(10) == 0  # type: ignore[union-attr]
        client.close()
    finally:
        server.kill()


def test_max_connections_counts_both_ports(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    proc = ServerProcess(db, threads=1, extra=["--ws-port", "0",
                                               "--max-connections", "1"]).start()
    try:
        tcp = proc.connect()
        assert tcp.register("first", "pw")["errno"] == 0  # holds the one slot
        with pytest.raises(Rejected) as refused:
            WsClient(web_port(proc))
        assert refused.value.status == 503
        tcp.close()
        deadline = time.monotonic() + 10
        while True:  # the slot comes back once the server has seen the close
            try:
                ws = WsClient(web_port(proc))
                break
            except Rejected:
                assert time.monotonic() < deadline, "the slot never came back"
                time.sleep(0.05)  # nothing else tells a client the server saw the close
        with proc.connect() as second:  # and now the TCP port is the full one
            assert "full" in second.expect(MsgId.ERROR_MSG)["errmsg"]
        ws.close()
    finally:
        proc.kill()
