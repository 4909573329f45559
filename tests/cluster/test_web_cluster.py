"""WebSocket users and TCP users on different servers of a cluster chat (through Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chat.protocol import MsgId
from tests.cluster.conftest import unique
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient, web_port
from tests.web.test_gateway import register_and_login


@pytest.fixture(scope="module")
def servers(mysql_url: str, module_redis: RedisServer) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for _ in range(2):
            started.append(ServerProcess(mysql_url, threads=2, extra=[
                "--redis", module_redis.url, "--server-id", unique("web-srv-"),
                "--ws-port", "0"]).start())
        yield started
    finally:
        for server in started:
            server.kill()


def test_a_web_user_and_a_tcp_user_on_other_servers_chat(servers: list[ServerProcess]) -> None:
    page = WsClient(web_port(servers[0]))
    tcp = servers[1].connect()
    try:
        page_id = register_and_login(page, unique("w"))
        tcp_id = tcp.register(unique("t"), "pw")["id"]
        assert tcp.login(tcp_id, "pw")["errno"] == 0
        page.send_json({"msgid": MsgId.ONE_CHAT_MSG, "to": tcp_id, "msg": "across", "seq": 1})
        assert page.expect(MsgId.CHAT_MSG_ACK)["state"] == "delivered"
        assert tcp.expect(MsgId.ONE_CHAT_MSG)["msg"] == "across"
        assert tcp.chat(page_id, "and back across", seq=2)["state"] == "delivered"  # type: ignore[index]
        got = page.expect(MsgId.ONE_CHAT_MSG)
        assert (got["id"], got["msg"]) == (tcp_id, "and back across")
    finally:
        page.close()
        tcp.close()


def test_two_web_users_on_other_servers_chat_in_a_group(servers: list[ServerProcess]) -> None:
    first, second = WsClient(web_port(servers[0])), WsClient(web_port(servers[1]))
    try:
        register_and_login(first, unique("g1"))
        second_id = register_and_login(second, unique("g2"))
        first.send_json({"msgid": MsgId.CREATE_GROUP_MSG, "groupname": unique("grp"),
                         "groupdesc": ""})
        group_id = first.expect(MsgId.CREATE_GROUP_MSG_ACK)["groupid"]
        second.send_json({"msgid": MsgId.ADD_GROUP_MSG, "groupid": group_id})
        assert second.expect(MsgId.ADD_GROUP_MSG_ACK)["errno"] == 0
        first.send_json({"msgid": MsgId.GROUP_CHAT_MSG, "groupid": group_id, "msg": "all"})
        got = second.expect(MsgId.GROUP_CHAT_MSG)
        assert (got["groupid"], got["msg"]) == (group_id, "all")
        assert second_id != got["id"]
    finally:
        first.close()
        second.close()
