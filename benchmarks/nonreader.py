"""A client that never reads while three senders send to it: the server's memory,
and the latency other users see meanwhile.

    .venv/bin/python benchmarks/nonreader.py [--seconds 30] [--pairs 20] [--rate 20]
        [--size 30000] [--json PATH] [--quick]

One server (``-t 2``, over SQLite in a temporary directory, in a session of its
own).  Throughout the run ``--pairs`` pairs of other users play ping-pong (one
64-character message in flight per pair, in a thread of this process) and
their one-way latency is recorded per phase.  Four phases of ``--seconds``:

1. ``baseline``: the ping-pong alone;
2. ``reader``: the control: three senders (each a thread of one child
   process) send ``--size``-character messages, ``--rate`` a second each,
   every one with a ``seq`` (their ``CHAT_MSG_ACK`` states are counted), to a
   user logged in with ``"ack": true`` that reads and acknowledges them all;
3. ``plain``: the same load for a user logged in without acknowledgements
   that reads its login ack and then nothing;
4. ``ack``: the same for a user logged in with ``"ack": true`` that neither
   reads nor acknowledges.

So the cost of the senders' load is ``reader`` against ``baseline``, and the
cost of a client that never reads is ``plain`` and ``ack`` against ``reader``.

Per phase: the ping-pong's rate and latency percentiles, the server's RSS
(VmRSS) at the start, at its peak (sampled every 20 ms) and at the end, what
the senders sent, and the messages left stored for the non-reader after its
connection closed.  The server's log lines about slow readers are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if _path not in sys.path:
        sys.path.insert(0, _path)

from backlog import RssSampler  # noqa: E402
from driver.common import rss_kib  # noqa: E402
from driver.histogram import Histogram  # noqa: E402
from driver.servers import (  # noqa: E402
    ChatServerProcess,
    command_line,
    machine_info,
    write_summary,
)
from driver.users import UserConn, UserPool, pair_up, readable  # noqa: E402

from chat.protocol import MsgId  # noqa: E402
from chat.store import open_store  # noqa: E402
from client.session import ChatSession  # noqa: E402

STAMP_LEN = 20  # zero-padded time.monotonic_ns() at the start of a ping-pong text
PING_TAIL = b"x" * 44 + b'"}\n'
SLOW_READER_LOG = ("slow reader", "not read, dropping")


class PingPong(threading.Thread):
    """``pairs`` pairs of users, one message in flight per pair; latency into ``hist``."""

    def __init__(self, port: int, pairs: int) -> None:
        super().__init__(daemon=True)
        self.pool = UserPool("127.0.0.1", port, 2 * pairs, "nr-pp")
        self.pool.setup()
        pair_up(self.pool.conns)
        self.hist = Histogram()  # the current phase's: swapped by the main thread
        self.delivered = 0
        self.errors = 0
        self.done = threading.Event()

    def _head(self, c: UserConn) -> bytes:
        assert c.peer is not None
        return (f'{{"msgid":5,"to":{c.peer.user_id},"time":"t","msg":"').encode()

    def run(self) -> None:
        heads = {c.index: self._head(c) for c in self.pool.conns}
        for a in self.pool.conns[0::2]:
            a.send(heads[a.index] + b"%020d" % time.monotonic_ns() + PING_TAIL)
        while not self.done.is_set():
            for c in readable(self.pool.sel, 0.2):
                for m in c.receive():
                    now = time.monotonic_ns()
                    if type(m) is not dict or m.get("msgid") != MsgId.ONE_CHAT_MSG:
                        self.errors += 1
                        continue
                    self.hist.record(now - int(m["msg"][:STAMP_LEN]))
                    self.delivered += 1
                    c.send(heads[c.index] + b"%020d" % now + PING_TAIL)
        self.pool.close()


def register(port: int, names: list[str]) -> list[int]:
    with ChatSession("127.0.0.1", port, timeout=30) as s:
        return [s.register(name, "pw")["id"] for name in names]


class Reader(threading.Thread):
    """A user logged in with acknowledged delivery that reads and acknowledges it all."""

    def __init__(self, port: int, user_id: int) -> None:
        super().__init__(daemon=True)
        self.session = ChatSession("127.0.0.1", port, timeout=30)
        assert self.session.login(user_id, "pw", ack=True)["errno"] == 0
        self.done = threading.Event()
        self.read = 0

    def run(self) -> None:
        s = self.session
        while not self.done.is_set():
            try:
                msg = s.recv(0.2)
            except TimeoutError:
                continue
            if msg.get("msgid") == MsgId.ONE_CHAT_MSG:
                self.read += 1
                if not s.inbox:  # the last of what one read brought: acknowledge it all
                    s.acknowledge(msg["mid"])
        s.close()


def never_reads(port: int, user_id: int, acking: bool) -> socket.socket:
    """Log in (reading the login ack only) and return the socket, never read again."""
    s = ChatSession("127.0.0.1", port, timeout=30)
    assert s.login(user_id, "pw", ack=acking)["errno"] == 0
    return s.sock


def run_senders(port: int, senders: list[int], to: int, args: argparse.Namespace
                ) -> subprocess.Popen[str]:
    """The three senders, in a child process of their own (their own GIL)."""
    argv = [sys.executable, os.path.abspath(__file__), "--send", str(port), str(to),
            ",".join(map(str, senders)), "--seconds", str(args.seconds), "--rate",
            str(args.rate), "--size", str(args.size)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def sender_main(args: argparse.Namespace) -> int:
    """``--send PORT TO IDS``: each sender sends to TO at ``--rate`` for ``--seconds``."""
    port, to, ids = int(args.send[0]), int(args.send[1]), args.send[2].split(",")
    states: Counter[str] = Counter()
    lock = threading.Lock()
    text = "n" * args.size

    def one(user_id: int) -> None:
        with ChatSession("127.0.0.1", port, timeout=60) as s:
            assert s.login(user_id, "pw")["errno"] == 0
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < args.seconds:
                ack = s.chat(to, text, seq=n)
                assert ack is not None  # a request with a seq has its reply
                with lock:
                    states[str(ack.get("state") or f"errno {ack.get('errno')}")] += 1
                n += 1
                time.sleep(max(0.0, start + n / args.rate - time.monotonic()))

    threads = [threading.Thread(target=one, args=(int(i),)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(dict(states)))
    return 0


def phase(name: str, server: ChatServerProcess, pp: PingPong, ids: dict[str, Any],
          args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    """One phase: the ping-pong's latency, the server's RSS, the senders' counts."""
    pp.hist = Histogram()
    delivered0, started = pp.delivered, time.monotonic()
    before = rss_kib(server.pid)
    sampler = RssSampler(server.pid)
    sampler.start()
    row: dict[str, Any] = {"phase": name}
    if name == "baseline":
        time.sleep(args.seconds)
    elif name == "reader":
        reader = Reader(server.port, ids[name])
        reader.start()
        senders = run_senders(server.port, ids["senders"], ids[name], args)
        out, _ = senders.communicate(timeout=args.seconds + 120)
        row["sender_ack_states"] = json.loads(out)
        time.sleep(1.0)  # the last messages on their way
        reader.done.set()
        reader.join(10)
        row["read"] = reader.read
    else:
        target = ids[name]
        sock = never_reads(server.port, target, name == "ack")
        senders = run_senders(server.port, ids["senders"], target, args)
        out, _ = senders.communicate(timeout=args.seconds + 120)
        row["sender_ack_states"] = json.loads(out)
        row["rss_with_nonreader_connected_mib"] = round(rss_kib(server.pid) / 1024, 1)
        sock.close()
        time.sleep(1.0)  # the server stores what the closed login had not confirmed
        row["stored_for_nonreader"] = stored_count(db_url, target)
    peak = sampler.stop()
    after = rss_kib(server.pid)
    elapsed = time.monotonic() - started
    row.update({
        "seconds": round(elapsed, 1),
        "pingpong_msgs_per_s": round((pp.delivered - delivered0) / elapsed, 1),
        "pingpong_latency_us": pp.hist.summary_us(),
        "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "rss_growth_mib": round((peak - before) / 1024, 1),
    })
    return row


def stored_count(db_url: str, user_id: int) -> int:
    store = open_store(db_url)
    try:
        return store.offline_count(user_id)
    finally:
        store.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="chat-nonreader-")
    db_url = f"sqlite:///{os.path.join(tmp, 'chat.db')}"
    machine = machine_info()
    server = ChatServerProcess(args.threads, [], db=db_url).start()
    try:
        reader, plain, acking, *senders = register(
            server.port, ["nr-reader", "nr-plain", "nr-ack", "nr-s1", "nr-s2", "nr-s3"])
        ids = {"reader": reader, "plain": plain, "ack": acking, "senders": senders}
        pp = PingPong(server.port, args.pairs)
        pp.start()
        time.sleep(args.warmup)
        rows = [phase(name, server, pp, ids, args, db_url)
                for name in ("baseline", "reader", "plain", "ack")]
        pp.done.set()
        pp.join(10)
        log = "".join(server.lines)
        slow = {p: log.count(p) for p in SLOW_READER_LOG}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"benchmark": "a client that never reads",
            "command": command_line(),
            "config": {k: getattr(args, k) for k in ("seconds", "pairs", "rate", "size",
                                                     "threads", "warmup")},
            "machine": machine, "pingpong_errors": pp.errors,
            "server_log_slow_reader_lines": slow, "results": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    p.add_argument("--pairs", type=int, default=20, help="ping-pong pairs of other users")
    p.add_argument("--rate", type=float, default=20.0, help="messages/s of each sender")
    p.add_argument("--size", type=int, default=30_000, help="characters per message")
    p.add_argument("--threads", type=int, default=2, help="the server's sub-reactors")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--quick", action="store_true", help="tiny run for CI: 1 s phases, 2 pairs")
    p.add_argument("--send", nargs=3, metavar=("PORT", "TO", "IDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.send:
        return sender_main(args)
    if args.quick:
        args.seconds, args.pairs, args.warmup = 1.0, 2, 0.3
    summary = run(args)
    for r in summary["results"]:
        lat = r["pingpong_latency_us"]
        print(f"{r['phase']:>8}: ping-pong {r['pingpong_msgs_per_s']:,.0f} msg/s, p50 "
              f"{lat['p50']:,.0f} us, p99 {lat['p99']:,.0f} us, p99.9 {lat['p99.9']:,.0f} us; "
              f"server RSS {r['rss_before_mib']} -> peak {r['rss_peak_mib']} -> "
              f"{r['rss_after_mib']} MiB (growth {r['rss_growth_mib']})"
              + (f"; senders {r['sender_ack_states']}" if "sender_ack_states" in r else "")
              + (f", read {r['read']}" if "read" in r else "")
              + (f", left stored {r['stored_for_nonreader']}"
                 if "stored_for_nonreader" in r else ""))
    print(f"server log, slow-reader lines: {summary['server_log_slow_reader_lines']}")
    write_summary(args.json, summary)
    return 1 if summary["pingpong_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
