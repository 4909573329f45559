"""Failed logins are counted per (account, address); nginx says who the client is.

Clients bind to 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on Linux)
so that one test machine has strangers and owners at distinct addresses.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from chat.protocol import Errno, MsgId
from chat.proxyproto import V2_SIGNATURE
from client.session import ChatSession
from tests.support.nginx import NginxProcess

STRANGER, OWNER = "127.0.0.2", "127.0.0.3"


def fail_logins(connect, user_id: int, times: int) -> None:
    with connect() as s:
        for _ in range(times):
            assert s.login(user_id, "wrong")["errmsg"] == "wrong user id, name or password"
        assert "too many" in s.login(user_id, "right")["errmsg"]  # this address is blocked


def test_a_strangers_failures_never_lock_the_owner_out(limited_server):
    srv = limited_server("--account-failures", "5")
    with srv.connect() as s:
        victim = s.register("victim", "right")["id"]
    fail_logins(lambda: srv.connect(source=STRANGER), victim, 5)
    with srv.connect(source=OWNER) as owner:
        assert owner.login(victim, "right")["errno"] == 0


@pytest.fixture
def behind_nginx(limited_server) -> Iterator[tuple[object, NginxProcess]]:
    srv = limited_server("--proxy-protocol", "--account-failures", "3")
    nginx = NginxProcess([("127.0.0.1", srv.port)], proxy_protocol=True).start()
    yield srv, nginx
    nginx.cleanup()


def test_behind_nginx_the_server_sees_each_clients_own_address(behind_nginx):
    srv, nginx = behind_nginx
    with ChatSession("127.0.0.1", nginx.port, source=OWNER) as s:
        victim = s.register("victim", "right")["id"]
    # nginx connects to the server from 127.0.0.1 for everyone: only the
    # PROXY header tells the stranger's failures from the owner's login.
    fail_logins(lambda: ChatSession("127.0.0.1", nginx.port, source=STRANGER), victim, 3)
    with ChatSession("127.0.0.1", nginx.port, source=OWNER) as owner:
        assert owner.login(victim, "right")["errno"] == 0
    assert "Traceback" not in srv.log_text()


def test_without_a_header_a_proxy_protocol_server_closes_the_connection(limited_server):
    srv = limited_server("--proxy-protocol")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b'{"msgid":3,"name":"direct","password":"pw"}\n')
        assert sock.recv(4096) == b""  # closed, no reply
    srv.wait_for_log("no PROXY header, closing")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:  # v2, binary
        body = socket.inet_aton(STRANGER) + socket.inet_aton("127.0.0.1") + struct.pack(
            "!HH", 40000, srv.port)
        sock.sendall(V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(body)) + body
                     + b'{"msgid":3,"name":"via-v2","password":"pw"}\n')
        assert b'"errno":0' in sock.recv(4096)


def test_a_header_the_server_does_not_expect_is_a_bad_frame(limited_server):
    srv = limited_server()
    with srv.connect() as s:
        s.send_raw(b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 6000\r\n")
        err = s.recv()
        assert err["msgid"] == MsgId.ERROR_MSG and err["errno"] == Errno.BAD_REQUEST
        assert s.register("after-header", "pw")["errno"] == 0
