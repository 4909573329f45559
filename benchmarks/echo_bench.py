"""Echo throughput: the reactor library (0 and 4 sub-reactor threads) vs asyncio.

Each server runs as a subprocess; the same client drives all of them: two
client processes (fewer if there are fewer connections), each with
non-blocking sockets on one epoll, ping-pong style (every connection keeps
exactly one message in flight). A cell is (connections, message size); its
figure is completed round trips per second summed over the client processes,
the median over the rounds. "reactor-4-noturns" is 4 threads that do not take
turns (reactor/turn.py), to show what the turns change. The servers start in
a session of their own, as deployed (see benchmarks/README.md);
``--same-session`` keeps them in this one, for comparison.

    python benchmarks/echo_bench.py [--seconds 5] [--rounds 1] [--cells 100x64,...]
                                    [--quick] [--json PATH] [--same-session]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ECHO_EXAMPLE = os.path.join(ROOT, "examples", "echo_server.py")
CLIENT_PROCESSES = 2
FULL_CELLS = [(c, s) for c in (1, 100, 1000) for s in (64, 4096)]
QUICK_CELLS = [(100, 64)]
SERVERS = ("reactor-0", "reactor-4", "reactor-4-noturns", "asyncio")


# --------------------------------------------------------------------- servers
class _AsyncioEcho(asyncio.Protocol):
    """The standard library's Protocol API: write back whatever arrives."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport  # asyncio sets TCP_NODELAY itself

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def serve_asyncio(port: int) -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(_AsyncioEcho, "127.0.0.1", port, backlog=1024)
    )
    host, real_port = server.sockets[0].getsockname()[:2]
    print(f"echo server on {host}:{real_port}", flush=True)
    loop.run_forever()


def start_server(kind: str, new_session: bool = True,
                 ) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    if kind == "asyncio":
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-asyncio"]
    else:
        _, threads, *variant = kind.split("-")
        cmd = [sys.executable, ECHO_EXAMPLE, "0", threads] + (["--no-turns"] if variant else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("echo server on "):
        stop_server(proc, new_session, 0.0)
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return proc, (host, int(port))


def stop_server(proc: subprocess.Popen[str], new_session: bool, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL (to its whole process group when it has one of its own)."""
    proc.terminate()
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    if new_session:  # not reaped yet, so its pid still names its group
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait(10)


# ---------------------------------------------------------------------- client
def run_client(host: str, port: int, conns: int, size: int, seconds: float) -> None:
    """One client process: connect, report ready, wait for 'go', ping-pong, print JSON."""
    msg = b"x" * size
    socks = [socket.create_connection((host, port)) for _ in range(conns)]
    ep = select.epoll()
    received: dict[int, int] = {}
    by_fd: dict[int, socket.socket] = {}
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        received[s.fileno()] = 0
        by_fd[s.fileno()] = s
    print("ready", flush=True)
    sys.stdin.readline()
    count = _ping_pong(ep, by_fd, received, msg, seconds)
    print(json.dumps({"messages": count, "seconds": seconds}), flush=True)


def _ping_pong(
    ep: select.epoll,
    by_fd: dict[int, socket.socket],
    received: dict[int, int],
    msg: bytes,
    seconds: float,
) -> int:
    size = len(msg)
    for s in by_fd.values():
        # A fresh socket's send buffer always takes one message of <= 4 KiB.
        assert s.send(msg) == size
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _ev in ep.poll(0.1):
            sock = by_fd[fd]
            got = received[fd] + len(sock.recv(65536))
            if got >= size:
                got -= size
                count += 1
                sock.send(msg)
            received[fd] = got
    return count


def drive(address: tuple[str, int], conns: int, size: int, seconds: float) -> float:
    """Run the client processes against ``address``; return round trips per second."""
    nproc = min(CLIENT_PROCESSES, conns)
    shares = [conns // nproc + (1 if i < conns % nproc else 0) for i in range(nproc)]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client", address[0],
             str(address[1]), str(share), str(size), str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for share in shares
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        total += json.loads(out)["messages"]
        if p.returncode != 0:
            raise RuntimeError("client process failed")
    return total / seconds


# ----------------------------------------------------------------------- main
def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all its threads), from /proc; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: field 14 (utime) and 15 (stime) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    u = os.uname()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "uname": f"{u.sysname} {u.release} {u.machine}",
    }


def run(cells: list[tuple[int, int]], seconds: float, rounds: int = 1,
        new_session: bool = True) -> dict[str, Any]:
    # All servers stay up (an idle one costs nothing) and each cell visits
    # them in turn, so a burst of load on this shared machine skews one cell
    # of every server rather than every cell of one server.
    rates: dict[str, dict[tuple[int, int], list[float]]] = {
        kind: {cell: [] for cell in cells} for kind in SERVERS}
    cpu_us: dict[str, dict[tuple[int, int], list[float]]] = {
        kind: {cell: [] for cell in cells} for kind in SERVERS}
    servers = {}
    try:
        for kind in SERVERS:
            servers[kind] = start_server(kind, new_session)
        for _, address in servers.values():
            # Unmeasured: the first connections of a fresh server are slow for
            # asyncio in particular (its first round came out at a third).
            drive(address, *cells[0], min(seconds, 0.5))
        for _ in range(rounds):
            for cell in cells:
                for kind in SERVERS:
                    proc, address = servers[kind]
                    cpu_before = process_cpu_seconds(proc.pid)
                    rate = drive(address, *cell, seconds)
                    cpu_after = process_cpu_seconds(proc.pid)
                    rates[kind][cell].append(rate)
                    if cpu_before is not None and cpu_after is not None and rate:
                        cpu_us[kind][cell].append(
                            (cpu_after - cpu_before) / (rate * seconds) * 1e6)
    finally:
        for proc, _ in servers.values():
            stop_server(proc, new_session)
    rows = [summary_row(cell, rates, cpu_us) for cell in cells]
    return {"unit": "messages/s", "seconds_per_cell": seconds, "rounds": rounds,
            "servers_in_own_session": new_session,
            "statistic": "median over the rounds", "machine": machine(), "cells": rows}


def summary_row(
    cell: tuple[int, int],
    rates: dict[str, dict[tuple[int, int], list[float]]],
    cpu_us: dict[str, dict[tuple[int, int], list[float]]],
) -> dict[str, Any]:
    row: dict[str, Any] = {"connections": cell[0], "message_bytes": cell[1]}
    for kind in SERVERS:
        row[kind] = round(statistics.median(rates[kind][cell]), 1)
        cpu = cpu_us[kind][cell]
        row[f"{kind}_server_cpu_us_per_msg"] = (
            round(statistics.median(cpu), 2) if cpu else None)
    base = row["asyncio"] or 1.0
    row["ratio_reactor0_asyncio"] = round(row["reactor-0"] / base, 3)
    row["ratio_reactor4_asyncio"] = round(row["reactor-4"] / base, 3)
    row["ratio_reactor4_noturns_asyncio"] = round(row["reactor-4-noturns"] / base, 3)
    return row


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'conns':>6} {'bytes':>6} {'reactor-0':>11} {'reactor-4':>11} {'r4-noturns':>11}"
          f" {'asyncio':>11} {'r0/aio':>7} {'r4/aio':>7} {'r4nt/aio':>8}"
          "   server CPU us/msg r0 / r4 / r4nt / aio")
    for r in summary["cells"]:
        cpu = " / ".join(
            "-" if r[f"{k}_server_cpu_us_per_msg"] is None
            else f"{r[f'{k}_server_cpu_us_per_msg']:.1f}"
            for k in SERVERS
        )
        print(f"{r['connections']:>6} {r['message_bytes']:>6} {r['reactor-0']:>11.0f}"
              f" {r['reactor-4']:>11.0f} {r['reactor-4-noturns']:>11.0f} {r['asyncio']:>11.0f}"
              f" {r['ratio_reactor0_asyncio']:>7.2f} {r['ratio_reactor4_asyncio']:>7.2f}"
              f" {r['ratio_reactor4_noturns_asyncio']:>8.2f}   {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration per cell")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every cell this many times, interleaved; report medians")
    parser.add_argument("--cells", default=None,
                        help="comma list of CONNSxBYTES (default: 1, 100, 1000 x 64, 4096)")
    parser.add_argument("--quick", action="store_true", help="one short cell per server (CI)")
    parser.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    parser.add_argument("--same-session", action="store_true",
                        help="start the servers in this process's session instead of one "
                             "of their own (as deployed); for comparison")
    parser.add_argument("--serve-asyncio", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_asyncio:
        serve_asyncio(0)
        return
    if args.client:
        host, port, conns, size, secs = args.client
        run_client(host, int(port), int(conns), int(size), float(secs))
        return
    cells = QUICK_CELLS if args.quick else FULL_CELLS
    if args.cells:
        cells = [(int(c), int(b)) for c, b in (x.split("x") for x in args.cells.split(","))]
    seconds = min(args.seconds, 0.5) if args.quick else args.seconds
    summary = run(cells, seconds, max(1, args.rounds), not args.same_session)
    summary["command"] = "python benchmarks/echo_bench.py " + " ".join(sys.argv[1:])
    print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
