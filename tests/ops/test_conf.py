"""The operations files under conf/ are what their tools accept (issue 20, item 4).

promtool (Debian's prometheus package) checks the scrape example, the alert
rules and every query of the Grafana dashboard, runs the alerts' unit tests
(tests/ops/alerts.test.yml) and lints a live server's exposition;
systemd-analyze checks the unit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ops.conftest import get, metrics_port
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not found:
        raise RuntimeError(f"{name} not found: scripts/bootstrap.sh test installs it")
    return found


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


def test_prometheus_config_and_alert_rules_are_valid() -> None:
    done = _run(_tool("promtool"), "check", "config", str(CONF / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alerts_fire_on_the_series_they_are_for() -> None:
    done = _run(_tool("promtool"), "test", "rules", str(Path(__file__).parent / "alerts.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    dashboard = json.loads((CONF / "grafana" / "chat-server.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 17
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}",
         "expr": e.replace("$__rate_interval", "1m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    done = _run(_tool("promtool"), "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_exposition_passes_promtool_lint(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=1,
                         extra=["--metrics-port", "0"]).start()
    try:
        port = metrics_port(proc)
        with proc.connect() as s:  # some labelled series exist only once used
            assert s.request({"msgid": 99}, 15)["errno"] == 4
        status, text = get(port, "/metrics")
    finally:
        proc.kill()
    assert status == 200
    done = _run(_tool("promtool"), "check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(60)
def test_the_systemd_unit_verifies() -> None:
    done = _run(_tool("systemd-analyze"), "verify", str(CONF / "chat-server.service"))
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line and "/opt/chat-server/bin/python" not in line]  # not installed here
    assert complaints == []
