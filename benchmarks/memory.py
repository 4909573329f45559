"""Memory per connection and per logged-in idle user, as deployed.

    python benchmarks/memory.py [--conns 10000,50000] [--threads 4] [--json PATH]
                                [--same-session] [--quick]

For each N of ``--conns`` a fresh ``python -m chat.server -t THREADS`` runs in
a session of its own (as deployed; see benchmarks/README.md) over a fresh
SQLite file, with the open-file limit raised for it and for this process
(both hold N sockets) and the connection limit and the login and idle
timeouts lifted.  The server's RSS (VmRSS of /proc/PID/status) is read:

1. ``warm``: after a warm-up (a few hundred connections, half logged in,
   then closed) and after N/2 users were registered over a few pipelined
   connections, so that neither the first use of each code path nor the
   rows of the user table count as per-connection memory;
2. ``connected``: after N connections, spread over several loopback source
   addresses (127.0.0.2, 127.0.0.3, ... ``PER_SOURCE`` each, so the
   ephemeral ports do not run out), each answered once (a logout while
   not logged in, which touches no store), so the server holds each one's
   session;
3. ``logged_in``: after N/2 of them logged in and stayed idle.

KiB per connection = (connected - warm) / N; KiB per login = (logged_in -
connected) / (N/2); a logged-in idle user costs the sum of the two.  Kernel
socket buffers are not in the process's RSS and are not counted.  An N
that needs more open files than RLIMIT_NOFILE allows (its hard limit can be
raised only with CAP_SYS_RESOURCE) is skipped and reported so.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if _path not in sys.path:
        sys.path.insert(0, _path)

from driver.common import rss_kib  # noqa: E402
from driver.servers import (  # noqa: E402
    ChatServerProcess,
    add_session_option,
    command_line,
    machine_info,
    write_summary,
)

from chat.protocol import MsgId, encode  # noqa: E402

PER_SOURCE = 10_000  # connections per loopback source address (28,000 ephemeral ports each)
REG_BATCH = 500  # registrations pipelined on one connection
WARMUP_CONNS = 200
FD_MARGIN = 200  # the server's own files (selectors, wakeups, the database, logs)
REPLY_TIMEOUT = 120.0
# Lifted so that N idle connections stay: the defaults close a connection
# that has not logged in after 60 s and refuse more than 20,000.
LIFTED = ["--login-timeout", "86400", "--idle-timeout", "86400"]
PASSWORD = "pw"


def raise_file_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE (soft and, if allowed, hard) to ``want``; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):  # not privileged: as far as the hard limit goes
            want = hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sources(n: int) -> list[str]:
    """Loopback source addresses for ``n`` connections: 127.0.0.2 and up."""
    return [f"127.0.0.{2 + i}" for i in range((n + PER_SOURCE - 1) // PER_SOURCE)]


def open_connections(port: int, n: int) -> list[socket.socket]:
    """``n`` blocking connections to 127.0.0.1:port from the source addresses in turn."""
    addrs = sources(n)
    socks = []
    for i in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(REPLY_TIMEOUT)
        sock.bind((addrs[i % len(addrs)], 0))
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


def read_replies(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    """``count`` newline-framed replies from ``sock``."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed a connection")
        data += chunk
    return [orjson.loads(line) for line in data.split(b"\n")[:count]]


def ask_each(socks: Iterable[socket.socket], frames: Iterable[bytes],
             expect: MsgId) -> list[dict[str, Any]]:
    """Send one frame on each socket, then read each one's reply (all sent first)."""
    socks = list(socks)
    for sock, frame in zip(socks, frames, strict=True):
        sock.sendall(frame)
    replies = [read_replies(sock, 1)[0] for sock in socks]
    bad = [r for r in replies if r.get("msgid") != expect]
    if bad:
        raise RuntimeError(f"{len(bad)} unexpected replies, the first {bad[0]!r}")
    return replies


def register(port: int, names: list[str]) -> list[int]:
    """Register ``names`` (pipelined, ``REG_BATCH`` a connection); their ids in order."""
    batches = [names[i:i + REG_BATCH] for i in range(0, len(names), REG_BATCH)]
    socks = open_connections(port, len(batches))
    try:
        for sock, batch in zip(socks, batches, strict=True):
            sock.sendall(b"".join(encode({"msgid": MsgId.REG_MSG, "name": name,
                                          "password": PASSWORD}) for name in batch))
        ids = []
        for sock, batch in zip(socks, batches, strict=True):
            for ack in read_replies(sock, len(batch)):
                if ack.get("errno") != 0:
                    raise RuntimeError(f"registration refused: {ack!r}")
                ids.append(int(ack["id"]))
        return ids
    finally:
        for sock in socks:
            sock.close()


def log_in(socks: list[socket.socket], ids: list[int]) -> None:
    acks = ask_each(socks, (encode({"msgid": MsgId.LOGIN_MSG, "id": uid, "password": PASSWORD})
                            for uid in ids), MsgId.LOGIN_MSG_ACK)
    refused = [a for a in acks if a.get("errno") != 0]
    if refused:
        raise RuntimeError(f"{len(refused)} logins refused, the first {refused[0]!r}")


def answered_once(socks: list[socket.socket]) -> None:
    """Each connection asks to log out while not logged in: one reply, no store."""
    ask_each(socks, (encode({"msgid": MsgId.LOGINOUT_MSG}) for _ in socks),
             MsgId.LOGINOUT_MSG_ACK)


def measure(n: int, threads: int, new_session: bool) -> dict[str, Any]:
    """One server, N connections, N/2 logged in; its RSS at each step."""
    half = n // 2
    extra = [*LIFTED, "--max-connections", str(n + WARMUP_CONNS + 1000)]
    with ChatServerProcess(threads, extra, new_session=new_session).start() as server:
        rss: dict[str, int] = {"start": rss_kib(server.pid)}
        warm_ids = register(server.port, [f"warm{i}" for i in range(WARMUP_CONNS // 2)])
        warm = open_connections(server.port, WARMUP_CONNS)
        answered_once(warm)
        log_in(warm[:len(warm_ids)], warm_ids)
        for sock in warm:
            sock.close()
        ids = register(server.port, [f"mem{i}" for i in range(half)])
        time.sleep(1.0)  # the warm-up connections are closed by now (no event to wait for)
        rss["warm"] = rss_kib(server.pid)
        t0 = time.monotonic()
        socks = open_connections(server.port, n)
        try:
            answered_once(socks)
            rss["connected"] = rss_kib(server.pid)
            log_in(socks[:half], ids)
            rss["logged_in"] = rss_kib(server.pid)
            seconds = time.monotonic() - t0
        finally:
            for sock in socks:
                sock.close()
    per_conn = (rss["connected"] - rss["warm"]) / n
    per_login = (rss["logged_in"] - rss["connected"]) / half if half else 0.0
    return {"conns": n, "logged_in": half, "threads": threads, "rss_kib": rss,
            "kib_per_conn": round(per_conn, 2), "kib_per_login": round(per_login, 2),
            "kib_per_logged_in_user": round(per_conn + per_login, 2),
            "source_addresses": len(sources(n)), "seconds": round(seconds, 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conns", default="10000,50000", help="comma list of N (default 10000,50000)")
    p.add_argument("--threads", type=int, default=4, help="server -t (default 4, as deployed)")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    p.add_argument("--quick", action="store_true", help="a tiny run for CI: 300 connections")
    add_session_option(p)
    args = p.parse_args(argv)
    if args.quick:
        args.conns = "300"
    args.counts = [int(c) for c in args.conns.split(",")]
    if min(args.counts) < 2:
        p.error("--conns: at least 2 connections")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_file_limit(2 * max(args.counts) + 4 * WARMUP_CONNS + 1000)
    machine = machine_info()
    rows = []
    for n in args.counts:
        if n + WARMUP_CONNS + FD_MARGIN > limit:
            why = (f"needs {n + WARMUP_CONNS + FD_MARGIN} open files in the server and here; "
                   f"RLIMIT_NOFILE is {limit} and its hard limit cannot be raised")
            print(f"{n:>7} connections: skipped, {why}", flush=True)
            rows.append({"conns": n, "skipped": why})
            continue
        row = measure(n, args.threads, not args.same_session)
        print(f"{n:>7} connections, {row['logged_in']} logged in: "
              f"{row['kib_per_conn']:.2f} KiB a connection, {row['kib_per_login']:.2f} KiB more "
              f"a login, {row['kib_per_logged_in_user']:.2f} KiB a logged-in idle user", flush=True)
        rows.append(row)
    summary = {
        "benchmark": "memory",
        "command": command_line(),
        "config": {"threads": args.threads, "servers_in_own_session": not args.same_session,
                   "file_limit": limit, "per_source": PER_SOURCE},
        "machine": machine,
        "unit": "server VmRSS in KiB; per-connection and per-login figures in KiB",
        "results": rows,
    }
    write_summary(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
