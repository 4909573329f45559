"""The cluster benchmark still runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster_bench.py"


def test_cluster_bench_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--procs", "1", "--pairs", "2",
         "--seconds", "1", "--warmup", "0.3", "--json", str(out)],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    assert [r["scenario"] for r in summary["results"]] == ["one", "split", "nginx"]
    for row in summary["results"]:
        assert row["delivered"] > 0
        assert row["errors"] == 0 and row["lost_in_flight"] == 0
        assert {"p50", "p99"} <= row["latency_us"].keys()
    assert summary["scaling_nginx_vs_one"] is not None
    assert "| scenario" in proc.stdout
