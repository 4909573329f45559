"""Every mode of benchmarks/load.py, and plot.py on their output, still run (no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
LATENCY = {"p50", "p90", "p99", "p99.9", "max"}


def load(tmp_path: Path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "load.py"), *args, "--quick", "--procs", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout
    assert "| system" in proc.stdout
    summary = json.loads(out.read_text())
    assert {"benchmark", "command", "config", "machine", "unit", "results"} <= summary.keys()
    for row in summary["results"]:
        assert row["latency_us"].keys() >= LATENCY
        assert row["errors"] == 0
    return summary


@pytest.mark.parametrize("mode, keys", [
    ("flood", {"msgs_per_s", "delivered", "lost", "window"}),
    ("logins", {"logins_per_s", "logins", "unfinished"}),
])
def test_rate_modes(tmp_path: Path, mode: str, keys: set[str]) -> None:
    (row,) = load(tmp_path, mode, mode)["results"]
    assert keys <= row.keys()
    assert row.get("lost", 0) == 0 and row.get("unfinished", 0) == 0


def test_fanout_capacity_sweep_and_plot(tmp_path: Path) -> None:
    fan = load(tmp_path, "fanout", "fanout")["results"]
    assert [r["group_size"] for r in fan] == [3, 10]
    assert all(r["lost"] == 0 and r["deliveries_per_s"] > 0 for r in fan)
    (cap,) = load(tmp_path, "capacity", "capacity")["results"]
    assert cap["all_delivered"] and {"before", "idle", "after_chat", "per_conn"} <= cap[
        "rss_kib"].keys()
    sweep = load(tmp_path, "sweep_pingpong", "sweep")
    assert [(r["sweep"], r["clients"], r["threads"]) for r in sweep["results"]] == [
        ("clients", 4, 1), ("threads", 8, 1)]
    assert all(r["msgs_per_s"] > 0 for r in sweep["results"])
    proc = subprocess.run([sys.executable, str(BENCH / "plot.py"), "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for png in ("fanout.png", "sweep_pingpong_clients.png", "sweep_pingpong_threads.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
