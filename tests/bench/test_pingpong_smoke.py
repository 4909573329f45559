"""The chat ping-pong benchmark still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "pingpong.py"


def test_pingpong_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "pingpong.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--pairs", "2", "--seconds", "0.5",
         "--targets", "relay,t1,t2", "--json", str(out)],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    assert {"benchmark", "command", "config", "machine", "unit", "results"} <= summary.keys()
    assert [r["target"] for r in summary["results"]] == [
        "reference relay", "server -t 1", "server -t 2"]
    for row in summary["results"]:
        assert {"msgs_per_s", "delivered", "errors", "lost_in_flight", "latency_us",
                "ratio_vs_relay"} <= row.keys()
        assert {"p50", "p90", "p99", "p99.9", "max"} <= row["latency_us"].keys()
        assert row["delivered"] > 0
        assert row["errors"] == 0 and row["lost_in_flight"] == 0
    assert "| system" in proc.stdout
