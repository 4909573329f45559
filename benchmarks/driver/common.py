"""Small pieces shared by the load modes (flood, fan-out, login storm, capacity).

- `raise_nofile`: every driver process holding thousands of sockets raises its
  RLIMIT_NOFILE soft limit to the hard limit first (the server does the same).
- `rss_kib`: a process's resident set from ``/proc/PID/status`` (VmRSS).
- `split`: share a count over K processes.
- `merge`: fold the workers' results (counts and histograms) into one row.
- `stamped`: the send instant at the start of a message text, and back.
- `logged_in`: a worker's pool of users, registered and logged in.
- `measuring_window`: wait for the common start; the window's edges.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable
from typing import Any

from .histogram import Histogram
from .users import UserPool
from .workers import WorkerControl

STAMP_LEN = 20  # zero-padded time.monotonic_ns() at the start of a message text


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS of /proc/PID/status), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def split(total: int, parts: int) -> list[int]:
    """``total`` shared as evenly as possible over ``parts`` (larger shares first)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def wait_until(instant: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``instant`` (to about a millisecond)."""
    while time.monotonic() < instant:
        time.sleep(0.001)


def logged_in(cfg: dict[str, Any], n: int, suffix: str = "",
              setup_timeout: float = 120.0) -> UserPool:
    """``n`` users on ``cfg["host"]:cfg["port"]`` named ``cfg["prefix"] + suffix + i``,
    registered and logged in (within ``cfg["setup_timeout"]``, else ``setup_timeout``),
    with acknowledged delivery if ``cfg["ack"]`` is set and not "off"."""
    pool = UserPool(cfg["host"], cfg["port"], n, cfg["prefix"] + suffix,
                    acking=cfg.get("ack", "off") != "off")
    pool.setup(timeout=cfg.get("setup_timeout", setup_timeout))
    return pool


def measuring_window(cfg: dict[str, Any], ctl: WorkerControl,
                     drain: float) -> tuple[int, int, int]:
    """Report ready and wait for the common start; then the ``time.monotonic_ns()``
    instants where the warm-up (``cfg["warmup"]``) and the window (``cfg["seconds"]``)
    end, and the drain deadline (``cfg["drain"]``, else ``drain``, seconds after that)."""
    start = ctl.wait_go()
    warm_end = int((start + cfg["warmup"]) * 1e9)
    end = warm_end + int(cfg["seconds"] * 1e9)
    wait_until(start)
    return warm_end, end, end + int(cfg.get("drain", drain) * 1e9)


def merge(results: Iterable[dict[str, Any]], seconds: float, count_key: str = "delivered",
          rate_key: str = "msgs_per_s") -> dict[str, Any]:
    """One row from the workers' results: summed counts, merged histogram, first error."""
    results = list(results)
    hist = Histogram.merged(Histogram.from_dict(r["histogram"]) for r in results)
    count = sum(r[count_key] for r in results)
    row: dict[str, Any] = {
        rate_key: round(count / seconds, 1) if seconds else 0.0,
        count_key: count,
        "errors": sum(r.get("errors", 0) for r in results),
        "latency_us": hist.summary_us(),
    }
    first_error = next((r["first_error"] for r in results if r.get("first_error")), "")
    if first_error:
        row["first_error"] = first_error
    return row
