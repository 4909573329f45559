"""Takes the web client's screenshots in docs/ with headless chromium.

Starts a chat server on a throw-away SQLite file, has two users chat in two
browser contexts, and saves Alice's page at a desktop and at a phone size:

    .venv/bin/python scripts/web_screenshot.py [--out docs]

Needs Debian's chromium (/usr/bin/chromium) and Playwright (the web-test extra).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_server(db: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat.server", "-p", "0", "-t", "1", "--ws-port", "0",
         "--db", db], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "CHAT_SCRYPT_LOG2N": "8"}, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if m := re.search(r"WebSocket at http://[\d.]+:(\d+)/", line):
            return proc, int(m.group(1))
    raise RuntimeError("the chat server did not start")


def register(page: Page, url: str, name: str) -> int:
    page.goto(url)
    page.wait_for_selector("#status[data-state=online]")
    page.fill("#register-name", name)
    page.fill("#register-password", "secret")
    page.click("#register-form button")
    page.wait_for_selector("#me:has-text('(id ')")
    return int(re.findall(r"\(id (\d+)\)", page.text_content("#me") or "")[0])


def say(page: Page, text: str) -> None:
    page.fill("#message-text", text)
    page.click("#send")
    page.wait_for_selector(f"#messages li:has-text('{text}')")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    out = Path(parser.parse_args().out)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(f"sqlite:///{tmp}/chat.db")
        url = f"http://127.0.0.1:{port}/"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             headless=True, args=ARGS)
                alice = browser.new_context(viewport={"width": 960, "height": 600}).new_page()
                bob = browser.new_context().new_page()
                register(alice, url, "alice")
                bob_id = register(bob, url, "bob")
                alice.fill("#group-name", "climbing")
                alice.click("#create-group-form button")
                alice.fill("#friend-id", str(bob_id))
                alice.click("#add-friend-form button")
                alice.click(f"#friends li[data-key='u:{bob_id}']")
                say(alice, "Hi Bob! Climbing on Saturday?")
                bob.click("#friends li[data-key='u:1']")
                say(bob, "Yes! 10 am at the usual wall?")
                alice.wait_for_selector("#messages li:has-text('usual wall')")
                say(alice, "Perfect, see you there")
                alice.locator("#notice").evaluate("notice => notice.hidden = true")
                alice.screenshot(path=str(out / "web-client.png"))
                alice.set_viewport_size({"width": 390, "height": 700})
                alice.screenshot(path=str(out / "web-client-phone.png"))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"wrote {out / 'web-client.png'} and {out / 'web-client-phone.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
