"""Disconnects never make a loop wait on Redis or the database (issue 16, item 9)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from chat.protocol import Errno, MsgId
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess


@pytest.fixture
def stalled_redis() -> Iterator[RedisServer]:
    redis = RedisServer().start()
    yield redis
    if redis.process is not None:
        os.kill(redis.process.pid, signal.SIGCONT)
    redis.cleanup()


def test_a_burst_of_disconnects_with_redis_stalled_does_not_stall_the_loop(
        stalled_redis: RedisServer, mysql_url: str) -> None:
    # One sub-reactor: every connection below shares the loop of alice and bob.
    srv = ServerProcess(mysql_url, threads=1, extra=[
        "--redis", stalled_redis.url, "--server-id", f"stall-{os.getpid()}"]).start()
    try:
        users = []
        for i in range(12):
            s = srv.connect()
            uid = s.register(f"stall{i}-{os.getpid()}", "pw")["id"]
            assert s.login(uid, "pw")["errno"] == 0
            users.append((s, uid))
        (alice, _), (bob, bob_id) = users[:2]
        assert stalled_redis.process is not None
        os.kill(stalled_redis.process.pid, signal.SIGSTOP)  # every Redis reply waits now
        for s, _ in users[2:]:
            s.close()  # ten unsubscribes that Redis will not confirm (2 s each, at most)
        for n in range(3):
            ack = alice.chat(bob_id, f"still here {n}", seq=n)
            assert ack is not None and ack["errno"] == Errno.OK
            assert bob.expect(MsgId.ONE_CHAT_MSG, timeout=3)["msg"] == f"still here {n}"
        os.kill(stalled_redis.process.pid, signal.SIGCONT)
        # Once Redis answers, the released users can log in again (here or elsewhere).
        again = _login_eventually(srv, users[2][1])
        assert again["errno"] == 0
    finally:
        srv.kill()


def _login_eventually(srv: ServerProcess, uid: int) -> dict:
    for _ in range(200):
        with srv.connect() as s:
            ack = s.login(uid, "pw")
        if ack["errno"] != Errno.ALREADY_ONLINE:
            return ack
        time.sleep(0.05)  # the release finishes in the background: nothing to wait on
    raise AssertionError("the user was never released")
