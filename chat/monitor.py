"""The metrics port: ``/metrics``, ``/healthz`` and ``/readyz`` from one small HTTP server.

Theory of operation
-------------------
A ``ThreadingHTTPServer`` runs in a daemon thread of its own, beside the
reactor: a scrape never waits for a loop, and a busy loop never delays a
scrape.  ``/metrics`` is prometheus_client's exposition of the default
registry (``chat/metrics.py``).

``/healthz`` answers 200 when every check passes, else 503 with one line per
failed check.  The checks (the store answers ``SELECT 1``; Redis, when
configured, has its subscriber connected) run in one worker thread; their
result is kept for ``HEALTH_CACHE`` seconds, and concurrent requests wait for
the same run, so a storm of probes costs the database one query a second.
A check that hangs answers 503 after ``HEALTH_TIMEOUT`` and later probes wait
for that same run rather than start more.

``/readyz`` follows the process's life: 503 while starting, 200 once the
server accepts connections, 503 again from the first SIGTERM while it drains.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("chat.monitor")

HEALTH_CACHE = 1.0  # seconds a health result is reused
HEALTH_TIMEOUT = 2.0  # seconds a probe waits for the checks

Check = Callable[[], str | None]  # None when healthy, else the reason


class Phase(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class Monitor:
    """Serves the metrics port.  Every public method is safe from any thread."""

    def __init__(self, host: str, port: int, cache: float = HEALTH_CACHE) -> None:
        self.phase = Phase.STARTING
        self._cache = cache
        self._checks: list[tuple[str, Check]] = []
        self._lock = threading.Lock()
        self._result: tuple[float, list[str]] | None = None  # (monotonic time, failures)
        self._running: Future[list[str]] | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="health")
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http",
                                        daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", *self.address)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def add_check(self, name: str, check: Check) -> None:
        """``check()`` returns None when ``name`` is healthy, else why it is not."""
        with self._lock:
            self._checks.append((name, check))
            self._result = None

    # -- health ----------------------------------------------------------------

    def failures(self) -> list[str]:
        """Why the process is unhealthy, one reason per failed check; [] when healthy."""
        with self._lock:
            if self._result is not None and time.monotonic() - self._result[0] < self._cache:
                return self._result[1]
            if self._running is None:
                self._running = self._worker.submit(self._run_checks)
            running = self._running
        try:
            return running.result(timeout=HEALTH_TIMEOUT)
        except FutureTimeout:
            return [f"health checks did not answer within {HEALTH_TIMEOUT:g} s"]

    def _run_checks(self) -> list[str]:
        with self._lock:
            checks = list(self._checks)
        if self.phase is Phase.STARTING and not checks:
            failed = ["starting: the store is not open yet"]
        else:
            failed = [f"{name}: {reason}" for name, reason in
                      ((name, _safely(check)) for name, check in checks) if reason]
        with self._lock:
            self._result = (time.monotonic(), failed)
            self._running = None
        return failed

    # -- HTTP ------------------------------------------------------------------

    def respond(self, path: str, accept: str | None) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept or "")
            return 200, content_type, encoder(REGISTRY)
        if path == "/healthz":
            failed = self.failures()
            body = "\n".join(failed) if failed else "ok"
            return (503 if failed else 200), "text/plain; charset=utf-8", (body + "\n").encode()
        if path == "/readyz":
            phase = self.phase
            status = 200 if phase is Phase.READY else 503
            return status, "text/plain; charset=utf-8", (phase.value + "\n").encode()
        return 404, "text/plain; charset=utf-8", b"try /metrics, /healthz or /readyz\n"


def _safely(check: Check) -> str | None:
    try:
        return check()
    except Exception as exc:  # a check that breaks reports it; the probe still answers
        log.exception("health check %r failed", check)
        return f"check failed: {type(exc).__name__}"


def _handler_for(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that sends nothing does not hold a thread for ever

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            status, content_type, body = monitor.respond(self.path.split("?")[0],
                                                         self.headers.get("Accept"))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s %r", self.address_string(), format % args)

    return Handler
