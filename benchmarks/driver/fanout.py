"""Group fan-out: one sender per group, every other member counts deliveries.

The parent makes the groups first (`create_groups`: each sender registers and
creates its group, then disconnects).  Each worker process then logs in its
share of every group's members and joins them to their group; worker 0 also
logs the senders back in.  After the common start each sender keeps a window
of W ``GROUP_CHAT_MSG``s in flight, each carrying ``seq``: the server acks a
group message once it has handed it to every member's connection, which
frees the slot.  Members record the one-way latency from the send instant in
the text.  The figure is deliveries per second at the members.

After the window closes the senders stop; every worker keeps reading until
its members have been quiet for ``quiet`` seconds (or a deadline).  Senders
report how many messages they sent per group and members how many they got,
so the parent can check nothing was lost: sent x (members - 1) = received.
"""

from __future__ import annotations

import time
from typing import Any

from chat.protocol import MsgId, encode

from .common import STAMP_LEN, logged_in, measuring_window, raise_nofile
from .histogram import Histogram
from .users import UserConn, UserPool, readable
from .workers import WorkerControl

MSG_LEN = 64
_GROUP_CHAT, _ACK = 9, 16


def create_groups(host: str, port: int, count: int, prefix: str) -> list[dict[str, Any]]:
    """Register ``count`` senders, each creating one group; their ids and group ids."""
    pool = UserPool(host, port, count, prefix + "s")
    pool.setup()
    acks = pool.request_all(
        lambda c: encode({"msgid": MsgId.CREATE_GROUP_MSG, "groupname": f"{c.name}g",
                          "groupdesc": "fan-out benchmark"}),
        MsgId.CREATE_GROUP_MSG_ACK)
    out = [{"id": c.user_id, "name": c.name, "password": c.password, "group": a["groupid"]}
           for c, a in zip(pool.conns, acks, strict=True)]
    pool.close()
    return out


def _members(cfg: dict[str, Any]) -> tuple[UserPool, dict[UserConn, int]]:
    """This worker's members of every group, logged in and joined."""
    groups, share = cfg["groups"], cfg["members"]
    pool = logged_in(cfg, share * len(groups), "m", setup_timeout=300.0)
    group_of = {c: groups[c.index // share]["group"] for c in pool.conns}
    pool.request_all(lambda c: encode({"msgid": MsgId.ADD_GROUP_MSG, "groupid": group_of[c]}),
                     MsgId.ADD_GROUP_MSG_ACK, timeout=cfg.get("setup_timeout", 300.0))
    return pool, group_of


def _senders(cfg: dict[str, Any], pool: UserPool) -> dict[UserConn, int]:
    """Worker 0: the senders, logged back in on the members' selector."""
    if not cfg["senders"]:
        return {}
    groups = cfg["groups"]
    senders = UserPool(cfg["host"], cfg["port"], len(groups), "unused", sel=pool.sel)
    senders.connect()
    for c, g in zip(senders.conns, groups, strict=True):
        c.user_id, c.name, c.password = g["id"], g["name"], g["password"]
    senders.request_all(
        lambda c: encode({"msgid": MsgId.LOGIN_MSG, "id": c.user_id, "password": c.password}),
        MsgId.LOGIN_MSG_ACK)
    return {c: g["group"] for c, g in zip(senders.conns, groups, strict=True)}


def fanout_worker(cfg: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    raise_nofile()
    pool, group_of = _members(cfg)
    senders = _senders(cfg, pool)
    window = cfg["window"]
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    heads = {s: f'{{"msgid":9,"groupid":{g},"time":"{when}","msg":"'.encode()
             for s, g in senders.items()}
    tail = b"x" * (MSG_LEN - STAMP_LEN) + b'","seq":1}\n'
    inflight = dict.fromkeys(senders, 0)
    sent = dict.fromkeys(senders, 0)
    got: dict[int, int] = {}  # group id -> messages received by this worker's members

    quiet = int(cfg.get("quiet", 1.0) * 1e9)
    warm_end, end, hard_end = measuring_window(cfg, ctl, drain=20.0)

    hist, monotonic_ns = Histogram(), time.monotonic_ns
    record = hist.record
    received = delivered = errors = 0
    first_error = ""

    def top_up(s: UserConn, now: int) -> None:
        room = window - inflight[s]
        if room > 0:
            s.send((heads[s] + b"%020d" % now + tail) * room)
            inflight[s] = window
            sent[s] += room

    now = last_rx = monotonic_ns()
    for s in senders:
        top_up(s, now)
    sel = pool.sel
    while True:
        ready = []
        for c in readable(sel, 0.1):
            items = c.receive()
            now = last_rx = monotonic_ns()
            for m in items:
                mid = m.get("msgid") if type(m) is dict else None
                if mid == _GROUP_CHAT and c in group_of:
                    received += 1
                    gid = m["groupid"]
                    got[gid] = got.get(gid, 0) + 1
                    if warm_end <= now < end:
                        record(now - int(m["msg"][:STAMP_LEN]))
                        delivered += 1
                elif mid == _ACK and c in senders:
                    inflight[c] -= 1
                    ready.append(c)
                else:
                    errors += 1
                    first_error = first_error or repr(m)[:200]
        now = monotonic_ns()
        if now < end:
            for s in ready:
                top_up(s, now)
            ctl.progress(received)
        elif (not any(inflight.values()) and now - last_rx > quiet) or now > hard_end:
            break
    for s in senders:
        s.sock.close()
    pool.close()
    return {"delivered": delivered, "received": received, "errors": errors,
            "first_error": first_error, "histogram": hist.to_dict(),
            "sent": {str(senders[s]): n for s, n in sent.items()},
            "got": {str(g): n for g, n in got.items()},
            "unacked": sum(inflight.values())}
