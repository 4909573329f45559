"""A registration storm: hashing on a bounded worker pool keeps chat going.

The storm's registrations are hashed on one worker with a queue of four, at
a real (if reduced) scrypt cost, so most of them are refused at once with
"server busy" while two users who were already talking go on.  What is
asserted is delivery, acknowledgements and refusals, never timing.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import orjson

from chat.protocol import Errno, MsgId
from tests.hardening.conftest import logged_in
from tests.support.server import ServerProcess

STORM = 150


def open_sockets(pid: int) -> int:
    """Sockets the process holds (its database here is SQLite: files, not sockets)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed while we looked
            pass
    return count


def storm(port: int, replies: list[dict], ready: threading.Event) -> None:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(STORM)]
    ready.set()
    try:
        for i, sock in enumerate(socks):
            sock.sendall(orjson.dumps({"msgid": 3, "name": f"storm{i}", "password": "pw"})
                         + b"\n")
        for sock in socks:
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                assert chunk, "closed without a reply"
                data += chunk
            replies.append(orjson.loads(data))
    finally:
        for sock in socks:
            sock.close()


def test_a_registration_storm_does_not_starve_users_already_chatting(tmp_path):
    srv = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=2,
                        extra=["--hash-workers", "1", "--hash-queue", "4"],
                        env={"CHAT_SCRYPT_LOG2N": "12"}).start()
    try:
        assert srv.proc is not None
        alice, bob = logged_in(srv, "alice"), logged_in(srv, "bob")
        baseline = open_sockets(srv.proc.pid)
        replies: list[dict] = []
        ready = threading.Event()
        stormer = threading.Thread(target=storm, args=(srv.port, replies, ready))
        stormer.start()
        assert ready.wait(30)
        for i in range(20):  # round trips during the storm
            assert alice.chat(bob.user_id, f"during {i}", seq=i)["state"] == "delivered"
        stormer.join(60)
        assert [bob.expect(MsgId.ONE_CHAT_MSG)["msg"] for _ in range(20)] == [
            f"during {i}" for i in range(20)]
        assert len(replies) == STORM and all(r["msgid"] == MsgId.REG_MSG_ACK for r in replies)
        busy = [r for r in replies if r["errno"] == Errno.SERVER_ERROR]
        assert busy and all(r["errmsg"] == "server busy, try again" for r in busy)
        assert any(r["errno"] == 0 for r in replies)
        assert len(busy) + sum(r["errno"] == 0 for r in replies) == STORM
        deadline = time.monotonic() + 15
        while open_sockets(srv.proc.pid) > baseline:  # every storm socket let go
            assert time.monotonic() < deadline, open_sockets(srv.proc.pid) - baseline
            time.sleep(0.05)
        assert "Traceback" not in srv.log_text()
    finally:
        srv.kill()


def test_a_chat_request_behind_a_login_in_one_write_is_served_after_it(limited_server):
    srv = limited_server()
    bob = logged_in(srv, "bob")
    with srv.connect() as s:
        alice = s.register("alice", "pw")["id"]
        s.send_raw(orjson.dumps({"msgid": 1, "id": alice, "password": "pw"}) + b"\n"
                   + orjson.dumps({"msgid": 5, "to": bob.user_id, "msg": "hi", "seq": 1})
                   + b"\n")
        assert s.recv()["msgid"] == MsgId.LOGIN_MSG_ACK
        ack = s.recv()
        assert ack == {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 5,
                       "state": "delivered", "seq": 1, "mid": ack["mid"]}
    assert bob.expect(MsgId.ONE_CHAT_MSG)["msg"] == "hi"


def test_registrations_are_limited_per_address(limited_server):
    srv = limited_server("--register-rate", "0.001", "--register-burst", "3")
    with srv.connect(source="127.0.0.2") as s:
        assert [s.register(f"r{i}", "pw")["errno"] for i in range(3)] == [0, 0, 0]
        refused = s.register("r3", "pw")
        assert refused["errno"] == Errno.SERVER_ERROR
        assert "too many registrations" in refused["errmsg"]
    with srv.connect(source="127.0.0.3") as other:
        assert other.register("r4", "pw")["errno"] == 0
