"""The soak in its short form: mixed load on two servers while one is killed
and restarted, Redis is restarted and MariaDB is restarted, and the clients,
all logged in with acknowledged delivery, reset their connections at bad
moments (benchmarks/soak.py, docs/soak.md).  Under a minute; private mariadbd
and redis-server on free ports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.redis]


@pytest.mark.timeout(240)
def test_soak_short(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--seconds", "21",
         "--users", "20", "--down", "1.2", "--quiet", "2", "--reset-share", "0.015",
         "--json", str(out)],
        capture_output=True, text=True, timeout=220, cwd=ROOT)
    assert out.exists(), run.stdout + run.stderr[-3000:]
    r = json.loads(out.read_text())
    summary = run.stdout
    kinds = [f["kind"] for f in r["faults"]]
    assert {"kill-server", "server-restarted", "kill-redis", "redis-restarted",
            "stop-mysql", "mysql-restarted"} <= set(kinds), summary
    assert set(r["client_faults"]) == {"before-reading", "mid-read", "after-reading"}, summary
    assert not r["user_errors"], summary
    assert r["outcomes"].get("acked", 0) > 500, summary  # the load really ran
    assert r["delivery_acks_sent"] > 100, summary
    # Every acknowledged message reached its recipient's application once, in
    # order per sender; the only ones allowed missing were in the memory of the
    # server killed with -9.  Repeats came only after a new login, same mid.
    assert r["lost"] == 0, summary
    assert r["delivered"] + r["in_flight_at_kill"] == r["expected_deliveries"], summary
    assert r["order_violations"] == 0, summary
    assert r["duplicated_within_login"] == 0, summary
    assert r["mid_mismatches"] == 0 and r["mids_not_increasing"] == 0, summary
    assert r["repeats_across_logins"] > 0, summary  # the resets did make the server resend
    assert r["stuck_logins"] == 0 and r["login_wait_max_s"] < 15, summary
    assert r["offline_rows_left"] == 0, summary
    assert r["server_log_warnings"]["traceback"] == 0, summary
