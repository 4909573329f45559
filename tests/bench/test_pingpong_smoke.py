"""The chat ping-pong benchmark still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "pingpong.py"
sys.path.insert(0, str(BENCH.parent))

from pingpong import SPIN  # noqa: E402


def test_pingpong_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "pingpong.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--pairs", "2", "--seconds", "0.5",
         "--targets", "relay,t1,t2,t2-noturns", "--json", str(out)],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    assert {"benchmark", "command", "config", "machine", "unit", "results"} <= summary.keys()
    assert [r["target"] for r in summary["results"]] == [
        "reference relay", "server -t 1", "server -t 2", "server -t 2 --no-turns"]
    for row in summary["results"]:
        assert {"msgs_per_s", "delivered", "errors", "lost_in_flight", "latency_us",
                "ratio_vs_relay"} <= row.keys()
        assert {"p50", "p90", "p99", "p99.9", "max"} <= row["latency_us"].keys()
        assert row["delivered"] > 0
        assert row["errors"] == 0 and row["lost_in_flight"] == 0
    assert "| system" in proc.stdout


def _spinners() -> list[str]:
    """PIDs of live processes whose command line is pingpong.py's --busy spinner."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if SPIN.encode() in cmdline:
            found.append(entry.name)
    return found


def test_busy_spinners_run_with_the_benchmark_and_are_gone_after(tmp_path: Path) -> None:
    out = tmp_path / "pingpong.json"
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--pairs", "2", "--seconds", "0.5",
         "--busy", "2", "--targets", "relay", "--json", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the spinners start before the first target
            if ": pid " in line:
                break
        assert len(_spinners()) == 2
        _, rest = proc.communicate(timeout=90)
        assert proc.returncode == 0, rest
    finally:
        proc.kill()
    assert json.loads(out.read_text())["config"]["busy"] == 2
    assert _spinners() == []


def test_online_one_to_one_chat_touches_no_store() -> None:
    """What ping-pong measures must not reach the database: a store that raises on any
    use, a sender and a recipient online, chat both ways (with and without ``seq``)."""
    from chat.bus import LocalBus
    from chat.service import ChatService
    from chat.session import Session

    class NoStore:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"the store was used: {name}")

    class Conn:
        connected = True

        def __init__(self, name: str, user_id: int) -> None:
            self.name = name
            self.context = Session(post=lambda cb: cb())
            self.context.user_id, self.context.name = user_id, f"user{user_id}"
            self.sent: list[bytes] = []

        def send(self, data: bytes) -> None:
            self.sent.append(data)

        def run(self, cb: Callable[[], None]) -> None:
            cb()

        def owned_here(self) -> bool:
            return True

        def queued_bytes(self) -> int:
            return 0

        def talks_to(self, peer: object) -> None: ...

        def shutdown(self) -> None: ...

        def force_close(self) -> None: ...

    service = ChatService(NoStore(), LocalBus(), "bench")  # type: ignore[arg-type]
    a, b = Conn("a", 1), Conn("b", 2)
    for conn, uid in ((a, 1), (b, 2)):  # as login leaves them
        conn.context.outbox = service._outbox(conn, conn.context, uid, acking=False)
        service.router.attach(uid, conn)
    service.on_data(a, a.context, b'{"msgid":5,"to":2,"msg":"hi"}\n')
    service.on_data(b, b.context, b'{"msgid":5,"id":2,"toid":1,"msg":"yo","seq":3}\n')
    assert json.loads(b.sent[0])["msg"] == "hi"
    assert json.loads(a.sent[0])["msg"] == "yo"
    assert json.loads(b.sent[1])["state"] == "delivered"


def test_pingpong_with_acknowledged_delivery_runs(tmp_path: Path) -> None:
    out = tmp_path / "pingpong.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--pairs", "2", "--seconds", "0.5",
         "--targets", "t1", "--ack", "off,every,batch", "--json", str(out)],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = json.loads(out.read_text())["results"]
    assert [r["target"] for r in rows] == [
        "server -t 1, ack off", "server -t 1, ack every", "server -t 1, ack batch"]
    off, every, batch = rows
    assert off["acks_sent"] == off["receipts"] == 0 and off["rate_vs_ack_off"] == 1.0
    # Every message acknowledged by itself; a batch covers several; each ack
    # brings its sender a receipt per message.
    assert every["acks_sent"] >= every["delivered"] > 0 and every["receipts"] > 0
    assert 0 < batch["acks_sent"] < batch["delivered"] and batch["receipts"] > 0
    for row in rows:
        assert row["errors"] == 0 and row["lost_in_flight"] == 0
        assert row["rate_vs_ack_off"] > 0
