"""/metrics of a running server moves by what its users did (issue 20, item 5)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.protocol import MsgId
from client.session import ChatSession
from tests.ops.conftest import Samples, metrics_port, scrape, value
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(60)
MESSAGES = 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=2,
                         extra=["--metrics-port", "0"]).start()
    yield proc
    proc.kill()


def _user(server: ServerProcess) -> ChatSession:
    session = server.connect()
    name = f"m{uuid.uuid4().hex[:8]}"
    ack = session.register(name, "pw")
    assert session.login(ack["id"], "pw")["errno"] == 0
    return session


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_counters_and_histograms_follow_a_conversation(server: ServerProcess) -> None:
    port = metrics_port(server)
    alice, bob = _user(server), _user(server)
    carol = _user(server)  # logs out, gets one message stored, logs in again
    carol_id = carol.user_id
    assert carol_id is not None
    carol.logout()
    group = alice.create_group(f"g{uuid.uuid4().hex[:8]}")["groupid"]
    assert bob.join_group(group)["errno"] == 0
    before = scrape(port)

    for i in range(MESSAGES):
        alice.chat(bob.user_id or 0, f"hello {i}")
        assert bob.expect(MsgId.ONE_CHAT_MSG)["msg"] == f"hello {i}"
    assert alice.group_chat(group, "to the group", seq=1)["state"] == "delivered"
    assert bob.expect(MsgId.GROUP_CHAT_MSG)["msg"] == "to the group"
    assert alice.chat(carol_id, "while you were out", seq=2)["state"] == "stored"
    assert alice.request({"msgid": 99}, MsgId.ERROR_MSG)["errno"] == 4
    assert len(carol.login(carol_id, "pw")["offlinemsg"]) == 1
    after = scrape(port)

    assert _delta(after, before, "chat_requests_total", msgid="ONE_CHAT_MSG") == MESSAGES + 1
    assert _delta(after, before, "chat_requests_total", msgid="GROUP_CHAT_MSG") == 1
    assert _delta(after, before, "chat_requests_total", msgid="unknown") == 1
    assert _delta(after, before, "chat_request_errors_total", msgid="unknown", errno="4") == 1
    assert _delta(after, before, "chat_messages_delivered_total", path="live") == MESSAGES + 1
    assert _delta(after, before, "chat_messages_delivered_total", path="stored") == 1
    assert _delta(after, before, "chat_backlog_delivered_total") == 1
    assert value(after, "chat_users_online") == 3
    assert value(after, "chat_connections_open", transport="tcp", dialect="modern") == 3

    one = _delta(after, before, "chat_delivery_latency_seconds_count", kind="one")
    assert one == MESSAGES
    assert _delta(after, before, "chat_delivery_latency_seconds_count", kind="group") == 1
    assert 0 < _delta(after, before, "chat_delivery_latency_seconds_sum", kind="one") < 10
    assert _delta(after, before, "chat_delivery_latency_seconds_bucket",
                  kind="one", le="+Inf") == MESSAGES

    # the stored message and carol's login went to the database
    for operation in ("store_offline_many", "offline_box", "authenticate"):
        assert _delta(after, before, "chat_db_call_seconds_count", operation=operation) >= 1
    assert _delta(after, before, "chat_db_pool_wait_seconds_count") >= 3
    # Borrowed connections all come back; a timer's call (the message-id
    # record, every second) or a delete after a write may hold one just now.
    deadline = time.monotonic() + 10
    while value(scrape(port), "chat_db_pool_connections_in_use") != 0:
        assert time.monotonic() < deadline, "a pooled connection was never given back"
        time.sleep(0.05)  # a gauge: nothing to wait on but the next scrape

    rounds = sum(_delta(after, before, "chat_loop_ready_events_count", loop=f"io{i}")
                 for i in range(2))
    assert rounds >= 1
    assert _delta(after, before, "chat_loop_busy_seconds_total", loop="io0") + \
        _delta(after, before, "chat_loop_busy_seconds_total", loop="io1") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0
    assert ("chat_redis_up", frozenset()) not in after  # no Redis configured, no series


def test_connections_refused_at_the_limit_are_counted(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1,
                         extra=["--metrics-port", "0", "--max-connections", "1"]).start()
    try:
        port = metrics_port(proc)
        with proc.connect() as first, proc.connect() as second:
            assert second.expect(MsgId.ERROR_MSG)["errno"] == 9
            assert first.register(f"r{uuid.uuid4().hex[:8]}", "pw")["errno"] == 0
            samples = scrape(port)
        assert value(samples, "chat_connections_refused_total", reason="limit") == 1
        assert value(samples, "chat_connections_open", transport="tcp", dialect="modern") == 1
    finally:
        proc.kill()


def test_connections_dropped_are_counted_by_reason(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1, extra=[
        "--metrics-port", "0", "--login-timeout", "0.3", "--rate", "1", "--burst", "2",
        "--max-frame", "100"]).start()
    try:
        port = metrics_port(proc)
        with proc.connect() as lazy:  # never logs in
            assert lazy.closed_by_server(timeout=10)
        with proc.connect() as flooder:  # over the rate until cut off
            flooder.send_raw(b'{"msgid": 99}\n' * 10)
            assert flooder.closed_by_server(timeout=10)
        with proc.connect() as big:
            big.send_raw(b'{"msgid": 3, "name": "' + b"x" * 200 + b'"}\n')
            assert big.closed_by_server(timeout=10)
        samples = scrape(port)
        for reason in ("login_timeout", "flood", "frame_too_large"):
            assert value(samples, "chat_connections_dropped_total", reason=reason) == 1, reason
        assert value(samples, "chat_request_errors_total", msgid="unknown", errno="7") == 1
    finally:
        proc.kill()
