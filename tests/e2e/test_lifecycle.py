"""Start, graceful stop, crash and restart of a server process."""

from __future__ import annotations

import signal
import time

import pytest

from chat.protocol import Errno, MsgId
from tests.support.server import ServerProcess


@pytest.fixture
def own_server(db_url):
    started: list[ServerProcess] = []

    def start(**kwargs) -> ServerProcess:
        proc = ServerProcess(db_url, **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def register(server, name_prefix, n=2):
    out = []
    with server.connect() as s:
        for i in range(n):
            name = f"{name_prefix}-{i}-{time.monotonic_ns()}"
            out.append((s.register(name, "pw")["id"], name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_logs_users_out_flushes_and_exits_0(own_server, sig):
    srv = own_server()
    (a, _), (b, _) = register(srv, "term")
    alice, bob = srv.connect(), srv.connect()
    alice.login(a, "pw")
    bob.login(b, "pw")
    alice.add_friend(b)
    started = time.monotonic()
    srv.proc.send_signal(sig)
    assert alice.closed_by_server(timeout=5) and bob.closed_by_server(timeout=5)
    alice.close()
    bob.close()
    assert srv.terminate(sig, timeout=5) == 0
    assert time.monotonic() - started < 5
    srv2 = own_server()
    with srv2.connect() as s:
        ack = s.login(a, "pw")
        assert ack["errno"] == 0, "the stopped server left its user online"
        assert ack["friends"][0]["state"] == "offline"


def test_signal_exits_in_time_even_if_clients_never_close(own_server):
    srv = own_server()
    (a, _), = register(srv, "stubborn", 1)
    stubborn = srv.connect()
    stubborn.login(a, "pw")
    started = time.monotonic()
    assert srv.terminate(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - started < 5
    assert stubborn.closed_by_server(timeout=1)


def test_restart_after_kill_9_clears_its_own_stale_users(own_server):
    srv = own_server(extra=["--server-id", "crashy"])
    (a, _), (b, _) = register(srv, "kill9")
    alice, bob = srv.connect(), srv.connect()
    alice.login(a, "pw")
    bob.login(b, "pw")
    assert alice.chat(b, "before the crash", seq=1)["state"] == "delivered"
    bob.close()
    srv.kill()
    alice.close()
    srv2 = own_server(extra=["--server-id", "crashy"])
    assert srv2.wait_for_log(r"cleared \d+ stale online state")
    with srv2.connect() as s1, srv2.connect() as s2:
        assert s1.login(a, "pw")["errno"] == 0
        assert s2.login(b, "pw")["errno"] == 0


def test_other_servers_users_survive_a_restart(own_server):
    """A server only clears the users it held itself."""
    first = own_server(extra=["--server-id", "first"])
    second = own_server(extra=["--server-id", "second"])
    (a, _), = register(first, "keep", 1)
    holder = second.connect()
    assert holder.login(a, "pw")["errno"] == 0
    first.terminate()
    own_server(extra=["--server-id", "first"])
    with second.connect() as s:
        assert s.login(a, "pw")["errno"] == Errno.ALREADY_ONLINE
    holder.chat(a, "still here", seq=1)
    holder.close()


def test_busy_port_fails_loudly(own_server):
    srv = own_server()
    clash = ServerProcess(srv.argv[srv.argv.index("--db") + 1], port=srv.port)
    with pytest.raises(RuntimeError, match="cannot listen"):
        clash.start(timeout=10)


def test_logout_of_a_dropped_connection_is_immediate(own_server):
    srv = own_server()
    (a, _), (b, _) = register(srv, "drop")
    alice, bob = srv.connect(), srv.connect()
    alice.login(a, "pw")
    bob.login(b, "pw")
    bob.add_friend(a)
    alice.sock.close()
    # Once the server has seen the close, a message to alice is stored.
    deadline = time.monotonic() + 5
    while bob.chat(a, "are you there?", seq=1)["state"] != "stored":
        assert time.monotonic() < deadline
    with srv.connect() as again:
        ack = again.login(a, "pw")
        assert ack["errno"] == 0 and ack["offlinemsg"][-1]["msg"] == "are you there?"
        assert ack["offlinemsg"][0]["msgid"] == MsgId.ONE_CHAT_MSG
