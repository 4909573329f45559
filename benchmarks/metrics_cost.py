"""What metrics cost: chat ping-pong against a server without and with ``--metrics-port``.

Both servers are started as deployed, each in a session of its own
(``setsid``), from the same build, over a throw-away SQLite file each; the
one with metrics is scraped every ``--scrape-every`` seconds for the whole
run (Prometheus scrapes every 15 s by default: once a second is the
pessimistic case).  ``benchmarks/pingpong.py``'s driver drives each in turn,
``--rounds`` times interleaved (the order rotating from round to round),
and measures server CPU per message from ``/proc``.  On a shared machine a
round's speed moves by 2x with the other tenants' load, so the figure is
paired: within each round, one server's CPU per message over the other's
(measured seconds apart), and the median of those ratios.

Without ``--metrics-port`` the per-message counters are still kept (they
are plain per-thread dicts; only the loop observer and the HTTP thread are
off), so ``--baseline DIR`` adds a third server run from DIR, a tree of the
code before any instrumentation (``git archive <commit> | tar -x -C DIR``):
the whole cost is "on" against that one.

    .venv/bin/python benchmarks/metrics_cost.py [--threads 1] [--rounds 3] [--seconds 4]
        [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import pingpong  # noqa: E402
from driver.servers import FAST_HASH_ENV, UNLIMITED_RATE_ENV  # noqa: E402

LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")


class Server:
    """``python -m chat.server`` in its own session; ports read from its log."""

    def __init__(self, threads: int, metrics: bool, cwd: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="chat-metrics-cost-")
        argv = [sys.executable, "-m", "chat.server", "-H", "127.0.0.1", "-p", "0",
                "-t", str(threads), "--db", f"sqlite:///{self.dir}/chat.db"]
        if metrics:
            argv += ["--metrics-port", "0"]
        env = {**os.environ, **UNLIMITED_RATE_ENV, **FAST_HASH_ENV}
        if cwd is not None:  # that tree's chat package, not the installed one
            env["PYTHONPATH"] = os.path.abspath(cwd)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                                     start_new_session=True)
        self.port = self.metrics_port = 0
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if m := METRICS.search(line):
                self.metrics_port = int(m.group(1))
            if m := LISTENING.search(line):
                self.port = int(m.group(1))
                break
        if not self.port:
            raise SystemExit(f"server did not start: {line}")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep it drained

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}@{self.proc.pid}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def scrape_until(port: int, every: float, stop: threading.Event, counts: list[int]) -> None:
    while not stop.wait(every):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            reply.read()
        counts[0] += 1


def drive_rounds(servers: dict[str, Server],
                 args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Each server once per round, the order rotating; per server its rounds' results."""
    pp = pingpong.parse_args([
        "--pairs", str(args.pairs), "--seconds", str(args.seconds),
        *(["--warmup", "0.3"] if args.quick else [])])
    names = list(servers)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            out[name].append(pingpong.drive(servers[name].target, pp, f"{os.getpid()}r{rnd}"))
            time.sleep(pp.cooldown)
    return out


def micro_costs(repeat: int = 15, number: int = 100_000) -> dict[str, float]:
    """Microseconds per call of what the server adds per message and per loop batch
    (the best of ``repeat`` runs: the least disturbed by other processes)."""
    from chat import metrics
    from reactor import EventLoop

    read_at = time.monotonic()
    stats = metrics.loop_observer("bench")
    loop = EventLoop()
    loop.set_round_observer(stats)
    calls = {
        "request counted": lambda: metrics.REQUESTS.inc(5),
        "live delivery timed": lambda: metrics.delivered_live("one", read_at),
        "empty batch, no observer": lambda: loop._dispatch([]),
        "empty batch, observed": lambda: loop._dispatch_observed([]),
    }
    empty = min(timeit.repeat(lambda: None, repeat=repeat, number=number))
    out = {name: (min(timeit.repeat(fn, repeat=repeat, number=number)) - empty) / number * 1e6
           for name, fn in calls.items()}
    loop.close()
    return out


def events_per_batch(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in total:
            if line.startswith(f"chat_loop_ready_events_{kind}{{") and 'loop="main"' not in line:
                total[kind] += float(line.rsplit(" ", 1)[1])
    return total["sum"] / total["count"] if total["count"] else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="the servers' -t (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=float, default=4.0, help="measuring window per round")
    p.add_argument("--pairs", type=int, default=100, help="user pairs (default 100)")
    p.add_argument("--scrape-every", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--baseline", metavar="DIR", help="also drive the server of this tree")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run that proves the script works: 1 round of 0.5 s, 4 pairs")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.pairs, args.scrape_every = 1, 0.5, 4, 0.2
    servers = {"metrics off": Server(args.threads, False), "metrics on": Server(args.threads, True)}
    if args.baseline:
        servers["baseline"] = Server(args.threads, False, args.baseline)
    on = servers["metrics on"]
    stop, scrapes = threading.Event(), [0]
    scraper = threading.Thread(target=scrape_until,
                               args=(on.metrics_port, args.scrape_every, stop, scrapes))
    scraper.start()
    try:
        rounds = drive_rounds(servers, args)
        batch = events_per_batch(on.metrics_port)
    finally:
        stop.set()
        scraper.join()
        for server in servers.values():
            server.stop()
    print(f"-t {args.threads}, {args.pairs} pairs, {args.rounds} rounds of {args.seconds:g} s, "
          f"{scrapes[0]} scrapes, load average at the end {os.getloadavg()[0]:.1f}")
    cpu = {name: [r["server_cpu_us_per_msg"] for r in rows] for name, rows in rounds.items()}
    for name, rows in rounds.items():
        rates = [r["msgs_per_s"] for r in rows]
        print(f"  {name:<12} median {statistics.median(rates):>9,.0f} msg/s, server CPU "
              f"{statistics.median(cpu[name]):.2f} us/msg; per round: "
              + " ".join(f"{c:.1f}" for c in cpu[name]))
    on_cpu = statistics.median(cpu["metrics on"])
    for name in ("metrics off", "baseline"):
        if name in cpu:
            pairs = [a / b for a, b in zip(cpu["metrics on"], cpu[name], strict=True)]
            ratio = statistics.median(pairs)
            print(f"  server CPU per message, on / {name}, median of the rounds' ratios: "
                  f"{ratio:.3f}x ({(ratio - 1) * 100:+.1f}%); per round: "
                  + " ".join(f"{x:.2f}" for x in pairs))
    micro = micro_costs(1, 1000) if args.quick else micro_costs()
    for name, us in micro.items():
        print(f"  {name:<26} {us:.3f} us")
    observer = micro["empty batch, observed"] - micro["empty batch, no observer"]
    added = micro["request counted"] + micro["live delivery timed"] + observer / max(batch, 1)
    print(f"  {batch:.1f} ready events per batch: {added:.2f} us added per message, "
          f"{added / on_cpu * 100:.1f}% of the {on_cpu:.1f} us the server spent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
