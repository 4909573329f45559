"""The systems under test as child processes, and a description of the machine.

`ChatServerProcess` runs ``python -m chat.server`` on a free port over a fresh
SQLite file in a temporary directory, with the fast password hash
(``CHAT_SCRYPT_LOG2N=8``) so that logging in hundreds of users takes a second,
and with the per-connection request limit lifted (unless ``$CHAT_RATE`` is
set); it reads the real port from its ``listening on HOST:PORT`` log line.
`RelayProcess` runs the bare relay, ``benchmarks/relay.py`` (or another one,
wherever ``$CHAT_REFERENCE_RELAY`` / ``--relay`` says).
Both are context managers that stop the child with SIGTERM, then SIGKILL.

Each child starts in a session of its own (``start_new_session``, what
``setsid`` does), as a deployed server runs under a service manager or in a
container: on Linux with scheduler autogroups a process in another session
gets its own share of the CPU, which changes what ``-t 4`` costs (see
benchmarks/README.md). ``new_session=False`` (``--same-session`` on the
command lines) keeps the child in the benchmark's session, for comparison.
A child that ignores SIGTERM is killed with its whole process group.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from argparse import ArgumentParser
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RELAY = os.path.join(ROOT, "benchmarks", "relay.py")
LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")
FAST_HASH_ENV = {"CHAT_SCRYPT_LOG2N": "8"}
# The server's per-connection request limit (chat/limits.py, 2,000/s) stops one
# greedy client; a benchmark connection is one by design (a ping-pong pair of 2
# users alone runs at 7,000/s).  Lifted, unless the caller's environment sets it.
# The same for registrations per address and waiting password hashes: a
# benchmark registers thousands of users from one address at once.
UNLIMITED_RATE_ENV = {"CHAT_RATE": "1e9", "CHAT_BURST": "1000000000",
                      "CHAT_REGISTER_RATE": "1e9", "CHAT_REGISTER_BURST": "1000000000",
                      "CHAT_HASH_QUEUE": "1000000"}


def add_session_option(parser: ArgumentParser) -> None:
    """``--same-session``: start the servers in the benchmark's session, not their own."""
    parser.add_argument(
        "--same-session", action="store_true",
        help="start the servers in this process's session instead of one of their "
             "own (as deployed); for comparison")


def relay_path(explicit: str | None = None) -> str:
    """``explicit``, else ``$CHAT_REFERENCE_RELAY``, else the project's ``benchmarks/relay.py``."""
    path = explicit or os.environ.get("CHAT_REFERENCE_RELAY") or DEFAULT_RELAY
    return os.path.normpath(path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class _Child:
    """A child process whose stderr is drained by a thread (kept, last lines only)."""

    name = "child"

    def __init__(self, new_session: bool = True) -> None:
        self.new_session = new_session
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.lines: list[str] = []
        self._ready = threading.Event()

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None,
               cwd: str | None = None) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})}, start_new_session=self.new_session, cwd=cwd,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            del self.lines[:-200]
            m = LISTENING.search(line)
            if m and not self._ready.is_set():
                self.port = int(m.group(2))
                self._ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child so far (all its threads)."""
        return process_cpu_seconds(self.pid)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def _kill(self) -> None:
        assert self.proc is not None
        if not self.new_session:
            self.proc.kill()
            return
        # Not yet reaped, so its pid is still its group's id: nothing else can hold it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _fail(self, why: str) -> RuntimeError:
        self.stop(2.0)
        return RuntimeError(f"{self.name}: {why}\n" + "".join(self.lines[-30:]))

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChatServerProcess(_Child):
    """``python -m chat.server -t THREADS`` on a free port over a throw-away SQLite file."""

    def __init__(self, threads: int, extra: Sequence[str] = (), db: str | None = None,
                 new_session: bool = True, root: str | None = None) -> None:
        super().__init__(new_session)
        self.name = f"server -t {threads}"
        self.threads = threads
        self.extra = list(extra)
        self.root = root  # run ``chat.server`` from this checkout (another build), if given
        self._tmp: str | None = None
        self.db = db

    def start(self, timeout: float = 30.0) -> ChatServerProcess:
        if self.db is None:
            self._tmp = tempfile.mkdtemp(prefix="chat-bench-")
            self.db = f"sqlite:///{os.path.join(self._tmp, 'chat.db')}"
        argv = [sys.executable, "-m", "chat.server", "-H", self.host, "-p", "0",
                "-t", str(self.threads), "--db", self.db, "--log-level", "INFO", *self.extra]
        lifted = {k: v for k, v in UNLIMITED_RATE_ENV.items() if k not in os.environ}
        self._spawn(argv, {**lifted, **FAST_HASH_ENV}, cwd=self.root)
        if not self._ready.wait(timeout):
            raise self._fail("no 'listening on' line in time")
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        rc = super().stop(timeout)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        return rc


class RelayProcess(_Child):
    """The bare relay (one thread, one selectors loop, no checks) on a free port."""

    def __init__(self, path: str | None = None, new_session: bool = True) -> None:
        super().__init__(new_session)
        self.name = "reference relay"
        self.path = relay_path(path)

    def start(self, timeout: float = 10.0) -> RelayProcess:
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"reference relay not found at {self.path}; pass --relay or set "
                "CHAT_REFERENCE_RELAY")
        self.port = free_port(self.host)
        self._spawn([sys.executable, self.path, str(self.port)])
        deadline = time.monotonic() + timeout
        while True:  # it logs nothing: poll until it accepts
            try:
                socket.create_connection((self.host, self.port), timeout=1.0).close()
                return self
            except OSError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise self._fail("exited at start") from None
                if time.monotonic() > deadline:
                    raise self._fail("not accepting in time") from None
                time.sleep(0.05)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_context_switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of a running process so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return total


def command_line() -> str:
    """How this benchmark was run, for its summary: to be typed again from the repository."""
    return " ".join([os.path.relpath(sys.executable), *sys.argv])


def write_summary(path: str | None, summary: dict[str, Any]) -> None:
    """A benchmark's summary as indented JSON at ``path`` (``--json``); nothing if None."""
    if path:
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures: cores, Python, kernel, date."""
    uname = platform.uname()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "uname": f"{uname.system} {uname.release} {uname.machine}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
