"""The echo benchmark still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "echo_bench.py"


def test_echo_bench_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert {"unit", "seconds_per_cell", "machine", "cells"} <= summary.keys()
    assert summary["cells"], "no cells measured"
    for cell in summary["cells"]:
        assert {
            "connections",
            "message_bytes",
            "reactor-0",
            "reactor-4",
            "reactor-4-noturns",
            "asyncio",
            "ratio_reactor0_asyncio",
            "ratio_reactor4_asyncio",
            "ratio_reactor4_noturns_asyncio",
        } <= cell.keys()
