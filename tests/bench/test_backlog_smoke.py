"""benchmarks/backlog.py still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "backlog.py"


def test_backlog_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "backlog.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--messages", "500", "--json", str(out)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = json.loads(out.read_text())["results"]
    assert [r["client"] for r in rows] == ["ack", "plain"]
    for r in rows:
        assert r["messages"] == 500 and r["stored_left"] == 0  # every one read and confirmed
        assert 0 < r["first_message_s"] <= r["last_message_s"]
        assert r["rss_before_mib"] > 0 and r["rss_peak_mib"] >= r["rss_before_mib"]
