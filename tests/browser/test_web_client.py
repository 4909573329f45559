"""The web client in a real browser: people chat with pages, with the CLI, across restarts."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chat.protocol import MsgId
from tests.browser.conftest import STEP_TIMEOUT_MS, log_in, register
from tests.support.server import ServerProcess
from tests.support.wsclient import web_port

OpenPage = Callable[[int], Page]


def unique(prefix: str) -> str:
    return f"{prefix}{os.urandom(3).hex()}"



def add_friend(page: Page, friend_id: int) -> None:
    page.fill("#friend-id", str(friend_id))
    page.click("#add-friend-form button")
    page.wait_for_selector(f"#friends li[data-key='u:{friend_id}']")


def open_conversation(page: Page, key: str) -> None:
    page.click(f"#sidebar li[data-key='{key}']")
    expect(page.locator("#message-text")).to_be_enabled()


def say(page: Page, text: str) -> None:
    page.fill("#message-text", text)
    page.click("#send")


def last_message(page: Page) -> str:
    return page.locator("#messages li .text").last.inner_text()


def wait_for_text(page: Page, text: str) -> None:
    expect(page.locator("#messages li .text", has_text=text)).to_have_count(1)


def test_two_pages_register_befriend_and_chat_both_ways(server: ServerProcess,
                                                        open_page: OpenPage) -> None:
    alice, bob = open_page(web_port(server)), open_page(web_port(server))
    alice_id = register(alice, unique("alice"))
    bob_id = register(bob, unique("bob"))
    add_friend(alice, bob_id)
    open_conversation(alice, f"u:{bob_id}")
    say(alice, "hello Bob")
    receipt = alice.locator("#messages li.mine .receipt")
    expect(receipt).to_have_attribute("data-receipt", re.compile("delivered|received"))
    # Bob was not told of the friendship; the message brings Alice into his list.
    badge = bob.locator(f"#friends li[data-key='u:{alice_id}'] .unread")
    expect(badge).to_have_text("1")
    open_conversation(bob, f"u:{alice_id}")
    wait_for_text(bob, "hello Bob")
    # Bob's page acknowledged it: the server sent Alice's page a receipt (✓✓).
    expect(receipt).to_have_attribute("data-receipt", "received")
    expect(receipt).to_have_text("✓✓")
    say(bob, "hi Alice")
    open_conversation(alice, f"u:{bob_id}")
    wait_for_text(alice, "hi Alice")
    assert last_message(alice) == "hi Alice"


def test_a_page_and_a_tcp_client_chat(server: ServerProcess, open_page: OpenPage) -> None:
    page = open_page(web_port(server))
    page_id = register(page, unique("web"))
    tcp = server.connect()
    try:
        tcp_id = tcp.register(unique("cli"), "pw")["id"]
        assert tcp.login(tcp_id, "pw")["errno"] == 0
        add_friend(page, tcp_id)
        open_conversation(page, f"u:{tcp_id}")
        say(page, "from the browser")
        got = tcp.expect(MsgId.ONE_CHAT_MSG)
        assert (got["id"], got["msg"]) == (page_id, "from the browser")
        tcp.send({"msgid": MsgId.ONE_CHAT_MSG, "to": page_id, "msg": "from the terminal"})
        wait_for_text(page, "from the terminal")
    finally:
        tcp.close()


def test_a_message_sent_while_the_page_was_closed_appears_at_login(
        server: ServerProcess, open_page: OpenPage) -> None:
    first = open_page(web_port(server))
    name = unique("away")
    page_id = register(first, name)
    first.context.close()  # the socket closes: the user goes offline
    tcp = server.connect()
    try:
        tcp_id = tcp.register(unique("sender"), "pw")["id"]
        assert tcp.login(tcp_id, "pw")["errno"] == 0
        # Until the server has seen the page go, a message is delivered to its
        # connection; the page never acknowledged it, so it is kept all the same.
        deadline = time.monotonic() + 10
        sent = 0
        while True:
            sent += 1
            ack = tcp.chat(page_id, f"while you were away {sent}", seq=sent)
            assert ack is not None and ack["errno"] == 0, ack
            if ack["state"] == "stored" or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the close reaches the server in its own time
        assert ack["state"] == "stored", ack
    finally:
        tcp.close()
    again = open_page(web_port(server))
    assert log_in(again, str(page_id)) == page_id
    unread = again.locator(f"#friends li[data-key='u:{tcp_id}'] .unread")
    expect(unread).to_have_text(str(sent), timeout=STEP_TIMEOUT_MS)  # every one, once
    open_conversation(again, f"u:{tcp_id}")
    wait_for_text(again, f"while you were away {sent}")
    expect(again.locator("#messages li .text")).to_have_count(sent)


def test_the_page_reconnects_after_a_server_restart(tmp_path: Path,
                                                    open_page: OpenPage) -> None:
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    first = ServerProcess(db, threads=1, extra=["--ws-port", "0"]).start()
    tcp_port, ws_port = first.port, web_port(first)
    second: ServerProcess | None = None
    try:
        page = open_page(ws_port)
        page_id = register(page, unique("stays"))
        first.terminate()
        expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        # The same ports, handed out by the OS to the first run, are free again.
        second = ServerProcess(db, threads=1, port=tcp_port,
                               extra=["--ws-port", str(ws_port)]).start()
        expect(page.locator("#status")).to_have_attribute(
            "data-state", "online", timeout=STEP_TIMEOUT_MS * 2)
        tcp = second.connect()
        try:
            tcp_id = tcp.register(unique("after"), "pw")["id"]
            assert tcp.login(tcp_id, "pw")["errno"] == 0
            # Logged in again by the page itself: a live message reaches it.
            deadline = time.monotonic() + 10
            while True:
                ack = tcp.chat(page_id, "back?", seq=1)
                assert ack is not None
                if ack.get("state") == "delivered" or time.monotonic() > deadline:
                    break
            assert ack.get("state") == "delivered", ack
            add_friend(page, tcp_id)
            open_conversation(page, f"u:{tcp_id}")
            say(page, "still here")
            assert tcp.expect(MsgId.ONE_CHAT_MSG, msg="still here")["id"] == page_id
        finally:
            tcp.close()
    finally:
        first.kill()
        if second is not None:
            second.kill()


@pytest.fixture
def other_site() -> Iterator[str]:
    """A page at another origin: an HTTP server of the test's own on another port."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>another site</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_page_of_another_origin_cannot_open_a_websocket(
        server: ServerProcess, open_page: OpenPage, other_site: str) -> None:
    page = open_page(web_port(server))
    page.goto(other_site + "/")
    outcome = page.evaluate("""url => new Promise(done => {
        const socket = new WebSocket(url);
        socket.onopen = () => done("open");
        socket.onerror = () => done("refused");
    })""", f"ws://127.0.0.1:{web_port(server)}/ws")
    assert outcome == "refused"
    server.wait_for_log(f"origin '{other_site}' refused")
