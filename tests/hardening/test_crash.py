"""kill -9 of a single-node server: nothing acknowledged is lost."""

from __future__ import annotations

import signal
import socket

from chat.protocol import MsgId
from tests.support.server import ServerProcess


def restart(srv: ServerProcess, db: str) -> ServerProcess:
    srv.terminate(signal.SIGKILL)
    return ServerProcess(db, port=srv.port, extra=["--server-id", "solo"]).start()


def test_stored_messages_and_logins_survive_kill_9(tmp_path):
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    srv = ServerProcess(db, extra=["--server-id", "solo"]).start()
    try:
        alice, bob = srv.connect(), srv.connect()
        a = alice.register("alice", "pw")["id"]
        b = bob.register("bob", "pw")["id"]
        c = alice.register("carol", "pw")["id"]
        assert alice.login(a, "pw")["errno"] == 0 and bob.login(b, "pw")["errno"] == 0
        acks = [alice.chat(c, f"m{i}", seq=i) for i in range(200)]
        assert all(ack["state"] == "stored" for ack in acks)
        srv = restart(srv, db)
        with srv.connect() as s1, srv.connect() as s2, srv.connect() as s3:
            assert s1.login(a, "pw")["errno"] == 0
            assert s2.login(b, "pw")["errno"] == 0
            ack = s3.login(c, "pw")
            assert [m["msg"] for m in s3.backlog(ack)] == [f"m{i}" for i in range(200)]
    finally:
        srv.kill()


def test_unacknowledged_messages_survive_kill_9_of_the_server_sending_them(tmp_path):
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    srv = ServerProcess(db, extra=["--server-id", "solo", "--slow-grace", "60",
                                   "--rate", "1e6", "--burst", "100000"]).start()
    try:
        with srv.connect() as s:
            sender = s.register("sender", "pw")["id"]
            uid = s.register("reader", "pw")["id"]
            assert s.login(sender, "pw")["errno"] == 0
            texts = [f"{i:05d}" + "w" * 2000 for i in range(2000)]  # 4 MB
            for text in texts:
                s.send({"msgid": MsgId.ONE_CHAT_MSG, "to": uid, "msg": text})
            assert s.chat(uid, "end", seq=1)["state"] == "stored"
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stuck.connect(("127.0.0.1", srv.port))
        stuck.sendall(b'{"msgid":1,"id":%d,"password":"pw","ack":true}\n' % uid)
        stuck.settimeout(30)
        assert stuck.recv(1, socket.MSG_PEEK)  # messages are being delivered ...
        srv = restart(srv, db)  # ... and none was acknowledged
        stuck.close()
        with srv.connect() as s:
            ack = s.login(uid, "pw", ack=True)
            got = []
            for _ in range(ack["pending"]):
                got.append(s.expect((MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG)))
                s.acknowledge(got[-1]["mid"])
        assert [m["msg"] for m in got] == [*texts, "end"]
    finally:
        srv.kill()
