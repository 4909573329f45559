"""WebSocket against TCP: chat ping-pong on one server, through each of its two ports.

P pairs of logged-in users; user A of a pair sends a one-to-one message to B,
B answers when it arrives, and so on: one message in flight per pair.  The
same server (``python -m chat.server -t T --ws-port 0``, in a session of its
own) is measured through its TCP port, then through its WebSocket port, with
the same driver: one selectors loop over non-blocking sockets, the
WebSocket side framed by wsproto as a browser would.  Printed per transport:
messages per second, the server's CPU time per message (what the web port
costs the server, independent of the driver's own speed) and the latency
percentiles (each message carries its send instant).

    .venv/bin/python benchmarks/ws_pingpong.py [--pairs 50] [--seconds 5] [--threads 2]
        [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Ping, Request, TextMessage

READY = {"tcp": re.compile(r"listening on [\d.]+:(\d+)"),
         "ws": re.compile(r"WebSocket at http://[\d.]+:(\d+)/")}
ENV = {"CHAT_SCRYPT_LOG2N": "8", "CHAT_RATE": "1e9", "CHAT_BURST": "1000000000"}
TEXT = "x" * 44  # with the 20-digit send instant: a 64-character message


class Server:
    """The chat server under test, in a session of its own (setsid)."""

    def __init__(self, threads: int) -> None:
        self.tmp = tempfile.mkdtemp(prefix="chat-wsbench-")
        argv = [sys.executable, "-m", "chat.server", "-H", "127.0.0.1", "-p", "0",
                "-t", str(threads), "--ws-port", "0", "--db",
                f"sqlite:///{os.path.join(self.tmp, 'chat.db')}"]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env={**os.environ, **ENV},
                                     start_new_session=True)
        self.ports: dict[str, int] = {}
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                for kind, pattern in READY.items():
                    if (m := pattern.search(line)) and kind not in self.ports:
                        self.ports[kind] = int(m.group(1))
                if len(self.ports) == 2:
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30):
            self.stop()
            raise RuntimeError("the chat server did not start")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class User:
    """One logged-in user over TCP (``\\n`` frames) or a WebSocket (text messages)."""

    def __init__(self, kind: str, port: int, name: str) -> None:
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws: WSConnection | None = None
        self.pending = b""
        self.peer: User | None = None
        if kind == "ws":
            self.ws = WSConnection(ConnectionType.CLIENT)
            host = f"127.0.0.1:{port}"
            self.sock.sendall(self.ws.send(Request(host=host, target="/ws", extra_headers=[
                (b"Origin", f"http://{host}".encode())])))
            self._wait(lambda events: any(isinstance(e, AcceptConnection) for e in events))
        self.send({"msgid": 3, "name": name, "password": "pw"})
        self.id = self._reply(4)["id"]
        self.send({"msgid": 1, "id": self.id, "password": "pw"})
        assert self._reply(2)["errno"] == 0

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(self.encode(orjson.dumps(msg)))

    def encode(self, frame: bytes) -> bytes:
        if self.ws is None:
            return frame + b"\n"
        return self.ws.send(Message(data=frame.decode()))

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The chat messages in bytes just read (pings answered)."""
        if self.ws is None:
            *frames, self.pending = (self.pending + data).split(b"\n")
            return [orjson.loads(f) for f in frames if f]
        self.ws.receive_data(data)
        out = []
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.pending += event.data.encode()
                if event.message_finished:
                    out.append(orjson.loads(self.pending))
                    self.pending = b""
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
        return out

    def _wait(self, done: Callable[[list[Any]], bool]) -> None:
        assert self.ws is not None
        seen: list[Any] = []
        while not done(seen):
            self.ws.receive_data(self.sock.recv(65536))
            seen.extend(self.ws.events())

    def _reply(self, msgid: int) -> dict[str, Any]:
        while True:
            for msg in self.feed(self.sock.recv(65536)):
                if msg.get("msgid") == msgid:
                    return msg


def run(kind: str, server: Server, pairs: int, seconds: float, warmup: float) -> dict[str, Any]:
    tag = f"{kind}{os.getpid()}_{time.monotonic_ns() % 10**9}"
    users = [User(kind, server.ports[kind], f"{tag}_{i}") for i in range(2 * pairs)]
    sel = selectors.DefaultSelector()
    for a, b in zip(users[::2], users[1::2], strict=True):
        a.peer, b.peer = b, a
    for user in users:
        user.sock.setblocking(False)
        sel.register(user.sock, selectors.EVENT_READ, user)
    prefix = {u: b'{"msgid":5,"to":%d,"time":"t","msg":"' % u.peer.id for u in users if u.peer}

    def volley(user: User) -> None:
        body = prefix[user] + b"%020d" % time.monotonic_ns() + TEXT.encode() + b'"}'
        user.sock.send(user.encode(body))  # a few dozen bytes: the kernel takes them

    for a in users[::2]:
        volley(a)
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    cpu_before = None
    latencies: list[int] = []
    count = 0
    while (now := time.monotonic()) < measure_to:
        if cpu_before is None and now >= measure_from:
            cpu_before, count, latencies = server.cpu_seconds(), 0, []
        for key, _ in sel.select(0.5):
            user: User = key.data
            for msg in user.feed(user.sock.recv(65536)):
                if msg.get("msgid") == 5:
                    latencies.append(time.monotonic_ns() - int(msg["msg"][:20]))
                    count += 1
                    volley(user)
    cpu = server.cpu_seconds() - (cpu_before or 0.0)
    for user in users:
        user.sock.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6 if latencies \
            else float("nan")

    return {"transport": kind, "pairs": pairs, "seconds": seconds, "messages": count,
            "msgs_per_s": count / seconds, "server_cpu_us_per_msg": cpu / max(count, 1) * 1e6,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2, help="the server's -t")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="a tiny run for the tests")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.seconds, args.warmup = 4, 0.5, 0.2
    server = Server(args.threads)
    try:
        results = [run(kind, server, args.pairs, args.seconds, args.warmup)
                   for kind in ("tcp", "ws")]
    finally:
        server.stop()
    print(f"{'transport':<10}{'msgs/s':>10}{'server µs/msg':>15}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        print(f"{r['transport']:<10}{r['msgs_per_s']:>10.0f}{r['server_cpu_us_per_msg']:>15.1f}"
              f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
    ratio = results[1]["msgs_per_s"] / max(results[0]["msgs_per_s"], 1e-9)
    print(f"WebSocket / TCP throughput: {ratio:.2f}x  ({args.pairs} pairs, -t {args.threads}, "
          f"{args.seconds:g} s each)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
