"""The soak's record of what was sent and received, and its verdict (docs/soak.md).

`Ledger` is filled by the soak's user threads: every chat message sent (with
the outcome of its ``CHAT_MSG_ACK`` and the ``mid`` it carried), every chat
frame read (with its ``mid``, the login it arrived on and whether the client
had seen that ``mid`` before), every login span and every fault.  `check`
turns it into the report.

The recipient's *application* sees each ``mid`` once: the client drops a
repeat by ``mid``, as a real acknowledging client does.  So the verdict looks
at two streams per recipient: the raw frames (repeats allowed only across
logins, always with the same ``mid``) and the application's (every message
acknowledged to its sender, once, in order per sender).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

IN_FLIGHT_KILL_WINDOW = 3.0  # a connection closed this long after a kill died with it
# Redis still counts a killed server's subscriptions until it reads their end, a
# moment after the kernel closed them (seen: a PUBLISH 4 ms after the recipient's
# client saw the kill still returned 1): a message sent then went to the dead server.
KILL_NOTICED = 0.5
REDIS_SETTLE = 5.0  # after a Redis restart: reconnect backoff, heartbeat, margin
STORAGE_SETTLE = 5.0  # after MySQL's restart: a missed logout's retry (2 s), margin
LOGIN_PATIENCE = 60.0  # a login still refused after this long is reported as stuck


@dataclass
class Sent:
    sender: int
    counter: int
    kind: str  # "one" or "group"
    recipients: tuple[int, ...]
    t_send: float
    t_reply: float | None = None
    outcome: str = "pending"  # acked, refused, unknown
    state: str | None = None  # the ack's "state"
    errno: int | None = None
    mid: int | None = None  # the ack's "mid"


@dataclass(frozen=True, slots=True)
class Received:
    sender: int
    counter: int
    t: float
    how: str  # "live", "stored" (a frame marked "stored": true) or "offline" (in a login ack)
    mid: int | None
    login: int  # the recipient's login number: repeats are allowed only across logins
    repeat: bool  # the client had read this mid before, and dropped it


@dataclass
class SessionSpan:
    start: float
    end: float | None = None
    reason: str = ""  # logout, client-close, client-reset, server-closed, reply-timeout


@dataclass
class Ledger:
    t0: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[tuple[int, int], Sent] = field(default_factory=dict)
    # recipient -> what it read, in the order it read it
    received: dict[int, list[Received]] = field(default_factory=lambda: defaultdict(list))
    sessions: dict[int, list[SessionSpan]] = field(default_factory=lambda: defaultdict(list))
    faults: list[dict[str, Any]] = field(default_factory=list)
    client_faults: Counter[str] = field(default_factory=Counter)
    foreign: int = 0  # chat frames whose text is not one of ours
    acks_sent: int = 0  # DELIVERY_ACK frames
    receipts: int = 0  # RECEIPT frames read by senders
    login_waits: list[float] = field(default_factory=list)
    login_retries: Counter[int] = field(default_factory=Counter)  # errno -> retries
    stuck_logins: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, kind: str, **info: Any) -> None:
        with self.lock:
            self.faults.append({"t": round(self.now(), 2), "kind": kind, **info})


def text_of(sender: int, counter: int) -> str:
    return f"soak {sender} {counter} {uuid.uuid4().hex[:8]}"


def parse_text(text: str) -> tuple[int, int] | None:
    parts = text.split()
    if len(parts) != 4 or parts[0] != "soak":
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


# -- the verdict ----------------------------------------------------------------------


def check(ledger: Ledger) -> dict[str, Any]:
    """The report: deliveries, losses, repeats, mids and order (see docs/soak.md)."""
    app = application_streams(ledger)
    got = {(r, item.sender, item.counter) for r, items in app.items() for item in items}
    delivery = _deliveries(ledger, got)
    repeats = _repeats(ledger)
    mids = _mid_problems(ledger)
    order_all = _order_violations(ledger, app)
    outages = _redis_outages(ledger)
    order_outage = [o for o in order_all
                    if any(a <= o["late_sent"][0] <= b for a, b in outages)]
    kept = _storage_outages(ledger)
    order_kept = [o for o in order_all if o not in order_outage and o["how"] != "live"
                  and any(a <= o["late_sent"][0] <= b for a, b in kept)]
    order = [o for o in order_all if o not in order_outage and o not in order_kept]
    waits = sorted(ledger.login_waits)
    sent = ledger.sent.values()
    everything: list[Received] = [i for items in ledger.received.values() for i in items]
    return {
        "ok": not (delivery["lost"] or repeats["within"] or mids["mismatch"]
                   or mids["not_increasing"] or order),
        "sent": len(ledger.sent),
        "outcomes": dict(Counter(s.outcome for s in sent)),
        "ack_states": {str(k): v for k, v in Counter(
            s.state for s in sent if s.outcome == "acked").items()},
        "expected_deliveries": delivery["expected"],
        "delivered": delivery["delivered"],
        "lost": len(delivery["lost"]),
        "in_flight_at_kill": len(delivery["in_flight"]),
        "duplicated_within_login": len(repeats["within"]),
        "repeats_across_logins": repeats["across"],
        "mid_mismatches": len(mids["mismatch"]),
        "mids_not_increasing": len(mids["not_increasing"]),
        "order_violations": len(order),
        "order_violations_redis_outage": len(order_outage),
        "order_violations_storage_outage": len(order_kept),
        "unknown_deliveries": delivery["unknown"],
        "refused_by_errno": dict(Counter(str(s.errno) for s in sent if s.outcome == "refused")),
        "received_frames": dict(Counter(i.how for i in everything)),
        "client_faults": dict(ledger.client_faults),
        "delivery_acks_sent": ledger.acks_sent,
        "receipts": ledger.receipts,
        "foreign_frames": ledger.foreign,
        "logins": len(waits),
        "login_retries_by_errno": {str(k): v for k, v in ledger.login_retries.items()},
        "login_wait_max_s": round(waits[-1], 2) if waits else 0.0,
        "stuck_logins": ledger.stuck_logins,
        "examples": {"lost": delivery["lost"][:10], "in_flight_at_kill": delivery["in_flight"][:10],
                     "duplicated_within_login": repeats["within"][:10],
                     "mid_mismatch": mids["mismatch"][:10],
                     "mid_not_increasing": mids["not_increasing"][:10],
                     "order": order[:10], "order_redis_outage": order_outage[:10],
                     "order_storage_outage": order_kept[:10]},
    }


def application_streams(ledger: Ledger) -> dict[int, list[Received]]:
    """Per recipient, what its application saw: each mid once, in the order read."""
    return {r: [i for i in items if not i.repeat] for r, items in ledger.received.items()}


def _deliveries(ledger: Ledger, got: set[tuple[int, int, int]]) -> dict[str, Any]:
    kills = [f["t"] for f in ledger.faults if f["kind"] == "kill-server"]
    expected = delivered = 0
    lost: list[dict[str, Any]] = []
    in_flight: list[dict[str, Any]] = []
    unknown: Counter[str] = Counter()
    for key, s in ledger.sent.items():
        for r in s.recipients:
            arrived = (r, *key) in got
            if s.outcome == "unknown":
                unknown["delivered" if arrived else "not_delivered"] += 1
            if s.outcome != "acked":
                continue
            expected += 1
            if arrived:
                delivered += 1
                continue
            entry = {"sender": s.sender, "counter": s.counter, "recipient": r, "kind": s.kind,
                     "state": s.state, "mid": s.mid, "t_send": round(s.t_send, 3),
                     "t_ack": round(s.t_reply or 0, 3)}
            dead = _killed_span(ledger, r, s, kills)
            if dead is not None:
                entry["recipient_connection_closed"] = round(dead.end or 0, 3)
                in_flight.append(entry)
            else:
                entry["recipient_sessions"] = [
                    (round(x.start, 2), x.end and round(x.end, 2), x.reason)
                    for x in ledger.sessions[r]]
                lost.append(entry)
    return {"expected": expected, "delivered": delivered, "lost": lost,
            "in_flight": in_flight, "unknown": dict(unknown)}


def _killed_span(ledger: Ledger, recipient: int, s: Sent,
                 kills: list[float]) -> SessionSpan | None:
    """The recipient's login that a server kill -9 ended with this message in its memory.

    Only a live message can be there: one stored (``state`` "stored") is in
    the database whatever happens to a server.  A live one was handed, between
    the request and its ack, to the recipient's outbox on its server (or to
    Redis for that server) and kept there, unacknowledged, until the kill.
    """
    if s.kind == "one" and s.state == "stored":
        return None
    t_ack = s.t_reply if s.t_reply is not None else s.t_send
    # Sent while Redis was down, it may have been stored and handed out only
    # when the recipient's server flushed, as late as the outage's end.
    outage_end = next((b for a, b in _redis_outages(ledger) if a <= s.t_send <= b), None)
    for span in ledger.sessions[recipient]:
        if span.end is None or span.reason != "server-closed":
            continue
        kill = next((k for k in kills if 0 <= span.end - k <= IN_FLIGHT_KILL_WINDOW), None)
        if kill is None:
            continue
        written = t_ack if outage_end is None else max(t_ack, min(span.end, outage_end))
        if not (span.start <= written and s.t_send <= max(span.end, kill + KILL_NOTICED)):
            continue
        if span.end - written > IN_FLIGHT_KILL_WINDOW:
            continue
        return span
    return None


def _repeats(ledger: Ledger) -> dict[str, Any]:
    """A mid read twice on one login is a duplicate; across logins it is a redelivery."""
    within: list[dict[str, Any]] = []
    across = 0
    for recipient, items in ledger.received.items():
        logins_of: dict[tuple[int, int], list[int]] = defaultdict(list)
        for item in items:
            logins = logins_of[(item.sender, item.counter)]
            if item.login in logins:
                within.append({"recipient": recipient, "sender": item.sender,
                               "counter": item.counter, "mid": item.mid, "login": item.login,
                               "t": round(item.t, 3)})
            elif logins:
                across += 1
            logins.append(item.login)
    return {"within": within, "across": across}


def _mid_problems(ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
    """One mid per message everywhere (ack and every copy); larger for a later message."""
    mids_of: dict[tuple[int, int], set[int | None]] = defaultdict(set)
    for key, s in ledger.sent.items():
        if s.outcome == "acked":
            mids_of[key].add(s.mid)
    for items in ledger.received.values():
        for item in items:
            mids_of[(item.sender, item.counter)].add(item.mid)
    mismatch = [{"sender": k[0], "counter": k[1], "mids": sorted(m, key=lambda x: x or 0)}
                for k, m in mids_of.items() if len(m) > 1 or None in m]
    not_increasing = []
    last: dict[int, tuple[int, int]] = {}
    for key in sorted(k for k, s in ledger.sent.items() if s.outcome == "acked" and s.mid):
        sender, counter = key
        mid = ledger.sent[key].mid
        assert mid is not None
        if sender in last and mid <= last[sender][1]:
            not_increasing.append({"sender": sender, "counter": counter, "mid": mid,
                                   "after_counter": last[sender][0],
                                   "after_mid": last[sender][1]})
        last[sender] = (counter, mid)
    return {"mismatch": mismatch, "not_increasing": not_increasing}


def _redis_outages(ledger: Ledger) -> list[tuple[float, float]]:
    """Windows whose stored messages may be flushed after newer live ones.

    From the kill until the restarted Redis is surely seen by every server
    (subscriber backoff at most 2 s, heartbeat 1.5 s) plus a margin.
    """
    return _windows(ledger, "kill-redis", "redis-restarted", REDIS_SETTLE)


def _storage_outages(ledger: Ledger) -> list[tuple[float, float]]:
    """Windows in which a message for a user who just left one server may be
    kept in that server's memory (the database refused it) and stored after a
    newer one that another server stored once the database was back.

    From the stop until the retried logouts are surely through, plus a margin.
    """
    return _windows(ledger, "stop-mysql", "mysql-restarted", STORAGE_SETTLE)


def _windows(ledger: Ledger, begins: str, ends: str, settle: float) -> list[tuple[float, float]]:
    """From each fault ``begins`` to the next ``ends``, plus ``settle`` seconds."""
    out, start = [], None
    for f in ledger.faults:
        if f["kind"] == begins:
            start = f["t"]
        elif f["kind"] == ends and start is not None:
            out.append((start, f["t"] + settle))
            start = None
    return out


def _sessions_near(ledger: Ledger, user: int, t: float) -> list[tuple[Any, ...]]:
    return [(round(x.start, 2), x.end and round(x.end, 2), x.reason)
            for x in ledger.sessions[user] if x.start - 5 <= t <= (x.end or 1e9) + 5]


def _order_violations(ledger: Ledger, app: dict[int, list[Received]]) -> list[dict[str, Any]]:
    """Per recipient and sender, the application must see counters increase."""
    acked = {k for k, s in ledger.sent.items() if s.outcome == "acked"}
    out = []
    for recipient, items in app.items():
        last: dict[int, int] = {}
        for item in items:
            sender, counter = item.sender, item.counter
            if (sender, counter) not in acked:
                continue
            if counter < last.get(sender, 0):
                late, early = ledger.sent[(sender, counter)], ledger.sent[(sender, last[sender])]
                out.append({
                    "sender": sender, "recipient": recipient, "counter": counter,
                    "after": last[sender], "t": round(item.t, 3), "how": item.how,
                    "late_sent": (round(late.t_send, 3), late.kind, late.state),
                    "early_sent": (round(early.t_send, 3), early.kind, early.state),
                    "recipient_sessions": _sessions_near(ledger, recipient, late.t_send),
                    "sender_sessions": _sessions_near(ledger, sender, late.t_send)})
            last[sender] = max(last.get(sender, 0), counter)
    return out


# -- the report as text ---------------------------------------------------------------


def log_summary(logs: list[str]) -> dict[str, int]:
    """How often the servers logged the lines that matter for delivery."""
    patterns = {
        "message_lost_storage_unavailable": "lost, storage unavailable",
        "offline_not_deleted_yet": "not deleted yet",
        "still_marked_online": "still marked online",
        "subscription_not_confirmed": "not confirmed in time",
        "bug": "bug while",
        "traceback": "Traceback",
    }
    text = "".join(logs)
    return {name: text.count(p) for name, p in patterns.items()}


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"soak: {r['config']['seconds']} s, {r['config']['users']} users, "
        f"{'nginx' if r['config']['nginx'] else 'direct'}; faults: "
        + ", ".join(f"{f['kind']}@{f['t']}" for f in r["faults"]),
        f"client faults {r['client_faults']}; delivery acks sent {r['delivery_acks_sent']}, "
        f"receipts read {r['receipts']}",
        f"messages sent {r['sent']}: {r['outcomes']}; ack states {r['ack_states']}; "
        f"refused by errno {r['refused_by_errno']}",
        f"acknowledged deliveries expected {r['expected_deliveries']}: reached the application "
        f"{r['delivered']} (frames read {r['received_frames']})",
        f"  lost {r['lost']}, in flight at a kill -9 {r['in_flight_at_kill']}, duplicated "
        f"within a login {r['duplicated_within_login']}, repeats across logins "
        f"{r['repeats_across_logins']}, mid mismatches {r['mid_mismatches']}, mids not "
        f"increasing {r['mids_not_increasing']}",
        f"  order violations {r['order_violations']} (+ {r['order_violations_redis_outage']} "
        "of messages stored during a Redis outage, + "
        f"{r['order_violations_storage_outage']} kept in memory during a database outage, "
        "known limits)",
        f"  sent without an ack (sender's connection died): per recipient "
        f"{r['unknown_deliveries']}",
        f"logins {r['logins']}, retries by errno {r['login_retries_by_errno']}, longest "
        f"login wait {r['login_wait_max_s']} s, stuck (> {LOGIN_PATIENCE:g} s) "
        f"{r['stuck_logins']}",
        f"offline rows left in the database: {r['offline_rows_left']}; server log: "
        f"{r['server_log_warnings']}",
    ]
    for name, items in r["examples"].items():
        for item in items[:3]:
            lines.append(f"  e.g. {name}: {item}")
    if r["user_errors"]:
        lines.append(f"client errors: {r['user_errors'][:3]}")
    lines.append("verdict: " + ("OK" if r["ok"] and not r["user_errors"] else "FAILED"))
    return "\n".join(lines)
