"""Storage under load: a login storm and 100,000 offline messages, SQLite vs MySQL.

Every figure goes through the real protocol: a ``python -m chat.server``
subprocess on a free port, driven by blocking ``ChatSession`` clients (one
thread each) in this process.  The server runs in a session of its own, as
deployed (``--same-session`` keeps it in this one; see benchmarks/README.md).

- login storm: U users, each on its own connection, log in and out in a loop
  for a fixed time.  A login is one authenticate (a read plus an scrypt hash
  check), mark_online (a write), the login ACK's three reads and, at logout,
  mark_offline (a write).  Figure: completed logins per second.
- offline messages: S logged-in senders send M one-to-one messages in total
  to R offline recipients (pipelined, a ``seq`` at the end of each batch to
  wait for the server), each stored as one row; then the recipients log in
  and receive them in their login ACKs.  Figures: stored messages per second
  and delivered messages per second.  The counts are checked: every message
  is delivered exactly once.

Each backend runs against a fresh database (a temp SQLite file; a throw-away
database on $CHAT_TEST_MYSQL_URL, default the local MariaDB as root, dropped
afterwards) for each ``-t``.  The scrypt cost is $CHAT_SCRYPT_LOG2N (default
here 8, a cheap hash, so the store is what is measured); the login storm is
also run once at the server's default cost 14 unless ``--quick``.

    python benchmarks/store_bench.py [--quick] [--json PATH] [--backends sqlite,mysql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from chat.protocol import MsgId  # noqa: E402
from tests.support.mysqldb import throwaway_database  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

DEFAULT_COST = 14  # chat.store.passwords.DEFAULT_LOG2N

FULL = {"users": 32, "seconds": 5.0, "messages": 100_000, "senders": 4, "recipients": 100,
        "batch": 500, "threads": (1, 4)}
QUICK = {"users": 4, "seconds": 0.5, "messages": 400, "senders": 2, "recipients": 4,
         "batch": 50, "threads": (1, 4)}


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
            yield f"sqlite:///{os.path.join(tmp, 'chat.db')}"
    else:
        with throwaway_database() as url:
            yield url


@contextlib.contextmanager
def chat_server(db: str, threads: int, cost: int, new_session: bool) -> Iterator[ServerProcess]:
    proc = ServerProcess(db, threads=threads, env={"CHAT_SCRYPT_LOG2N": str(cost)},
                         new_session=new_session)
    proc.start(timeout=60)
    try:
        yield proc
    finally:
        proc.terminate()


def register(server: ServerProcess, prefix: str, count: int) -> list[int]:
    with server.connect(timeout=60) as s:
        ids = []
        for i in range(count):
            ack = s.register(f"{prefix}{i}", "pw")
            assert ack["errno"] == 0, ack
            ids.append(ack["id"])
    return ids


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(0..count-1) in threads started together; return their results."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# ----------------------------------------------------------------- login storm
def login_storm(server: ServerProcess, users: int, seconds: float) -> dict[str, Any]:
    ids = register(server, "storm", users)
    sessions = [server.connect(timeout=60) for _ in ids]

    def storm(i: int) -> int:
        s, uid, done = sessions[i], ids[i], 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ack = s.login(uid, "pw")
            assert ack["errno"] == 0, ack
            assert s.logout()["errno"] == 0
            done += 1
        return done

    t0 = time.perf_counter()
    counts = in_threads(users, storm)
    elapsed = time.perf_counter() - t0
    for s in sessions:
        s.close()
    return {"users": users, "logins": sum(counts), "seconds": round(elapsed, 2),
            "logins_per_s": round(sum(counts) / elapsed, 1)}


# ------------------------------------------------------------ offline messages
def offline_messages(server: ServerProcess, messages: int, senders: int, recipients: int,
                     batch: int) -> dict[str, Any]:
    to = register(server, "rcpt", recipients)
    sender_ids = register(server, "sender", senders)
    sessions = []
    for uid in sender_ids:
        s = server.connect(timeout=120)
        assert s.login(uid, "pw")["errno"] == 0
        sessions.append(s)
    per_sender = messages // senders

    def send(i: int) -> int:
        s, sent = sessions[i], 0
        while sent < per_sender:
            n = min(batch, per_sender - sent)
            frames = [orjson.dumps({"msgid": MsgId.ONE_CHAT_MSG, "to": to[(sent + k) % len(to)],
                                    "msg": f"s{i} m{sent + k}", "time": "2026-01-01 00:00:00"})
                      for k in range(n - 1)]
            s.send_raw(b"\n".join(frames) + b"\n" if frames else b"")
            ack = s.chat(to[(sent + n - 1) % len(to)], f"s{i} m{sent + n - 1}", seq=sent)
            assert ack is not None and ack.get("state") == "stored", ack
            sent += n
        errors = [m for m in s.pushed if m.get("msgid") == MsgId.ERROR_MSG]
        assert not errors, errors[:3]
        return sent

    t0 = time.perf_counter()
    stored = sum(in_threads(senders, send))
    store_s = time.perf_counter() - t0
    for s in sessions:
        s.close()

    readers = min(senders, recipients)

    def deliver(i: int) -> int:
        got = 0
        for uid in to[i::readers]:
            with server.connect(timeout=120) as s:
                ack = s.login(uid, "pw")
                assert ack["errno"] == 0, ack
                got += len(ack["offlinemsg"])
        return got

    t0 = time.perf_counter()
    delivered = sum(in_threads(readers, deliver))
    deliver_s = time.perf_counter() - t0
    assert delivered == stored == senders * per_sender, (delivered, stored)
    return {"messages": stored, "senders": senders, "recipients": recipients,
            "store_seconds": round(store_s, 2), "store_per_s": round(stored / store_s, 1),
            "deliver_seconds": round(deliver_s, 2),
            "deliver_per_s": round(delivered / deliver_s, 1)}


# ----------------------------------------------------------------------- main
def machine() -> dict[str, Any]:
    u = os.uname()
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "uname": f"{u.sysname} {u.release} {u.machine}",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def run(backends: list[str], p: dict[str, Any], cost: int, default_cost: bool,
        new_session: bool = True) -> dict[str, Any]:
    rows = []
    for backend in backends:
        for threads in p["threads"]:
            with database(backend) as db, chat_server(db, threads, cost, new_session) as server:
                row: dict[str, Any] = {"backend": backend, "threads": threads,
                                       "scrypt_log2n": cost}
                row["login"] = login_storm(server, p["users"], p["seconds"])
                row["offline"] = offline_messages(server, p["messages"], p["senders"],
                                                  p["recipients"], p["batch"])
            rows.append(row)
            print(format_row(row), flush=True)
    extra = []
    if default_cost:
        for threads in p["threads"]:
            with database("sqlite") as db, chat_server(db, threads, DEFAULT_COST,
                                                                new_session) as server:
                row = {"backend": "sqlite", "threads": threads, "scrypt_log2n": DEFAULT_COST,
                       "login": login_storm(server, p["users"], p["seconds"])}
            extra.append(row)
            print(format_row(row), flush=True)
    return {"machine": machine(), "params": {k: v for k, v in p.items()},
            "servers_in_own_session": new_session,
            "rows": rows, "default_cost_logins": extra}


def format_row(row: dict[str, Any]) -> str:
    text = (f"{row['backend']:6} -t {row['threads']}  log2n {row['scrypt_log2n']:2}  "
            f"logins/s {row['login']['logins_per_s']:8,.0f}")
    if "offline" in row:
        o = row["offline"]
        text += (f"  stored/s {o['store_per_s']:8,.0f} ({o['messages']} in {o['store_seconds']} s)"
                 f"  delivered/s {o['deliver_per_s']:9,.0f}")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny run for CI (seconds)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    ap.add_argument("--backends", default="sqlite,mysql", help="comma-separated")
    ap.add_argument("--messages", type=int, help="offline messages in total (default 100000)")
    ap.add_argument("--same-session", action="store_true",
                    help="start the servers in this process's session instead of one of "
                         "their own (as deployed); for comparison")
    args = ap.parse_args()
    params = dict(QUICK if args.quick else FULL)
    if args.messages:
        params["messages"] = args.messages
    cost = int(os.environ.get("CHAT_SCRYPT_LOG2N", "8"))
    summary = run(args.backends.split(","), params, cost, default_cost=not args.quick,
                  new_session=not args.same_session)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
