"""Flood: every connection keeps a window of W one-to-one messages in flight.

P pairs of users per process; both users of a pair send to each other.  A
message leaves the sender's window when it is delivered to the peer (the
peer is in the same process, so the worker sees both ends), or, with
``seq``, when the server's ``CHAT_MSG_ACK`` for it comes back to the sender
(deliveries are still counted and timed at the peer).  After each batch of
events every sender with room tops its window up with one ``send`` of as
many frames as fit, so the server sees real pipelining, not ping-pong.

Each message carries its send instant; the peer records the one-way latency.
After the window closes the senders stop and the worker drains until every
message sent has arrived (or a deadline); what never arrived is ``lost``.
"""

from __future__ import annotations

import time
from typing import Any

from .common import STAMP_LEN, logged_in, measuring_window, raise_nofile
from .histogram import Histogram
from .users import UserConn, pair_up, readable
from .workers import WorkerControl

MSG_LEN = 64
_ONE_CHAT, _ACK = 5, 16


def flood_worker(cfg: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    raise_nofile()
    pool = logged_in(cfg, 2 * cfg["pairs"])
    conns = pool.conns
    pair_up(conns)
    window, by_ack = cfg["window"], bool(cfg.get("seq"))
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    # "id" too, though the server fills it in: the reference relay forwards frames as they are.
    heads = [(f'{{"msgid":5,"id":{c.user_id},"to":{c.peer.user_id},"time":"{when}",'
              f'"msg":"').encode() for c in conns if c.peer is not None]
    tail = b"x" * (MSG_LEN - STAMP_LEN) + (b'","seq":1}\n' if by_ack else b'"}\n')
    peer_id = [c.peer.user_id for c in conns if c.peer is not None]
    inflight = [0] * len(conns)

    warm_end, end, drain_end = measuring_window(cfg, ctl, drain=10.0)

    hist, monotonic_ns = Histogram(), time.monotonic_ns
    record = hist.record
    sent = received = acked = delivered = errors = 0
    first_error = ""
    cpu = [0.0, 0.0]

    def top_up(c: UserConn, now: int) -> int:
        room = window - inflight[c.index]
        if room > 0:
            frame = heads[c.index] + b"%020d" % now + tail
            c.send(frame * room)
            inflight[c.index] = window
        return max(room, 0)

    now = monotonic_ns()
    for c in conns:
        sent += top_up(c, now)
    sel = pool.sel
    while True:
        ready = set()
        for c in readable(sel, 0.2):
            items = c.receive()
            now = monotonic_ns()
            for m in items:
                mid = m.get("msgid") if type(m) is dict else None
                if mid == _ONE_CHAT and m.get("id") == peer_id[c.index]:
                    received += 1
                    if warm_end <= now < end:
                        record(now - int(m["msg"][:STAMP_LEN]))
                        delivered += 1
                    if not by_ack:
                        inflight[c.peer.index] -= 1  # type: ignore[union-attr]
                        ready.add(c.peer)
                elif mid == _ACK and by_ack:
                    acked += 1
                    inflight[c.index] -= 1
                    ready.add(c)
                else:
                    errors += 1
                    first_error = first_error or repr(m)[:200]
        now = monotonic_ns()
        if now < end:
            for c in ready:
                sent += top_up(c, now)
            ctl.progress(received)
            if not cpu[0] and now >= warm_end:
                cpu[0] = time.process_time()
        else:
            if not cpu[1]:
                cpu[1] = time.process_time()
            if (received >= sent and (not by_ack or acked >= sent)) or now > drain_end:
                break
    pool.close()
    return {"delivered": delivered, "sent": sent, "received": received,
            "lost": sent - received, "errors": errors, "first_error": first_error,
            "cpu_seconds": cpu[1] - cpu[0], "histogram": hist.to_dict()}
