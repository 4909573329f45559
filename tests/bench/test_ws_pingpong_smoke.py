"""The WebSocket-against-TCP ping-pong benchmark still runs end to end (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "ws_pingpong.py"


def test_ws_pingpong_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "ws.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    results = json.loads(out.read_text())["results"]
    assert [r["transport"] for r in results] == ["tcp", "ws"]
    for row in results:
        assert row["messages"] > 0
        assert {"msgs_per_s", "server_cpu_us_per_msg", "p50_ms", "p99_ms"} <= row.keys()
    assert "WebSocket / TCP throughput" in proc.stdout
