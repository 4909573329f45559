"""The memory benchmark still runs end to end on a few hundred connections
(its figures are read, not judged: they belong to benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


def test_memory_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--threads", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    assert summary["config"]["servers_in_own_session"] is True
    (row,) = summary["results"]
    assert (row["conns"], row["logged_in"], row["threads"]) == (300, 150, 2)
    assert set(row["rss_kib"]) == {"start", "warm", "connected", "logged_in"}
    assert all(kib > 0 for kib in row["rss_kib"].values())
    assert abs(row["kib_per_logged_in_user"] - row["kib_per_conn"] - row["kib_per_login"]) < 0.02
    assert "a logged-in idle user" in proc.stdout
