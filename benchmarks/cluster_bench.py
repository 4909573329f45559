"""Cluster ping-pong: pairs split across two servers (via Redis), and nginx in front.

The workload is ``pingpong.py``'s (each pair keeps one 64-character
one-to-one message in flight, the receiver answers at once; one-way latency
from a send stamp), driven by the same worker (``pingpong_worker``, given
an address per side), so the two users of a pair may connect to different
addresses.  Scenarios, run one after the
other in one invocation:

- ``one``: one chat server alone, both users of each pair on it (no Redis);
- ``split``: two servers on one Redis; user A of every pair on server 1, user B
  on server 2, so every message crosses Redis;
- ``nginx``: the same two servers behind nginx (config rendered from
  conf/nginx.conf); both users connect to nginx, which spreads them (about
  half the pairs end up split).

Scaling ratio = ``nginx`` / ``one``.  The servers share a throw-away MySQL
database and a private ``redis-server`` started here.

    .venv/bin/python benchmarks/cluster_bench.py [--pairs 100] [--procs 2]
        [--seconds 10] [--threads 2] [--scenarios one,split,nginx] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if path not in sys.path:
        sys.path.insert(0, path)

from driver.common import split  # noqa: E402
from driver.histogram import Histogram  # noqa: E402
from driver.servers import ChatServerProcess, machine_info  # noqa: E402
from driver.workers import run_workers  # noqa: E402
from pingpong import MSG_LEN, add_pair_options, finish, pingpong_worker  # noqa: E402

from tests.support.mysqldb import throwaway_database  # noqa: E402
from tests.support.nginx import NginxProcess  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

SCENARIOS = "one,split,nginx"


# --------------------------------------------------------------- orchestration
def drive(name: str, a: tuple[str, int], b: tuple[str, int],
          args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    configs = [{"a": a, "b": b, "pairs": n, "warmup": args.warmup, "seconds": args.seconds,
                "prefix": f"cb{tag}{name}w{i}"}
               for i, n in enumerate(split(args.pairs, args.procs)) if n]
    results = run_workers(pingpong_worker, configs, label=name)
    hist = Histogram.merged(Histogram.from_dict(r["histogram"]) for r in results)
    delivered = sum(r["delivered"] for r in results)
    row = {"scenario": name, "msgs_per_s": round(delivered / args.seconds, 1),
           "delivered": delivered, "errors": sum(r["errors"] for r in results),
           "lost_in_flight": sum(r["lost"] for r in results), "latency_us": hist.summary_us()}
    first_error = next((r["first_error"] for r in results if r["first_error"]), "")
    if first_error:
        row["first_error"] = first_error
    print(f"  {name}: {row['msgs_per_s']:,.0f} msg/s, p99 {row['latency_us']['p99']:,.0f} us",
          file=sys.stderr)
    return row


def server(db: str, args: argparse.Namespace, redis_url: str | None) -> ChatServerProcess:
    extra = ["--redis", redis_url, "--server-id", f"bench-{uuid.uuid4().hex[:8]}"] \
        if redis_url else []
    return ChatServerProcess(args.threads, extra=extra, db=db,
                             new_session=not args.same_session).start()


def run(args: argparse.Namespace, db: str) -> dict[str, Any]:
    wanted = args.scenarios.split(",")
    rows = []
    if "one" in wanted:
        s = server(db, args, None)
        try:
            rows.append(drive("one", (s.host, s.port), (s.host, s.port), args))
        finally:
            s.stop()
    if "split" in wanted or "nginx" in wanted:
        redis = RedisServer().start()
        servers = [server(db, args, redis.url) for _ in range(2)]
        nginx = None
        try:
            s1, s2 = ((s.host, s.port) for s in servers)
            if "split" in wanted:
                rows.append(drive("split", s1, s2, args))
            if "nginx" in wanted:
                nginx = NginxProcess([s1, s2]).start()
                front = ("127.0.0.1", nginx.port)
                rows.append(drive("nginx", front, front, args))
        finally:
            if nginx is not None:
                nginx.cleanup()
            for s in servers:
                s.stop()
            redis.cleanup()
    by = {r["scenario"]: r for r in rows}
    scaling = (round(by["nginx"]["msgs_per_s"] / by["one"]["msgs_per_s"], 3)
               if "nginx" in by and "one" in by and by["one"]["msgs_per_s"] else None)
    return {
        "benchmark": "cluster ping-pong",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "config": {"pairs": args.pairs, "procs": args.procs, "seconds": args.seconds,
                   "warmup": args.warmup, "threads": args.threads, "message_chars": MSG_LEN,
                   "servers_in_own_session": not args.same_session},
        "machine": machine_info(),
        "unit": {"msgs_per_s": "delivered one-to-one messages per second",
                 "latency_us": "one-way sender -> server(s) -> recipient, microseconds"},
        "results": rows,
        "scaling_nginx_vs_one": scaling,
    }


def format_table(summary: dict[str, Any]) -> str:
    cols = ("p50", "p90", "p99", "max")
    lines = ["| scenario | msgs/s | " + " | ".join(f"{c} us" for c in cols) + " | errors |",
             "|---|---:|" + "---:|" * len(cols) + "---:|"]
    for r in summary["results"]:
        lat = " | ".join(f"{r['latency_us'][c]:,.0f}" for c in cols)
        lines.append(f"| {r['scenario']} | {r['msgs_per_s']:,.0f} | {lat} | "
                     f"{r['errors'] + r['lost_in_flight']} |")
    lines.append(f"\nscaling (nginx, 2 servers / one server): {summary['scaling_nginx_vs_one']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_pair_options(p)
    p.add_argument("--threads", type=int, default=2, help="sub-reactors per server (default 2)")
    p.add_argument("--scenarios", default=SCENARIOS, help=f"comma list (default {SCENARIOS})")
    p.add_argument("--mysql", default=None,
                   help="MySQL server for the throw-away database ($CHAT_TEST_MYSQL_URL)")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny run for CI: 4 pairs, 1 s")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.warmup, args.seconds = 4, 0.3, 1.0
    if args.pairs < 1 or args.procs < 1 or args.seconds <= 0:
        p.error("--pairs, --procs and --seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with throwaway_database(args.mysql) as db:
        summary = run(args, db)
    print(format_table(summary))
    return finish(summary, args.json)


if __name__ == "__main__":
    sys.exit(main())
