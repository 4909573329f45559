"""TLS terminated at nginx (conf/nginx-tls.conf): TLS clients chat, plain TCP and
untrusted certificates get nothing.

One chat server on a temporary SQLite database and nginx from the rendered
TLS config, with a throw-away CA and server certificate made by ``openssl``;
last, the launcher with ``--tls-cert/--tls-key`` (on MariaDB and Redis, as in
test_launcher.py).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chat.cluster import NGINX_TEMPLATE, NGINX_TLS_TEMPLATE, NginxBuild, render_nginx_conf
from chat.protocol import MsgId
from tests.cluster.conftest import unique
from tests.support.mariadb_server import free_port
from tests.support.nginx import NginxProcess
from tests.support.redis_server import RedisServer
from tests.support.server import TEST_ENV, ServerProcess
from tests.support.tls import SERVER_NAME, Pki, TlsChatSession, client_context, make_pki

pytestmark = [pytest.mark.nginx, pytest.mark.timeout(60)]


def _directives(text: str) -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [ln for ln in lines if ln]


def _value(directives: list[str], name: str) -> str:
    found = [d for d in directives if d.split()[0].rstrip(";") == name]
    assert len(found) == 1, (name, found)
    return found[0][len(name):].strip(" ;")


def test_tls_template_renders_certificate_paths_and_keeps_the_plain_settings(
        tmp_path: Path) -> None:
    build = NginxBuild("nginx", "static", "")
    backends = [("127.0.0.1", 7001), ("127.0.0.1", 7003)]
    tls = _directives(render_nginx_conf(
        NGINX_TLS_TEMPLATE.read_text(), backends, "127.0.0.1:9", build,
        tls=(str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))))
    assert "listen 127.0.0.1:9 ssl backlog=4096 so_keepalive=on;" in tls
    assert _value(tls, "ssl_certificate") == f'"{tmp_path / "chain.pem"}"'
    assert _value(tls, "ssl_certificate_key") == f'"{tmp_path / "key.pem"}"'
    assert [d for d in tls if d.startswith("server 127.")] == [
        "server 127.0.0.1:7001 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:7003 max_fails=1 fail_timeout=5s;"]
    assert _value(tls, "ssl_protocols") == "TLSv1.2 TLSv1.3"
    assert _value(tls, "ssl_session_cache").startswith("shared:")
    assert _value(tls, "ssl_handshake_timeout") == "10s"
    # The same idle timeout and balancing as the plain listener.
    plain = _directives(render_nginx_conf(NGINX_TEMPLATE.read_text(), backends,
                                          "127.0.0.1:9", build))
    for name in ("proxy_timeout", "least_conn", "proxy_connect_timeout",
                 "proxy_socket_keepalive", "tcp_nodelay"):
        assert _value(tls, name) == _value(plain, name), name
    # Without tls= the template's own (Let's Encrypt style) paths stay.
    example = _directives(render_nginx_conf(NGINX_TLS_TEMPLATE.read_text(), backends,
                                            "127.0.0.1:9", build))
    assert _value(example, "ssl_certificate").endswith("/fullchain.pem")
    with pytest.raises(ValueError, match="no ssl_certificate"):
        render_nginx_conf(NGINX_TEMPLATE.read_text(), backends, "127.0.0.1:9", build,
                          tls=("a.pem", "a.key"))
    with pytest.raises(ValueError, match="unsupported character"):
        render_nginx_conf(NGINX_TLS_TEMPLATE.read_text(), backends, "127.0.0.1:9", build,
                          tls=("$cert.pem", "a.key"))


@dataclass
class TlsFront:
    pki: Pki
    nginx: NginxProcess
    server: ServerProcess
    other_ca: Path  # a CA that did not sign nginx's certificate

    def context(self) -> ssl.SSLContext:
        return client_context(self.pki.ca)

    def connect(self, context: ssl.SSLContext | None = None,
                server_hostname: str = SERVER_NAME,
                session: ssl.SSLSession | None = None) -> TlsChatSession:
        return TlsChatSession("127.0.0.1", self.nginx.port, context or self.context(),
                              server_hostname=server_hostname, session=session)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def front(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFront]:
    base = tmp_path_factory.mktemp("tls")
    other_ca = make_pki(base / "other", ca_name="someone else's CA").ca
    server = ServerProcess(f"sqlite:///{base / 'chat.db'}").start()
    try:
        nginx = NginxProcess([("127.0.0.1", server.port)],
                             tls=(str(pki.cert), str(pki.key))).start()
    except BaseException:
        server.kill()
        raise
    yield TlsFront(pki, nginx, server, other_ca)
    nginx.cleanup()
    server.kill()


def _user(front: TlsFront, context: ssl.SSLContext | None = None) -> TlsChatSession:
    s = front.connect(context)
    reg = s.register(unique("tls"), "pw")
    assert reg["errno"] == 0, reg
    assert s.login(reg["id"], "pw")["errno"] == 0
    return s


def test_two_tls_clients_register_log_in_and_chat_through_nginx(front: TlsFront) -> None:
    with _user(front) as alice, _user(front) as bob:
        for s in (alice, bob):
            assert s.tls.version() in ("TLSv1.2", "TLSv1.3")
            peer = s.tls.getpeercert()
            assert peer is not None and peer["subject"] == ((("commonName", "localhost"),),)
        a, b = alice.user_id, bob.user_id
        assert a is not None and b is not None
        assert alice.add_friend(b)["errno"] == 0
        ack = alice.chat(b, "hello over TLS", seq=1)
        assert ack == {
            "msgid": MsgId.CHAT_MSG_ACK, "seq": 1, "errno": 0, "ref": MsgId.ONE_CHAT_MSG,
            "state": "delivered", "mid": ack["mid"]}
        got = bob.expect(MsgId.ONE_CHAT_MSG)
        assert (got["id"], got["msg"]) == (a, "hello over TLS")
        ack = bob.chat(a, "ünïcödé back", seq="b1")
        assert ack is not None and ack["state"] == "delivered", ack
        assert alice.expect(MsgId.ONE_CHAT_MSG)["msg"] == "ünïcödé back"
        # A frame longer than a TLS record (16 KiB) arrives whole.
        big = "x" * 20_000
        ack = alice.chat(b, big, seq=2)
        assert ack is not None and ack["state"] == "delivered", ack
        assert bob.expect(MsgId.ONE_CHAT_MSG)["msg"] == big
        assert bob.logout()["errno"] == 0


def test_tls_1_2_client_is_served(front: TlsFront) -> None:
    ctx = front.context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with _user(front, context=ctx) as s:
        assert s.tls.version() == "TLSv1.2"
        cipher = s.tls.cipher()
        assert cipher is not None and cipher[0].startswith("ECDHE-"), cipher


def test_reconnecting_client_resumes_its_session_from_the_cache(front: TlsFront) -> None:
    ctx = front.context()
    with _user(front, context=ctx) as first:  # a reply read: a TLS 1.3 ticket came first
        session = first.tls.session
        assert session is not None
    with front.connect(ctx, session=session) as again:
        reg = again.register(unique("tls"), "pw")  # the handshake finished
        assert reg["errno"] == 0
        assert again.tls.session_reused


def _read_until_closed(sock: socket.socket, timeout: float) -> bytes | None:
    """Everything the peer sends until it closes; None if it is still open at ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


def test_plain_tcp_client_on_the_tls_port_gets_no_chat_service(front: TlsFront) -> None:
    with socket.create_connection(("127.0.0.1", front.nginx.port), timeout=5) as sock:
        sock.sendall(b'{"msgid":3,"name":"plain","password":"pw"}\n')
        reply = _read_until_closed(sock, timeout=5)  # well before ssl_handshake_timeout
    assert reply is not None, "nginx kept a plain-text connection open"
    assert b"msgid" not in reply, reply  # at most a TLS alert, never a chat frame
    # The chat server never saw it: the same name is still free over TLS.
    with front.connect() as s:
        assert s.register("plain", "pw")["errno"] == 0


def test_certificate_verification(front: TlsFront) -> None:
    # A client that trusts nothing, or another CA, refuses nginx's certificate.
    for ctx in (client_context(None), client_context(front.other_ca)):
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            front.connect(ctx)
    # The right CA but another name: the name check fails.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        front.connect(server_hostname="chat.example.org")
    # The right CA and name (DNS or IP in subjectAltName) is served.
    with front.connect(server_hostname="127.0.0.1") as s:
        assert s.register(unique("tls"), "pw")["errno"] == 0


def test_launcher_serves_tls_with_tls_cert_and_key(pki: Pki, mysql_url: str,
                                                  module_redis: RedisServer) -> None:
    first, listen = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.cluster", "--servers", "1", "--first-port", str(first),
         "--listen", str(listen), "--threads", "1", "--db", mysql_url,
         "--redis", module_redis.url, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **TEST_ENV})
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"127.0.0.1:{listen} (nginx, TLS)" in banner, banner
        with TlsChatSession("127.0.0.1", listen, client_context(pki.ca)) as s:
            assert s.register(unique("tlsl"), "pw")["errno"] == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
