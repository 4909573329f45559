"""The page's side of acknowledged delivery and receipts (PROTOCOL.md), in a real browser.

The server side is played here by a scripted peer behind the real web
gateway (h11, wsproto and the reactor as in production), so that the page
meets exactly the awkward cases: stored messages that follow the login, a
repeat as a redelivery after a reconnect sends it, and what the page
acknowledges is recorded.  tests/browser/test_web_client.py runs the page
against the real server (receipts, messages kept while the page was closed).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from playwright.sync_api import Page, expect

from chat.limits import Limits
from chat.protocol import MsgId
from chat.session import Session
from chat.web.gateway import WebGateway
from reactor import EventLoop, EventLoopThread, TcpServer
from tests.browser.conftest import log_in

PAL = 2
DELIVERY_ACK = int(MsgId.DELIVERY_ACK)
RECEIPT = int(MsgId.RECEIPT)


class ScriptedServer:
    """Stands in for ChatService behind the gateway: what the page sends, and replies."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.conn: Any = None
        self.ready = threading.Event()

    def on_data(self, conn: Any, session: Session, data: bytes) -> None:
        for line in data.split(b"\n"):
            if line.strip():
                self.handle(conn, orjson.loads(line))

    def on_disconnect(self, conn: Any, session: Session) -> None:
        pass

    def handle(self, conn: Any, msg: dict[str, Any]) -> None:
        self.received.put(msg)
        seq = msg.get("seq")
        if msg["msgid"] == MsgId.LOGIN_MSG:
            self.conn = conn
            self.push({"msgid": MsgId.LOGIN_MSG_ACK, "errno": 0, "id": 1, "name": "me",
                       "offlinemsg": [], "pending": 2, "seq": seq,
                       "friends": [{"id": PAL, "name": "pal", "state": "offline"}],
                       "groups": []})
            self.ready.set()
        elif msg["msgid"] == MsgId.ONE_CHAT_MSG:
            self.push({"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 5, "state": "stored",
                       "mid": 100, "seq": seq})

    def push(self, *msgs: dict[str, Any]) -> None:
        """Send in one write, so the page reads them at once."""
        self.conn.send(b"".join(orjson.dumps(msg) + b"\n" for msg in msgs))

    def next(self, msgid: int) -> dict[str, Any]:
        while True:
            msg = self.received.get(timeout=15)
            if msg["msgid"] == msgid:
                return msg


def chat(mid: int, text: str, **extra: Any) -> dict[str, Any]:
    return {"msgid": MsgId.ONE_CHAT_MSG, "id": PAL, "name": "pal", "to": 1, "msg": text,
            "time": "2026-11-29 12:00:00", "mid": mid, **extra}


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedServer, int]]:
    thread = EventLoopThread("scripted")
    loop = thread.start_loop()
    peer = ScriptedServer()
    built: queue.Queue[TcpServer] = queue.Queue()

    def build(loop: EventLoop = loop) -> None:
        server = TcpServer(loop, ("127.0.0.1", 0), "scripted")
        WebGateway(server, peer, Limits(), lambda post: Session(post=post))  # type: ignore[arg-type]
        server.start()
        built.put(server)

    loop.run_in_loop(build)
    server = built.get(timeout=10)
    yield peer, server.address[1]
    done = threading.Event()

    def stop() -> None:
        server.stop()
        done.set()

    loop.run_in_loop(stop)
    done.wait(10)
    thread.stop(timeout=10)


def test_stored_messages_are_acknowledged_in_a_batch_and_repeats_dropped(
        scripted: tuple[ScriptedServer, int], open_page: Any) -> None:
    peer, port = scripted
    page: Page = open_page(port)
    log_in(page, "me")
    login = peer.next(MsgId.LOGIN_MSG)
    assert login["name"] == "me" and login["ack"] is True
    peer.push(chat(1, "first, stored", stored=True), chat(2, "second, stored", stored=True),
              chat(2, "second, stored", stored=True),  # again, as after a reconnect
              chat(3, "third, live"))
    expect(page.locator(f"#friends li[data-key='u:{PAL}'] .unread")).to_have_text("3")
    ack = peer.next(DELIVERY_ACK)
    assert ack == {"msgid": DELIVERY_ACK, "mid": 3}  # one ack for all four
    page.click(f"#friends li[data-key='u:{PAL}']")
    texts = page.locator("#messages li .text").all_inner_texts()
    assert texts == ["first, stored", "second, stored", "third, live"]


def test_receipts_stored_then_received(scripted: tuple[ScriptedServer, int],
                                       open_page: Any) -> None:
    peer, port = scripted
    page: Page = open_page(port)
    log_in(page, "1")  # by id
    assert peer.next(MsgId.LOGIN_MSG)["id"] == 1
    page.click(f"#friends li[data-key='u:{PAL}']")
    page.fill("#message-text", "are you there?")
    page.click("#send")
    sent = peer.next(MsgId.ONE_CHAT_MSG)
    assert (sent["to"], sent["msg"]) == (PAL, "are you there?")
    receipt = page.locator("#messages li.mine .receipt")
    expect(receipt).to_have_attribute("data-receipt", "stored")
    expect(receipt).to_have_text("✓")
    peer.push({"msgid": RECEIPT, "mid": 100, "to": PAL})
    expect(receipt).to_have_attribute("data-receipt", "received")
    expect(receipt).to_have_text("✓✓")
