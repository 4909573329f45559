"""Helpers for the operations tests: the metrics port of a server child process."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import ServerProcess

METRICS_LINE = r"metrics on http://[\d.]+:(\d+)/metrics"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_port(server: ServerProcess) -> int:
    line = server.wait_for_log(METRICS_LINE)
    match = re.search(METRICS_LINE, line)
    assert match is not None
    return int(match.group(1))


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET ``path`` on the metrics port; 503 is an answer, not an error."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by (name, labels), parsed by prometheus_client."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(probe: Callable[[], bool], timeout: float = 20.0, every: float = 0.1) -> None:
    """Poll ``probe`` (an HTTP endpoint has no event to wait on) until it holds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(every)
