"""A real chat server and real ``python -m client`` processes, driven over pipes.

`ChatServer` starts ``python -m chat.server`` on port 0 with a temporary
SQLite file and reads the port from its ``listening on`` log line.  `Cli`
runs the client with piped stdin (so passwords are read from stdin, not
getpass) and waits for output lines matching a regex, with a deadline.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
ENV = {**os.environ, "CHAT_SCRYPT_LOG2N": "10", "PYTHONIOENCODING": "utf-8",
       "PYTHONUNBUFFERED": "1"}
LINE_TIMEOUT = 5.0
STOP_GRACE = 2.0


class ChatServer:
    def __init__(self, db_file: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat.server", "-H", "127.0.0.1", "-p", "0", "-t", "2",
             "--db", f"sqlite:///{db_file}"],
            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.log: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(20) or not self.port:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log[-20:]))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if not self.port and (m := LISTENING.search(line)):
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            # The client tests do not test the server's shutdown: a short grace.
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Cli:
    """One ``python -m client`` process; stdout and stderr read line by line."""

    def __init__(self, port: int, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client", "127.0.0.1", str(port), *options],
            cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, encoding="utf-8",
        )
        self.transcript: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def expect(self, pattern: str, timeout: float = LINE_TIMEOUT) -> re.Match[str]:
        """The first next line matching ``pattern``; the lines before it are skipped."""
        regex = re.compile(pattern)
        deadline = _deadline(timeout)
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in time:\n"
                                     + self.tail()) from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(f"output ended before {pattern!r}:\n{self.tail()}")
            self.transcript.append(line)
            if m := regex.search(line):
                return m

    def wait(self, timeout: float = LINE_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def tail(self) -> str:
        return "\n".join(self.transcript[-30:])

    # -- the menu ------------------------------------------------------------------

    def register(self, name: str, password: str = "pw") -> int:
        self.send("2", name, password)
        return int(self.expect(r"^registered: id=(\d+)$")[1])

    def login(self, user_id: int, password: str = "pw") -> None:
        self.send("1", str(user_id), password)
        self.expect(rf"^login success: id={user_id} ")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _deadline(timeout: float) -> Callable[[], float]:
    end = time.monotonic() + timeout
    return lambda: end - time.monotonic()


_names = itertools.count()


def unique_name(base: str) -> str:
    return f"{base}-{next(_names)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    srv = ChatServer(tmp_path_factory.mktemp("clientdb") / "chat.db")
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ChatServer]:
    """A server this test alone may kill."""
    srv = ChatServer(tmp_path / "chat.db")
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Cli]]:
    """Start clients (port, then options); whatever is still running at the end is killed."""
    clis: list[Cli] = []

    def start(port: int, *options: str) -> Cli:
        cli = Cli(port, *options)
        clis.append(cli)
        return cli

    yield start
    for cli in clis:
        cli.kill()
