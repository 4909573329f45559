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

Scaling ratio = ``nginx`` / ``one``; cross-server ratio = ``split`` / ``one``.
The servers share a throw-away MySQL database and a private ``redis-server``
started here.

``--baseline DIR`` runs the same scenarios again with the chat servers of
another checkout (``python -m chat.server`` run from DIR, e.g. an export of
main's commit), as rows ``one@base``, ``split@base``...; ``--rounds N`` runs
every scenario of both builds N times, interleaved (this build, then the
baseline, round after round), and reports each row's median and each
build's median ratio of its rounds, so that a machine shared with other
work moves both builds alike.

    .venv/bin/python benchmarks/cluster_bench.py [--pairs 100] [--procs 2]
        [--seconds 10] [--threads 2] [--scenarios one,split,nginx] [--rounds N]
        [--baseline DIR] [--json PATH] [--quick]
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


def server(db: str, args: argparse.Namespace, redis_url: str | None,
           root: str | None = None) -> ChatServerProcess:
    extra = ["--redis", redis_url, "--server-id", f"bench-{uuid.uuid4().hex[:8]}"] \
        if redis_url else []
    return ChatServerProcess(args.threads, extra=extra, db=db,
                             new_session=not args.same_session, root=root).start()


def run_build(args: argparse.Namespace, db: str, root: str | None,
              suffix: str) -> list[dict[str, Any]]:
    """One round of the wanted scenarios with the servers of ``root`` (None: this one)."""
    wanted = args.scenarios.split(",")
    rows = []
    if "one" in wanted:
        s = server(db, args, None, root)
        try:
            rows.append(drive("one" + suffix, (s.host, s.port), (s.host, s.port), args))
        finally:
            s.stop()
    if "split" in wanted or "nginx" in wanted:
        redis = RedisServer().start()
        servers = [server(db, args, redis.url, root) for _ in range(2)]
        nginx = None
        try:
            s1, s2 = ((s.host, s.port) for s in servers)
            if "split" in wanted:
                rows.append(drive("split" + suffix, s1, s2, args))
            if "nginx" in wanted:
                nginx = NginxProcess([s1, s2]).start()
                front = ("127.0.0.1", nginx.port)
                rows.append(drive("nginx" + suffix, front, front, args))
        finally:
            if nginx is not None:
                nginx.cleanup()
            for s in servers:
                s.stop()
            redis.cleanup()
    return rows


def _ratio(by: dict[str, dict[str, Any]], top: str, bottom: str) -> float | None:
    if top in by and bottom in by and by[bottom]["msgs_per_s"]:
        return round(by[top]["msgs_per_s"] / by[bottom]["msgs_per_s"], 3)
    return None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run(args: argparse.Namespace, db: str) -> dict[str, Any]:
    builds = [(None, "")] + ([(os.path.abspath(args.baseline), "@base")]
                             if args.baseline else [])
    rounds: list[list[dict[str, Any]]] = []
    for n in range(args.rounds):
        if args.rounds > 1:
            print(f"round {n + 1} of {args.rounds}", file=sys.stderr)
        rounds.append([row for root, suffix in builds
                       for row in run_build(args, db, root, suffix)])
    if args.rounds == 1:
        rows = rounds[0]
    else:  # each scenario's median round, by messages per second
        rows = []
        for name in [r["scenario"] for r in rounds[0]]:
            runs = sorted((r for rnd in rounds for r in rnd if r["scenario"] == name),
                          key=lambda r: r["msgs_per_s"])
            rows.append({**runs[len(runs) // 2], "rounds_msgs_per_s": [
                r["msgs_per_s"] for rnd in rounds for r in rnd if r["scenario"] == name]})
    by = {r["scenario"]: r for r in rows}
    cross = {}
    for _, suffix in builds:
        per_round = [x for rnd in rounds
                     if (x := _ratio({r["scenario"]: r for r in rnd},
                                     "split" + suffix, "one" + suffix)) is not None]
        if per_round:
            cross["split_vs_one" + suffix] = round(_median(per_round), 3)
            cross["split_vs_one" + suffix + "_rounds"] = per_round
    return {
        "benchmark": "cluster ping-pong",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "config": {"pairs": args.pairs, "procs": args.procs, "seconds": args.seconds,
                   "warmup": args.warmup, "threads": args.threads, "message_chars": MSG_LEN,
                   "servers_in_own_session": not args.same_session, "rounds": args.rounds,
                   "baseline": args.baseline},
        "machine": machine_info(),
        "unit": {"msgs_per_s": "delivered one-to-one messages per second",
                 "latency_us": "one-way sender -> server(s) -> recipient, microseconds"},
        "results": rows,
        "scaling_nginx_vs_one": _ratio(by, "nginx", "one"),
        "cross_server": cross,
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
    for name, ratio in summary.get("cross_server", {}).items():
        if not name.endswith("_rounds"):
            lines.append(f"cross-server ({name.replace('_vs_', ' / ')}): {ratio}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_pair_options(p)
    p.add_argument("--threads", type=int, default=2, help="sub-reactors per server (default 2)")
    p.add_argument("--scenarios", default=SCENARIOS, help=f"comma list (default {SCENARIOS})")
    p.add_argument("--mysql", default=None,
                   help="MySQL server for the throw-away database ($CHAT_TEST_MYSQL_URL)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every scenario this many times, interleaved; report medians")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run the scenarios with the servers of this checkout (@base)")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny run for CI: 4 pairs, 1 s")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.warmup, args.seconds = 4, 0.3, 1.0
    if args.pairs < 1 or args.procs < 1 or args.seconds <= 0 or args.rounds < 1:
        p.error("--pairs, --procs, --seconds and --rounds must be positive")
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "chat", "server.py")):
        p.error(f"--baseline {args.baseline}: no chat/server.py there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with throwaway_database(args.mysql) as db:
        summary = run(args, db)
    print(format_table(summary))
    return finish(summary, args.json)


if __name__ == "__main__":
    sys.exit(main())
