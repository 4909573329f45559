"""benchmarks/hotpath.py still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "hotpath.py"


def test_hotpath_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "hotpath.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    [row] = summary["results"]
    assert row["build"] == "." and row["messages"] == 4 * 10 * 4
    assert 0 < row["us_per_msg"] <= row["median_us"]
    assert "| build |" in proc.stdout
