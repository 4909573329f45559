"""Messages between two servers over a private Redis show up as ``bus`` and ``from_bus``."""

from __future__ import annotations

import uuid

import pytest

from chat.protocol import MsgId
from client.session import ChatSession
from tests.ops.conftest import metrics_port, scrape, value
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.mysql, pytest.mark.timeout(90)]
MESSAGES = 10


def _user(server: ServerProcess) -> ChatSession:
    session = server.connect()
    ack = session.register(f"b{uuid.uuid4().hex[:8]}", "pw")
    assert session.login(ack["id"], "pw")["errno"] == 0
    return session


def test_a_message_through_redis_is_counted_on_both_servers(mysql_url: str) -> None:
    redis = RedisServer().start()
    servers = [ServerProcess(mysql_url, threads=1, extra=[
        "--redis", redis.url, "--server-id", f"m-{uuid.uuid4().hex[:6]}",
        "--metrics-port", "0"]).start() for _ in range(2)]
    try:
        ports = [metrics_port(s) for s in servers]
        alice, bob = _user(servers[0]), _user(servers[1])
        before = [scrape(p) for p in ports]
        for i in range(MESSAGES):
            alice.chat(bob.user_id or 0, f"across {i}")
            assert bob.expect(MsgId.ONE_CHAT_MSG)["msg"] == f"across {i}"
        after = [scrape(p) for p in ports]

        def delta(i: int, name: str, **labels: str) -> float:
            return value(after[i], name, **labels) - value(before[i], name, **labels)

        assert delta(0, "chat_messages_delivered_total", path="bus") == MESSAGES
        assert delta(0, "chat_messages_delivered_total", path="live") == 0
        assert delta(1, "chat_messages_delivered_total", path="from_bus") == MESSAGES
        assert delta(0, "chat_redis_publish_seconds_count") >= MESSAGES
        assert value(after[0], "chat_redis_up") == 1 == value(after[1], "chat_redis_up")
        alice.close()
        bob.close()
    finally:
        for s in servers:
            s.kill()
        redis.cleanup()
