"""benchmarks/metrics_cost.py still runs end to end (no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "metrics_cost.py"


def test_metrics_cost_quick_runs() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--quick"],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    assert "metrics off" in out and "metrics on" in out
    assert "on / metrics off" in out
    assert "added per message" in out
    assert "scrapes" in out and " 0 scrapes" not in out
