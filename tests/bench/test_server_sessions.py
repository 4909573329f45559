"""The benchmarks start their servers as deployed: each in a session of its own
(``setsid``), unless asked to keep them in the benchmark's session; and
stopping a server still stops it, and its process group when it must."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from driver.servers import ChatServerProcess, RelayProcess, _Child  # noqa: E402
from echo_bench import start_server, stop_server  # noqa: E402

from tests.support.server import ServerProcess  # noqa: E402


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` no longer runs (reaped or a zombie of someone else's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("make", [lambda: ChatServerProcess(1), lambda: RelayProcess()],
                         ids=["chat-server", "relay"])
def test_a_benchmark_server_runs_in_a_session_of_its_own(
        make: Callable[[], ChatServerProcess | RelayProcess]) -> None:
    with make().start() as server:
        assert os.getsid(server.pid) == server.pid  # it leads its own session
        assert os.getsid(server.pid) != os.getsid(0)
        pid = server.pid
    assert gone(pid)


def test_same_session_keeps_the_server_in_the_benchmarks_session() -> None:
    with ChatServerProcess(1, new_session=False).start() as server:
        assert os.getsid(server.pid) == os.getsid(0)


def test_the_echo_benchmark_and_the_store_and_soak_servers_get_sessions_too(
        tmp_path: Path) -> None:
    proc, _address = start_server("reactor-0")
    try:
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    finally:
        stop_server(proc, new_session=True)
    server = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1, new_session=True)
    server.start()
    assert server.proc is not None
    try:
        assert os.getsid(server.proc.pid) == server.proc.pid != os.getsid(0)
    finally:
        server.terminate()


# A "server" that ignores SIGTERM and leaves a child of its own behind in its group.
STUBBORN = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("grandchild", child.pid, file=sys.stderr, flush=True)
print("listening on 127.0.0.1:1", file=sys.stderr, flush=True)
signal.pause()
"""


def test_a_server_that_ignores_sigterm_is_killed_with_its_process_group() -> None:
    stubborn = _Child()
    stubborn._spawn([sys.executable, "-c", STUBBORN])
    assert stubborn._ready.wait(10)
    grandchild = int(next(ln for ln in stubborn.lines if ln.startswith("grandchild")).split()[1])
    assert os.getpgid(grandchild) == stubborn.pid
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL
    assert gone(grandchild)
