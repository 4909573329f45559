"""Login storm: U registered users per process log in and out as fast as the server lets them.

Each connection alternates ``LOGIN_MSG`` and ``LOGINOUT_MSG``, one request in
flight, and sends the next one as soon as the previous ACK arrives.  A login
is the server's whole login path: authenticate (a read and a password hash
check at the server's scrypt cost), mark online (a write), the ACK's friends,
groups and offline-message reads; a logout is one write.  The figure is
completed logins per second in the window; the latency recorded is the
login's (request sent -> ACK received).
"""

from __future__ import annotations

import time
from typing import Any

from chat.protocol import MsgId, encode

from .common import logged_in, measuring_window, raise_nofile
from .histogram import Histogram
from .users import readable
from .workers import WorkerControl

_LOGIN_ACK, _LOGOUT_ACK = 2, 14


def login_worker(cfg: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    raise_nofile()
    pool = logged_in(cfg, cfg["users"])
    pool.request_all(lambda c: encode({"msgid": MsgId.LOGINOUT_MSG}), MsgId.LOGINOUT_MSG_ACK)
    login = {c.index: encode({"msgid": MsgId.LOGIN_MSG, "id": c.user_id,
                              "password": c.password}) for c in pool.conns}
    logout = encode({"msgid": MsgId.LOGINOUT_MSG})
    sent_at = [0] * len(pool.conns)

    warm_end, end, drain_end = measuring_window(cfg, ctl, drain=10.0)

    hist, monotonic_ns = Histogram(), time.monotonic_ns
    logins = total = errors = 0
    first_error = ""
    busy = len(pool.conns)
    for c in pool.conns:
        sent_at[c.index] = monotonic_ns()
        c.send(login[c.index])
    while busy:
        for c in readable(pool.sel, 0.2):
            for m in c.receive():
                now = monotonic_ns()
                mid = m.get("msgid") if type(m) is dict else None
                if mid not in (_LOGIN_ACK, _LOGOUT_ACK) or m.get("errno") != 0:
                    errors += 1
                    first_error = first_error or repr(m)[:200]
                    if mid not in (_LOGIN_ACK, _LOGOUT_ACK):
                        continue
                if mid == _LOGIN_ACK:
                    total += 1
                    if warm_end <= now < end:
                        hist.record(now - sent_at[c.index])
                        logins += 1
                    c.send(logout)
                elif now < end:
                    sent_at[c.index] = now
                    c.send(login[c.index])
                else:
                    busy -= 1
            ctl.progress(total)
        if monotonic_ns() > drain_end:
            break
    pool.close()
    return {"logins": logins, "total": total, "errors": errors, "unfinished": busy,
            "first_error": first_error, "histogram": hist.to_dict()}
