"""Connection capacity: N idle logged-in connections, then chat among all of them.

Each worker process raises its open-file limit, opens its share of the
connections, registers and logs every user in (pipelined), and reports
ready; the parent reads the server's RSS while they sit idle.  After the
common start each connection sends ``rounds`` one-to-one messages to
another user of the same process (user i to user i + N/2 of the worker, so
every message crosses the pool), one round after the other: a round ends
when every message of it has arrived.  The worker checks each user got
exactly what was sent to it, and times each delivery.
"""

from __future__ import annotations

import time
from typing import Any

from .common import STAMP_LEN, logged_in, raise_nofile, wait_until
from .histogram import Histogram
from .users import DriverError, readable
from .workers import WorkerControl


def capacity_worker(cfg: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    limit = raise_nofile()
    if cfg["conns"] + 64 > limit:
        raise DriverError(f"{cfg['conns']} connections need more than RLIMIT_NOFILE {limit}")
    t0 = time.monotonic()
    pool = logged_in(cfg, cfg["conns"], setup_timeout=600.0)
    setup_s = time.monotonic() - t0
    conns = pool.conns
    half = len(conns) // 2 or 1
    for c in conns:
        c.peer = conns[(c.index + half) % len(conns)]
    frames = {c.index: (f'{{"msgid":5,"to":{c.peer.user_id},"msg":"').encode()
              for c in conns if c.peer is not None}
    expect_from = {c.peer.index: c.user_id for c in conns if c.peer is not None}
    start = ctl.wait_go(timeout=cfg.get("setup_timeout", 600.0))
    wait_until(start)

    hist, monotonic_ns = Histogram(), time.monotonic_ns
    delivered = errors = 0
    first_error = ""
    deadline = time.monotonic() + cfg.get("round_timeout", 60.0)
    for _ in range(cfg["rounds"]):
        got = [0] * len(conns)
        for c in conns:
            c.send(frames[c.index] + b"%020d" % monotonic_ns() + b'"}\n')
        pending = len(conns)
        while pending and time.monotonic() < deadline:
            for c in readable(pool.sel, 0.2):
                for m in c.receive():
                    if type(m) is not dict or m.get("msgid") != 5 or \
                            m.get("id") != expect_from[c.index] or got[c.index]:
                        errors += 1
                        first_error = first_error or repr(m)[:200]
                        continue
                    hist.record(monotonic_ns() - int(m["msg"][:STAMP_LEN]))
                    got[c.index] = 1
                    delivered += 1
                    pending -= 1
            ctl.progress(delivered)
    n = len(conns)
    pool.close()
    return {"conns": n, "delivered": delivered, "expected": n * cfg["rounds"],
            "errors": errors, "first_error": first_error, "setup_seconds": round(setup_s, 2),
            "histogram": hist.to_dict()}
