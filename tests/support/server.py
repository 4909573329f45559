"""Start ``python -m chat.server`` as a child process on a free port, for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from client.session import ChatSession

LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")

# Fast hashing keeps hundreds of test logins quick; one store test uses the default.
# Tests register hundreds of users at once from 127.0.0.1: the per-address
# registration limit and the bound on waiting password hashes are lifted
# unless a test sets its own (--register-rate, --hash-queue).
TEST_ENV = {"CHAT_SCRYPT_LOG2N": "8", "CHAT_REGISTER_RATE": "1e9",
            "CHAT_REGISTER_BURST": "1000000000", "CHAT_HASH_QUEUE": "100000"}


class ServerProcess:
    """A chat server child process; its log lines are kept in ``lines``.

    With ``new_session`` it runs in a session of its own, as a deployed server
    does (the benchmarks that use it measure it so, see benchmarks/README.md).
    """

    def __init__(self, db: str, threads: int = 2, extra: Sequence[str] = (),
                 port: int = 0, env: dict[str, str] | None = None,
                 new_session: bool = False) -> None:
        self.argv = [
            sys.executable, "-m", "chat.server", "-H", "127.0.0.1", "-p", str(port),
            "-t", str(threads), "--db", db, "--log-level", "INFO", *extra,
        ]
        self.env = {**os.environ, **TEST_ENV, **(env or {})}
        self.new_session = new_session
        self.lines: list[str] = []
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._listening = threading.Event()
        self._log_closed = False
        self._lines_changed = threading.Condition()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env=self.env, start_new_session=self.new_session,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        with self._lines_changed:
            self._lines_changed.wait_for(
                lambda: self._listening.is_set() or self._log_closed, timeout)
        if not self._listening.is_set():
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-30:]))
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lines_changed:
                self.lines.append(line)
                self._lines_changed.notify_all()
            m = LISTENING.search(line)
            if m and not self._listening.is_set():
                self.port = int(m.group(2))
                self._listening.set()
        with self._lines_changed:
            self._log_closed = True
            self._lines_changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        regex = re.compile(pattern)
        with self._lines_changed:
            found: list[str] = []

            def seen() -> bool:
                found[:] = [ln for ln in self.lines if regex.search(ln)]
                return bool(found)

            if not self._lines_changed.wait_for(seen, timeout):
                raise TimeoutError(f"no log line matching {pattern!r}")
            return found[0]

    def connect(self, **kwargs: object) -> ChatSession:
        session = ChatSession("127.0.0.1", self.port, **kwargs)  # type: ignore[arg-type]
        if "--proxy-protocol" in self.argv:  # stand in for nginx: say who connects
            (src, sport), (dst, dport) = (session.sock.getsockname(),
                                          session.sock.getpeername())
            session.send_raw(f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode())
        return session

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return "".join(self.lines)
