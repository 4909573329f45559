"""A bug in one request is that request's errno 9, never the end of the batch."""

from __future__ import annotations

from pathlib import Path

import orjson

from chat.bus import LocalBus
from chat.limits import Limits
from chat.protocol import Errno, MsgId
from chat.service import ChatService
from chat.store import open_store
from tests.fault.test_service_outage import FakeConn


def test_an_exception_in_one_handler_is_errno_9_and_the_next_frame_is_served(
        tmp_path: Path, caplog) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'chat.db'}", password_cost=4)
    try:
        service = ChatService(store, LocalBus(), "s1", Limits(hash_workers=0))

        def broken(*_args: object) -> None:
            raise RecursionError("maximum recursion depth exceeded")

        service._handlers[MsgId.ADD_GROUP_MSG] = broken
        uid = store.register("dave", "pw")
        conn = FakeConn()
        batch = b"".join(orjson.dumps(m) + b"\n" for m in (
            {"msgid": 1, "id": uid, "password": "pw"},
            {"msgid": 8, "groupid": 1, "seq": "broken"},
            {"msgid": 7, "groupname": "after", "groupdesc": "", "seq": "next"},
        ))
        service.on_data(conn, conn.context, batch)
        login, bug, created = conn.frames
        assert login["errno"] == 0
        assert bug == {"msgid": MsgId.ADD_GROUP_MSG_ACK, "errno": Errno.SERVER_ERROR,
                       "errmsg": "internal server error", "seq": "broken"}
        assert created["errno"] == 0 and created["seq"] == "next"
        assert [r.levelname for r in caplog.records if "bug while" in r.message] == ["ERROR"]
    finally:
        store.close()
