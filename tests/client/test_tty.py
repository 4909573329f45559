"""The client on a pseudo-terminal: no password echo, and pushed chat redraws the typed line."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest

from tests.client.conftest import ENV, ROOT, ChatServer, Cli, unique_name

pytestmark = pytest.mark.timeout(30)


class PtyCli:
    """``python -m client`` with a pty as stdin, stdout and stderr."""

    def __init__(self, port: int, controlling: bool = False) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client", "127.0.0.1", str(port)],
            cwd=ROOT, env={**ENV, "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True,  # no controlling terminal of ours: getpass uses stdin
            # ...unless the pty becomes the controlling terminal, so that Ctrl+C is SIGINT.
            preexec_fn=_control_stdin if controlling else None,
        )
        os.close(slave)
        self.out = bytearray()
        self.pos = 0

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, needle: bytes, timeout: float = 5.0) -> None:
        """Wait until ``needle`` appears in the output after the last match."""
        end = time.monotonic() + timeout
        while (found := self.out.find(needle, self.pos)) < 0:
            remaining = end - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(0.0, remaining))
            if not ready:
                raise AssertionError(f"no {needle!r} in time; output:\n{bytes(self.out)!r}")
            try:
                self.out += os.read(self.master, 4096)
            except OSError as exc:  # EIO: the child is gone
                raise AssertionError(f"no {needle!r}; output:\n{bytes(self.out)!r}") from exc
        self.pos = found + len(needle)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        os.close(self.master)


def _control_stdin() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def pty_cli(server: ChatServer) -> Iterator[PtyCli]:
    cli = PtyCli(server.port)
    yield cli
    cli.close()


def test_password_is_not_echoed(pty_cli: PtyCli) -> None:
    name = unique_name("tty")
    pty_cli.expect(b"choice: ")
    pty_cli.send(b"2\n")
    pty_cli.expect(b"username: ")
    pty_cli.send(name.encode() + b"\n")
    pty_cli.expect(b"password: ")
    pty_cli.send(b"hunter2-secret\n")
    pty_cli.expect(b"registered: id=")
    assert name.encode() in pty_cli.out  # typed text is echoed...
    assert b"hunter2-secret" not in pty_cli.out  # ...but not the password


def test_pushed_chat_redraws_the_line_being_typed(
    pty_cli: PtyCli, server: ChatServer, spawn: Callable[[int], Cli]
) -> None:
    name = unique_name("tty")
    pty_cli.expect(b"choice: ")
    pty_cli.send(name.encode() + b"\n")  # not a choice: a hint, then the menu again
    pty_cli.expect(b"choice: ")
    pty_cli.send(b"2\n" + name.encode() + b"\n")
    pty_cli.expect(b"password: ")
    pty_cli.send(b"pw\n")
    pty_cli.expect(b"registered: id=")
    match = re.search(rb"registered: id=(\d+)", pty_cli.out)
    assert match is not None
    user_id = int(match[1])
    pty_cli.expect(b"choice: ")
    pty_cli.send(f"1\n{user_id}\n".encode())
    pty_cli.expect(b"password: ")
    pty_cli.send(b"pw\n")
    pty_cli.expect(b"offline messages: 0")
    pty_cli.expect(b"> ")
    pty_cli.send(b"chat:1:half typed")
    pty_cli.expect(b"half typed")
    other = spawn(server.port)
    other.login(other.register(unique_name("bob")))
    other.send(f"chat:{user_id}:hello there")
    pty_cli.expect(b"\r\x1b[K[")
    pty_cli.expect(b"hello there\r\n> chat:1:half typed")
    pty_cli.send(b"\x15quit\n")  # Ctrl+U clears the typed line
    assert pty_cli.proc.wait(5) == 0


@pytest.mark.parametrize("where", ["prompt", "password"])
def test_server_killed_while_reading_the_terminal(own_server: ChatServer, where: str) -> None:
    cli = PtyCli(own_server.port)
    try:
        cli.expect(b"choice: ")
        if where == "prompt":
            cli.send(b"2\n" + unique_name("tty").encode() + b"\n")
            cli.expect(b"password: ")  # getpass flushes what was typed before it
            cli.send(b"pw\n")
            cli.expect(b"choice: ")
        else:
            cli.send(b"1\n1\n")
            cli.expect(b"password: ")
        own_server.stop(signal.SIGKILL)
        cli.expect(b"connection closed by server")
        assert cli.proc.wait(3) == 2
        lflag = termios.tcgetattr(cli.master)[3]
        assert lflag & termios.ECHO and lflag & termios.ICANON  # the terminal is restored
    finally:
        cli.close()


@pytest.mark.parametrize(("where", "key"), [
    ("menu", b"\x04"), ("menu", b"\x03"), ("command", b"\x04"), ("command", b"\x03"),
])
def test_ctrl_d_and_ctrl_c_say_bye_on_a_new_line(
    spawn: Callable[[int], Cli], server: ChatServer, where: str, key: bytes
) -> None:
    cli = PtyCli(server.port, controlling=True)
    try:
        cli.expect(prompt := b"choice: ")
        if where == "command":
            user_id = spawn(server.port).register(unique_name("tty"))
            cli.send(f"1\n{user_id}\n".encode())
            cli.expect(b"password: ")
            cli.send(b"pw\n")
            cli.expect(b"offline messages: 0")
            cli.expect(prompt := b"> ")
        if key == b"\x03":  # Ctrl+D ends the input on an empty line only
            cli.send(b"typed")
            cli.expect(b"typed")
        cli.send(key)
        try:
            cli.expect(b"bye\r\n", timeout=1.5)
        except AssertionError:
            if key != b"\x03":
                raise
            # CPython's readline checks for signals only when its select() is
            # interrupted: a SIGINT that lands while it handles the last key
            # typed waits for the next one. A person presses Ctrl+C again.
            cli.send(key)
            cli.expect(b"bye\r\n")
        assert cli.proc.wait(5) == 0
        # The line ends before "bye": after the prompt, the typed text, or an echoed ^C.
        tail = bytes(cli.out[cli.out.rfind(prompt):])
        assert re.search(rb"(> |: |typed|\^C)\r\n(\r\x1b\[K)?bye\r\n$", tail), tail
    finally:
        cli.close()
