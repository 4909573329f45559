"""The chat server's own Python per one-to-one message, without the kernel's part.

A ping-pong run measures the server's whole CPU per message, of which the
kernel's TCP (one ``recv`` and one ``send`` per message) is about half and
moves with the machine's load.  This measures the other half alone, steadily
enough to compare one change to the code:

1. a real ``ChatServer`` (``-t 0``: everything on one loop, in this thread)
   on a fresh SQLite file, and ``--pairs`` pairs of users registered and
   logged in over loopback, as a client would;
2. then each sender's server-side socket is swapped for a stand-in whose
   ``recv_into`` reads one 64-character chat frame and whose ``send`` takes
   everything, and so is each recipient's;
3. a round reads every sender once (``handle_read``: frame, checks, message
   id, routing, the recipient's outbox) and runs the loop's before-poll
   writes (the flush, the write-complete confirmation), as one loop round does.

The figure is this thread's CPU time (``time.thread_time``) per message, the
lowest of ``--reps`` repetitions: the least disturbed by whatever else the
machine runs.  ``--builds`` runs it for other checkouts too (each one's
``chat`` and ``reactor`` packages, this file's harness), one after the
other, for a before/after in one run:

    .venv/bin/python benchmarks/hotpath.py [--pairs 100] [--rounds 2000] [--reps 50]
        [--builds .,../old-checkout] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Benchmark settings: cheap password hashes, no request limits (as the other benchmarks).
ENV = {"CHAT_SCRYPT_LOG2N": "8", "CHAT_RATE": "1e9", "CHAT_BURST": "1000000000",
       "CHAT_REGISTER_RATE": "1e9", "CHAT_REGISTER_BURST": "1000000000",
       "CHAT_HASH_QUEUE": "1000000"}
FRAME_TIME = "2026-11-29 12:00:00"


class StandInSocket:
    """What a connection's socket does during a round, minus the kernel."""

    __slots__ = ("frame", "lines")

    def __init__(self, frame: bytes = b"") -> None:
        self.frame = frame
        self.lines = 0  # frames written to it: each message must arrive

    def recv(self, _size: int) -> bytes:  # what builds before recv_into called
        return self.frame

    def recv_into(self, buffer: memoryview) -> int:
        n = len(self.frame)
        buffer[:n] = self.frame
        return n

    def send(self, data: bytes) -> int:
        self.lines += data.count(b"\n")
        return len(data)


def _lines(buffers: dict[int, bytes], i: int) -> list[dict[str, Any]]:
    import orjson

    *whole, buffers[i] = buffers[i].split(b"\n")
    return [orjson.loads(line) for line in whole if line.strip()]


def measure(pairs: int, rounds: int, reps: int) -> dict[str, Any]:
    """Run in the build to measure (its packages first on sys.path): one figure."""
    import orjson

    from chat.server import ChatServer, parse_args
    from reactor import EventLoop

    os.environ.update(ENV)
    tmp = tempfile.mkdtemp(prefix="chat-hotpath-")
    args = parse_args(["-H", "127.0.0.1", "-p", "0", "-t", "0", "--db",
                       f"sqlite:///{os.path.join(tmp, 'chat.db')}", "--log-level", "WARNING"])
    loop = EventLoop()
    server = ChatServer(loop, args)
    server.start()
    clients = []
    for i in range(2 * pairs):
        clients.append(socket.create_connection(server.tcp.address[:2]))
        if i % 64 == 63:
            loop._run_once()  # accept them before the listen backlog fills
    for sock in clients:
        sock.setblocking(False)
    buffers = dict.fromkeys(range(len(clients)), b"")

    def exchange(requests: list[dict[str, Any]], reply_msgid: int) -> list[dict[str, Any]]:
        """Send each client its request; run the loop until each has its reply."""
        for sock, request in zip(clients, requests, strict=True):
            sock.sendall(orjson.dumps(request) + b"\n")
        replies: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 60
        while len(replies) < len(clients):
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer every client in 60 s")
            loop._run_once()
            for i, sock in enumerate(clients):
                try:
                    buffers[i] += sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                for msg in _lines(buffers, i):
                    if msg.get("msgid") == reply_msgid:
                        replies[i] = msg
        return [replies[i] for i in range(len(clients))]

    names = [f"hot{i}" for i in range(len(clients))]
    ids = [r["id"] for r in exchange(
        [{"msgid": 3, "name": n, "password": "pw"} for n in names], 4)]
    exchange([{"msgid": 1, "id": i, "password": "pw"} for i in ids], 2)
    by_user = {conn.context.user_id: conn for conn in server.tcp.connections()}
    senders, recipients = [], []
    for p in range(pairs):
        a, b = 2 * p, 2 * p + 1
        frame = orjson.dumps({"msgid": 5, "id": ids[a], "name": names[a], "to": ids[b],
                              "time": FRAME_TIME, "msg": "x" * 64}) + b"\n"
        sender, recipient = by_user[ids[a]], by_user[ids[b]]
        sender._sock = StandInSocket(frame)
        recipient._sock = StandInSocket()
        senders.append(sender)
        recipients.append(recipient._sock)

    def one_round() -> None:
        for conn in senders:
            conn.handle_read()
        loop._do_before_poll()

    per_rep = max(1, rounds // reps)
    for _ in range(per_rep):  # warm-up
        one_round()
    samples = []
    for _ in range(reps):
        started = time.thread_time()
        for _ in range(per_rep):
            one_round()
        samples.append((time.thread_time() - started) / (per_rep * pairs) * 1e6)
    samples.sort()
    delivered = sum(r.lines for r in recipients)
    if delivered != per_rep * pairs * (reps + 1):
        raise SystemExit(f"{delivered} messages delivered of {per_rep * pairs * (reps + 1)}")
    return {"us_per_msg": round(samples[0], 3), "median_us": round(samples[len(samples) // 2], 3),
            "messages": per_rep * pairs * reps}


def run_build(build: str, args: argparse.Namespace) -> dict[str, Any]:
    """``measure`` in a child whose ``chat`` and ``reactor`` come from ``build``."""
    path = os.path.abspath(build)
    code = (f"import sys, json; sys.path[:0] = [{path!r}, {HERE!r}]; import hotpath; "
            f"print(json.dumps(hotpath.measure({args.pairs}, {args.rounds}, {args.reps})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=path, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{build}: {proc.stderr.strip()[-2000:]}")
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    row["build"] = os.path.relpath(path, ROOT)  # as a reader's checkout would name it
    row["commit"] = _commit(path)
    return row


def _commit(path: str) -> str:
    proc = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--", "chat", "reactor"],
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+changes" if dirty else "") if proc.returncode == 0 else "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=100, help="user pairs (default 100)")
    p.add_argument("--rounds", type=int, default=2000, help="rounds in all (default 2000)")
    p.add_argument("--reps", type=int, default=50,
                   help="repetitions; the lowest is reported (default 50)")
    p.add_argument("--builds", default=".",
                   help="comma list of checkouts to measure, one after the other (default .)")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny run for CI")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.rounds, args.reps = 4, 40, 4
    if min(args.pairs, args.rounds, args.reps) < 1:
        p.error("--pairs, --rounds and --reps must be positive")
    sys.path.insert(0, HERE)
    from driver.servers import command_line, machine_info, write_summary

    rows = []
    for build in args.builds.split(","):
        row = run_build(build, args)
        rows.append(row)
        print(f"{build} ({row['commit']}): {row['us_per_msg']:.2f} us of Python per message "
              f"(median {row['median_us']:.2f})", file=sys.stderr)
    print("| build | commit | Python per message | median |")
    print("|---|---|---:|---:|")
    for row in rows:
        print(f"| {row['build']} | {row['commit']} | {row['us_per_msg']:.2f} us | "
              f"{row['median_us']:.2f} us |")
    write_summary(args.json, {
        "benchmark": "hot path", "command": command_line(),
        "config": {"pairs": args.pairs, "rounds": args.rounds, "reps": args.reps},
        "machine": machine_info(), "unit": "CPU us per message, lowest rep", "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
