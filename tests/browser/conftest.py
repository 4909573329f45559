"""One headless chromium per test module, driven by Playwright, and a page per user.

Debian's chromium (/usr/bin/chromium, installed by scripts/bootstrap.sh test)
is used as it is; nothing here downloads a browser.  A missing chromium or
Playwright fails these tests: a browser test that skips proves nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support.server import ServerProcess

CHROMIUM = Path(os.environ.get("CHAT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
STEP_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/bootstrap.sh test"
    with sync_playwright() as pw:
        # Playwright starts chromium on a fresh temporary user data dir of its own.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = f"sqlite:///{tmp_path_factory.mktemp('db') / 'chat.db'}"
    proc = ServerProcess(db, threads=2, extra=["--ws-port", "0"]).start()
    yield proc
    proc.kill()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[int], Page]]:
    """Opens the web client of the server on ``port`` in a fresh browser context."""
    contexts: list[BrowserContext] = []

    def open_(port: int) -> Page:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#status[data-state=online]")
        return page

    yield open_
    for context in contexts:
        context.close()


def register(page: Page, name: str, password: str = "pw") -> int:
    """Registers in the page (which then logs in); returns the new user's id."""
    page.fill("#register-name", name)
    page.fill("#register-password", password)
    page.click("#register-form button")
    return logged_in_id(page)


def log_in(page: Page, user: str, password: str = "pw") -> int:
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-form button")
    return logged_in_id(page)


def logged_in_id(page: Page) -> int:
    page.wait_for_selector("#me:has-text('(id ')")
    text = page.text_content("#me")
    match = re.search(r"\(id (\d+)\)", text or "")
    assert match, text
    return int(match.group(1))
