"""benchmarks/nonreader.py still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "nonreader.py"


def test_nonreader_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "nonreader.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    rows = summary["results"]
    assert [r["phase"] for r in rows] == ["baseline", "reader", "plain", "ack"]
    assert summary["pingpong_errors"] == 0
    for r in rows:
        assert r["pingpong_msgs_per_s"] > 0 and r["pingpong_latency_us"]["p99"] > 0
        assert r["rss_peak_mib"] >= r["rss_before_mib"] > 0
    for r in rows[1:]:
        # Every message to the non-reader was accepted; what the acknowledging
        # one never confirmed is kept for its next login.
        assert sum(r["sender_ack_states"].values()) > 0
        assert set(r["sender_ack_states"]) <= {"delivered", "stored"}
    assert rows[1]["read"] == sum(rows[1]["sender_ack_states"].values())  # the control read all
    assert rows[3]["stored_for_nonreader"] == sum(rows[3]["sender_ack_states"].values())
