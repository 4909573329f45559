"""benchmarks/locustfile.py runs headless against a real server and writes CSV stats."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from driver.servers import ChatServerProcess  # noqa: E402

LOCUST = shutil.which("locust", path=os.path.dirname(sys.executable)) or shutil.which("locust")


@pytest.mark.skipif(LOCUST is None, reason="locust is not installed (the bench extra)")
def test_locust_headless_run(tmp_path: Path) -> None:
    with ChatServerProcess(1).start() as server:
        proc = subprocess.run(
            [str(LOCUST), "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless",
             "-u", "5", "-r", "5", "-t", "3s", "--host", f"tcp://127.0.0.1:{server.port}",
             "--think-time", "0.2", "--csv", str(tmp_path / "run"), "--only-summary"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run_stats.csv") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    for key in (("tcp", "register"), ("tcp", "login"), ("tcp", "one_chat")):
        assert int(rows[key]["Request Count"]) > 0, key
        assert int(rows[key]["Failure Count"]) == 0, key
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
