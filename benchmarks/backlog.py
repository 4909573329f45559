"""A login with a large stored backlog: time to the first and the last message, and
the server's memory while it pages the backlog out.

    .venv/bin/python benchmarks/backlog.py [--messages 100000] [--json PATH] [--quick]

For each client kind (``--clients ack,plain``): a fresh server (``-t 2``,
``--max-offline 200000``, over SQLite in a temporary directory, in a session of
its own) whose store was filled beforehand, directly through
``chat.store.open_store(...).store_offline_many`` in batches, with
``--messages`` texts shaped like forwarded one-to-one messages (``mid``
included).  Then one client logs in and reads the whole backlog: ``ack``
logs in with ``"ack": true`` and acknowledges every 32 messages or 100 ms,
``plain`` logs in without acknowledgements (the login ack carries the first
messages, the rest follow as frames).  Reported: the time from sending the
login to the login ack, to the first message and to the last; the server's
RSS (VmRSS) before the login, at its peak while the backlog goes out (sampled
every 20 ms) and after; and what is left stored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if _path not in sys.path:
        sys.path.insert(0, _path)

from driver.common import rss_kib  # noqa: E402
from driver.servers import (  # noqa: E402
    FAST_HASH_ENV,
    ChatServerProcess,
    command_line,
    machine_info,
    write_summary,
)

from chat.mids import make_mid, now_ms  # noqa: E402
from chat.protocol import FrameDecoder, FrameError, MsgId, encode  # noqa: E402
from chat.store import open_store  # noqa: E402

FILL_BATCH = 5000
TEXT = "x" * 80  # a chat line's worth
ACK_EVERY = 32
ACK_DELAY = 0.1
NODE = 1023  # the filler's own message-id node: no server of this run claims it


def fill(db_url: str, messages: int) -> int:
    """Register a sender and a recipient; store ``messages`` for the recipient."""
    # The fast password hash, as the benchmark servers use: scrypt's 16 MiB at
    # the default cost would show in the login's RSS, not the backlog's.
    store = open_store(db_url, password_cost=int(FAST_HASH_ENV["CHAT_SCRYPT_LOG2N"]))
    try:
        sender = store.register("bl-sender", "pw")
        recipient = store.register("bl-recipient", "pw")
        start_ms = now_ms()
        for first in range(0, messages, FILL_BATCH):
            batch = []
            for n in range(first, min(first + FILL_BATCH, messages)):
                mid = make_mid(start_ms + n // 4096, NODE, n % 4096)
                batch.append((recipient, json.dumps({
                    "msgid": 5, "id": sender, "name": "bl-sender", "to": recipient,
                    "msg": f"{n:07d} {TEXT}", "time": "2026-11-29 12:00:00", "mid": mid},
                    separators=(",", ":"))))
            store.store_offline_many(batch, keep=2 * messages)
        return recipient
    finally:
        store.close()


class RssSampler(threading.Thread):
    """The peak VmRSS of a process, sampled every 20 ms until `stop`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_kib(pid)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def read_backlog(port: int, user_id: int, acking: bool, expected: int) -> dict[str, float]:
    """Log in and read ``expected`` stored messages; the times from the login request."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    decoder = FrameDecoder(max_frame=1 << 30)
    login: dict[str, Any] = {"msgid": MsgId.LOGIN_MSG, "id": user_id, "password": "pw"}
    if acking:
        login["ack"] = True
    t0 = time.monotonic()
    sock.sendall(encode(login))
    times: dict[str, float] = {}
    got = unacked = 0
    last_mid, since = 0, 0.0
    try:
        while got < expected:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError(f"server closed the connection after {got} messages")
            for msg in decoder.feed(data):
                if isinstance(msg, FrameError):
                    raise RuntimeError(f"bad frame: {msg}")
                if msg["msgid"] == MsgId.LOGIN_MSG_ACK:
                    times["login_ack_s"] = time.monotonic() - t0
                    chats = msg.get("offlinemsg", [])
                elif msg["msgid"] == MsgId.ONE_CHAT_MSG:
                    chats = [msg]
                else:
                    continue
                for chat in chats:
                    got += 1
                    if got == 1:
                        times["first_message_s"] = time.monotonic() - t0
                    if acking:
                        last_mid, unacked = chat["mid"], unacked + 1
                        since = since if unacked > 1 else time.monotonic()
            if acking and unacked and (unacked >= ACK_EVERY
                                       or time.monotonic() - since >= ACK_DELAY):
                sock.sendall(encode({"msgid": MsgId.DELIVERY_ACK, "mid": last_mid}))
                unacked = 0
        times["last_message_s"] = time.monotonic() - t0
        if acking and unacked:
            sock.sendall(encode({"msgid": MsgId.DELIVERY_ACK, "mid": last_mid}))
    finally:
        sock.close()
    return {k: round(v, 3) for k, v in times.items()}


def measure(kind: str, messages: int, threads: int) -> dict[str, Any]:
    """One client kind against a fresh, filled server."""
    tmp = tempfile.mkdtemp(prefix="chat-backlog-")
    db_url = f"sqlite:///{os.path.join(tmp, 'chat.db')}"
    try:
        t = time.monotonic()
        recipient = fill(db_url, messages)
        fill_s = time.monotonic() - t
        server = ChatServerProcess(threads, ["--max-offline", str(2 * messages)], db=db_url)
        server.start()
        try:
            time.sleep(0.5)  # let the server settle before the baseline
            before = rss_kib(server.pid)
            sampler = RssSampler(server.pid)
            sampler.start()
            times = read_backlog(server.port, recipient, kind == "ack", messages)
            time.sleep(0.5)  # the last acknowledgements and deletes
            peak = sampler.stop()
            after = rss_kib(server.pid)
        finally:
            server.stop()
        left = stored_left(db_url, recipient)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"client": kind, "messages": messages, "fill_s": round(fill_s, 1), **times,
            "messages_per_s": round(messages / times["last_message_s"]),
            "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "rss_growth_mib": round((peak - before) / 1024, 1), "stored_left": left}


def stored_left(db_url: str, user_id: int) -> int:
    store = open_store(db_url)
    try:
        return store.offline_count(user_id)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--clients", default="ack,plain", help="comma list of ack, plain")
    p.add_argument("--threads", type=int, default=2, help="the server's sub-reactors")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    p.add_argument("--quick", action="store_true", help="tiny run for CI: 2,000 messages")
    args = p.parse_args(argv)
    if args.quick:
        args.messages = 2000
    machine = machine_info()
    rows = [measure(kind, args.messages, args.threads) for kind in args.clients.split(",")]
    for r in rows:
        print(f"{r['client']:>5}: {r['messages']:,} stored; login ack {r['login_ack_s']} s, "
              f"first message {r['first_message_s']} s, last {r['last_message_s']} s "
              f"({r['messages_per_s']:,}/s); server RSS {r['rss_before_mib']} MiB -> peak "
              f"{r['rss_peak_mib']} -> {r['rss_after_mib']} (growth {r['rss_growth_mib']} MiB); "
              f"left stored {r['stored_left']}")
    summary = {"benchmark": "login with a stored backlog",
               "command": command_line(),
               "config": {"messages": args.messages, "threads": args.threads,
                          "ack_every": ACK_EVERY, "ack_delay_s": ACK_DELAY},
               "machine": machine, "results": rows}
    write_summary(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
