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


def test_cluster_bench_rounds_against_a_baseline_checkout(tmp_path: Path) -> None:
    out = tmp_path / "cross.json"
    root = BENCH.parents[1]  # this very checkout stands in for the baseline
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--procs", "1", "--pairs", "2",
         "--seconds", "0.5", "--warmup", "0.2", "--scenarios", "one,split", "--rounds", "2",
         "--baseline", str(root), "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(out.read_text())
    assert [r["scenario"] for r in summary["results"]] == ["one", "split", "one@base",
                                                           "split@base"]
    assert all(len(r["rounds_msgs_per_s"]) == 2 for r in summary["results"])
    cross = summary["cross_server"]
    assert len(cross["split_vs_one_rounds"]) == len(cross["split_vs_one@base_rounds"]) == 2
    assert cross["split_vs_one"] > 0 and cross["split_vs_one@base"] > 0
    assert "cross-server (split / one@base)" in proc.stdout
