"""The storage benchmark still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "store_bench.py"


@pytest.mark.mysql
def test_store_bench_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert {"machine", "params", "rows"} <= summary.keys()
    cells = {(r["backend"], r["threads"]) for r in summary["rows"]}
    assert cells == {(b, t) for b in ("sqlite", "mysql") for t in (1, 4)}
    for row in summary["rows"]:
        assert row["login"]["logins"] > 0
        assert row["offline"]["messages"] == summary["params"]["messages"]
