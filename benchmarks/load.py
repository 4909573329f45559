"""High-rate load modes against one chat server: flood, fan-out, login storm, capacity.

Every mode drives real ``python -m chat.server`` processes (fresh SQLite file
each, cheap password hash) over 127.0.0.1 with K driver processes from
``benchmarks/driver`` (selectors loops over non-blocking sockets, started on
one instant, a live line on stderr), and prints a table and a JSON summary
with latency percentiles from a log-bucket histogram.

    load.py flood    [--pairs 100] [--window 16] [--seq] [--targets t1,t4]
    load.py fanout   [--sizes 10,100,1000] [--groups 1] [--window 4]
    load.py logins   [--users 64]
    load.py capacity [--conns 10000] [--rounds 3]
    load.py sweep    [--mode pingpong|flood] [--clients 2,20,200,2000] [--threads 0,1,2,4]
    load.py compare  [--rounds 3] [--no-cluster]     (relay vs -t 1 vs -t 4; 1 vs 2 servers)

Common options: ``--procs K``, ``--seconds``, ``--warmup``, ``--json PATH``,
``--quick`` (a tiny run for CI); ``--targets`` takes ``tN`` (a server started
here with ``-t N``), ``relay`` (flood only) or ``HOST:PORT[@PID]`` (a running
server; with a PID its CPU time and RSS are read from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pingpong  # noqa: E402
from driver.capacity import capacity_worker  # noqa: E402
from driver.common import merge, rss_kib, split  # noqa: E402
from driver.fanout import create_groups, fanout_worker  # noqa: E402
from driver.flood import flood_worker  # noqa: E402
from driver.logins import login_worker  # noqa: E402
from driver.servers import (  # noqa: E402
    UNLIMITED_RATE_ENV,
    add_session_option,
    command_line,
    machine_info,
    write_summary,
)
from driver.users import DriverError  # noqa: E402
from driver.workers import WorkerFn, run_workers  # noqa: E402

from chat.limits import Limits  # noqa: E402

Row = dict[str, Any]
LAT_COLS = ("p50", "p90", "p99", "p99.9", "max")


# ------------------------------------------------------------------ plumbing
def drive(fn: WorkerFn, configs: list[dict[str, Any]], system: pingpong.Target,
          args: argparse.Namespace, label: str, count_key: str = "delivered",
          rate_key: str = "msgs_per_s", window: bool = True,
          marks: list[tuple[float, Callable[[], None]]] | None = None,
          start_delay: float = 0.05) -> tuple[Row, list[Row]]:
    """Run the workers against ``system``; one merged row (rate over the window, server
    CPU per counted item when its PID is known) and the workers' raw results."""
    cpu: list[float] = []
    marks = list(marks or [])
    if window and system.pid:
        def probe() -> None:
            cpu.append(system.cpu_seconds())
        marks += [(args.warmup, probe), (args.warmup + args.seconds, probe)]
    results = run_workers(fn, configs, label=label, marks=marks, start_delay=start_delay,
                          setup_timeout=getattr(args, "setup_timeout", 300.0))
    row = merge(results, args.seconds if window else 0.0, count_key, rate_key)
    if len(cpu) == 2 and row[count_key]:
        row["server_cpu_us_per_item"] = round((cpu[1] - cpu[0]) * 1e6 / row[count_key], 1)
    return row, results


def base_config(system: pingpong.Target, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    return {"host": system.host, "port": system.port, "warmup": args.warmup,
            "seconds": args.seconds, "prefix": f"ld{tag}"}


def each_target(args: argparse.Namespace, body: Callable[[pingpong.Target, str], Row]) -> list[Row]:
    """Start every target of ``--targets`` in turn, run ``body`` on it, stop it."""
    rows = []
    for target in args.targets.split(","):
        system = pingpong.start_target(target, getattr(args, "relay", None),
                                       not args.same_session)
        try:
            print(f"{pingpong.describe(target)}: pid {system.pid}, port {system.port}",
                  file=sys.stderr)
            row = {"target": pingpong.describe(target), **body(system, uuid.uuid4().hex[:6])}
        except (DriverError, RuntimeError) as exc:
            raise SystemExit(f"{pingpong.describe(target)}: {exc}") from exc
        finally:
            system.stop()
        print("  " + one_line(row), file=sys.stderr)
        rows.append(row)
    return rows


def one_line(row: Row) -> str:
    rate = next((f"{k} {row[k]:,.0f}" for k in ("deliveries_per_s", "msgs_per_s", "logins_per_s")
                 if k in row), "")
    lat = row.get("latency_us", {})
    return f"{rate}, p50 {lat.get('p50', 0):,.0f} us, p99 {lat.get('p99', 0):,.0f} us"


# --------------------------------------------------------------------- modes
def flood(args: argparse.Namespace) -> list[Row]:
    def body(system: pingpong.Target, tag: str) -> Row:
        configs = [{**base_config(system, args, f"{tag}w{i}u"), "pairs": n,
                    "window": args.window, "seq": args.seq}
                   for i, n in enumerate(split(args.pairs, args.procs)) if n]
        row, results = drive(flood_worker, configs, system, args, "flood")
        row.update(pairs=args.pairs, window=args.window, seq=args.seq,
                   lost=sum(r["lost"] for r in results))
        return row
    return each_target(args, body)


def fanout(args: argparse.Namespace) -> list[Row]:
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        def body(system: pingpong.Target, tag: str, size: int = size) -> Row:
            groups = create_groups(system.host, system.port, args.groups, f"fo{tag}")
            shares = split(size - 1, args.procs)  # members besides the sender
            configs = [{**base_config(system, args, f"{tag}w{i}"), "groups": groups,
                        "members": n, "window": args.window, "senders": i == 0}
                       for i, n in enumerate(shares) if n]
            row, results = drive(fanout_worker, configs, system, args, f"fan-out {size}",
                                 rate_key="deliveries_per_s")
            sent = {g: sum(int(r["sent"].get(g, 0)) for r in results)
                    for g in (str(x["group"]) for x in groups)}
            got = {g: sum(int(r["got"].get(g, 0)) for r in results) for g in sent}
            row.update(group_size=size, groups=args.groups, window=args.window,
                       group_msgs_sent=sum(sent.values()),
                       lost=sum(sent[g] * (size - 1) - got[g] for g in sent),
                       unacked=sum(r["unacked"] for r in results))
            return row
        rows += each_target(args, body)
    return rows


def logins(args: argparse.Namespace) -> list[Row]:
    def body(system: pingpong.Target, tag: str) -> Row:
        configs = [{**base_config(system, args, f"{tag}w{i}u"), "users": n}
                   for i, n in enumerate(split(args.users, args.procs)) if n]
        row, results = drive(login_worker, configs, system, args, "logins",
                             count_key="logins", rate_key="logins_per_s")
        row.update(users=args.users, unfinished=sum(r["unfinished"] for r in results))
        return row
    return each_target(args, body)


def capacity(args: argparse.Namespace) -> list[Row]:
    def body(system: pingpong.Target, tag: str) -> Row:
        rss: dict[str, int] = {"before": rss_kib(system.pid) if system.pid else 0}

        def idle() -> None:
            rss["idle"] = rss_kib(system.pid) if system.pid else 0
        configs = [{**base_config(system, args, f"{tag}w{i}u"), "conns": n,
                    "rounds": args.rounds}
                   for i, n in enumerate(split(args.conns, args.procs)) if n]
        t0 = time.monotonic()
        row, results = drive(capacity_worker, configs, system, args, "capacity", window=False,
                             marks=[(-0.5, idle)], start_delay=1.0)
        row.pop("msgs_per_s")
        rss["after_chat"] = rss_kib(system.pid) if system.pid else 0
        per_conn = (rss.get("idle", 0) - rss["before"]) / args.conns
        row.update(conns=args.conns, rounds=args.rounds,
                   expected=sum(r["expected"] for r in results),
                   setup_seconds=max(r["setup_seconds"] for r in results),
                   total_seconds=round(time.monotonic() - t0, 1),
                   rss_kib={**rss, "per_conn": round(per_conn, 2)},
                   all_delivered=row["delivered"] == sum(r["expected"] for r in results))
        return row
    args.warmup, args.seconds = 0.0, 0.0
    return each_target(args, body)


def sweep(args: argparse.Namespace) -> list[Row]:
    """Throughput and latency against clients (at --base-threads) and against -t; with
    --rounds R the whole plan runs R times, interleaved, and each point is its median."""
    plan = [("clients", int(c), args.base_threads) for c in args.clients.split(",")]
    plan += [("threads", args.base_clients, int(t)) for t in args.threads.split(",")]
    runs: dict[int, list[Row]] = {i: [] for i in range(len(plan))}
    for _ in range(args.rounds):
        for i, (axis, clients, threads) in enumerate(plan):
            pairs = max(1, clients // 2)
            sub = argparse.Namespace(**{**vars(args), "targets": f"t{threads}", "pairs": pairs,
                                        "seq": False})
            if args.mode == "pingpong":
                def body(system: pingpong.Target, tag: str,
                         sub: argparse.Namespace = sub) -> Row:
                    row = pingpong.run_target(f"t{sub.targets[1:]}", system, sub, tag)
                    row.pop("target")
                    return row
                (row,) = each_target(sub, body)
            else:
                (row,) = flood(sub)
            row.update(sweep=axis, clients=2 * pairs, threads=threads, mode=args.mode)
            runs[i].append(row)
    rows = []
    for i in range(len(plan)):
        by_rate = sorted(runs[i], key=lambda r: r["msgs_per_s"])
        rows.append({**by_rate[(len(by_rate) - 1) // 2],
                     "rounds_msgs_per_s": [r["msgs_per_s"] for r in runs[i]],
                     "errors": sum(r["errors"] for r in runs[i])})
    return rows


def compare(args: argparse.Namespace) -> Row:
    """Ping-pong and flood: relay vs -t 1 vs -t 4; cluster ping-pong: one vs nginx + two."""
    pp_args = pingpong.parse_args(["--pairs", str(args.pairs), "--procs", str(args.procs),
                                   "--seconds", str(args.seconds), "--warmup", str(args.warmup),
                                   "--rounds", str(args.rounds), "--targets", "relay,t1,t4",
                                   *(["--relay", args.relay] if args.relay else []),
                                   *(["--same-session"] if args.same_session else [])])
    pp = pingpong.run(pp_args)
    by = {r["target"]: r["msgs_per_s"] for r in pp["results"]}
    fl_args = argparse.Namespace(**{**vars(args), "targets": "relay,t1,t4", "seq": False})
    fl_runs: dict[str, list[Row]] = {}
    for _ in range(args.rounds):  # interleaved like ping-pong's; each target's median round
        for r in flood(fl_args):
            fl_runs.setdefault(r["target"], []).append(r)
    fl = {}
    for target, runs in fl_runs.items():
        runs.sort(key=lambda r: r["msgs_per_s"])
        fl[target] = {**runs[(len(runs) - 1) // 2],
                      "rounds_msgs_per_s": [r["msgs_per_s"] for r in runs],
                      "errors": sum(r["errors"] for r in runs),
                      "lost": sum(r["lost"] for r in runs)}
    fl_rate = {t: r["msgs_per_s"] for t, r in fl.items()}
    out: Row = {"pingpong": pp["results"], "flood": list(fl.values())}
    rel, t1, t4 = "reference relay", "server -t 1", "server -t 4"
    ratios = {
        "pingpong_t1_vs_relay": _ratio(by[t1], by[rel]),
        "pingpong_t4_vs_relay": _ratio(by[t4], by[rel]),
        "pingpong_t4_vs_t1": _ratio(by[t4], by[t1]),
        "flood_t1_vs_relay": _ratio(fl_rate[t1], fl_rate[rel]),
        "flood_t4_vs_relay": _ratio(fl_rate[t4], fl_rate[rel]),
        "flood_t4_vs_t1": _ratio(fl_rate[t4], fl_rate[t1]),
    }
    if args.cluster:
        import cluster_bench

        from tests.support.mysqldb import throwaway_database
        cb_args = cluster_bench.parse_args(
            ["--pairs", str(args.pairs), "--procs", str(args.procs), "--seconds",
             str(args.seconds), "--warmup", str(args.warmup), "--scenarios", "one,nginx",
             *(["--same-session"] if args.same_session else [])])
        with throwaway_database() as db:
            cb = cluster_bench.run(cb_args, db)
        out["cluster"] = cb["results"]
        ratios["cluster_nginx_two_vs_one"] = cb["scaling_nginx_vs_one"]
    out["ratios"] = ratios
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# ---------------------------------------------------------------- reporting
def table(rows: list[Row]) -> str:
    """A markdown table of whatever rows a mode produced (rate, latency, errors)."""
    if not rows:
        return ""
    rate_key = next((k for k in ("deliveries_per_s", "msgs_per_s", "logins_per_s")
                     if k in rows[0]), "-")
    extra = [k for k in ("group_size", "clients", "threads", "pairs", "window", "conns")
             if k in rows[0]]
    if rate_key == "-" and "rss_kib" in rows[0]:
        rate_key = "rss KiB/conn"
    head = ["system", *extra, rate_key,
            *(f"{c} us" for c in LAT_COLS), "errors/lost"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        lat = r.get("latency_us", {})
        bad = r.get("errors", 0) + max(r.get("lost", 0), 0) + r.get("unfinished", 0)
        if "expected" in r:
            bad += r["expected"] - r["delivered"]
        cells = [r["target"], *(str(r[k]) for k in extra),
                 _rate_text(_rate_cell(r, rate_key), rate_key),
                 *(f"{lat.get(c, 0):,.0f}" for c in LAT_COLS), str(bad)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rate_text(value: float, key: str) -> str:
    # Throughput in whole messages (logins, deliveries) per second; RSS per connection in KiB.
    return f"{value:,.0f}" if key.endswith("_per_s") else f"{value:,.2f}"


def _rate_cell(row: Row, key: str) -> float:
    return float(row["rss_kib"]["per_conn"] if key == "rss KiB/conn" else row.get(key, 0.0))


def failed(rows: list[Row]) -> bool:
    return any(r.get("errors") or r.get("lost") or r.get("unfinished")
               or ("expected" in r and r["expected"] != r["delivered"]) for r in rows)


UNITS = {
    "flood": "one-to-one messages delivered per second; latency one-way, us",
    "fanout": "group messages delivered to members per second; latency send -> member, us",
    "logins": "completed logins per second; latency login request -> ACK, us",
    "capacity": "server RSS (VmRSS, KiB) before, idle with N logged in, after chat; "
                "latency one-way, us",
    "sweep": "delivered messages per second; latency one-way, us",
    "compare": "see each part; ratios are throughput over throughput",
}


# ----------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)

    def common(sp: argparse.ArgumentParser, targets: str = "t1") -> None:
        sp.add_argument("--procs", type=int, default=2, help="driver processes (default 2)")
        sp.add_argument("--seconds", type=float, default=10.0, help="measuring window")
        sp.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
        sp.add_argument("--targets", default=targets, help=f"comma list (default {targets})")
        sp.add_argument("--relay", default=None,
                        help="path of another relay script (default benchmarks/relay.py)")
        sp.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
        sp.add_argument("--quick", action="store_true", help="a tiny run for CI (seconds)")
        add_session_option(sp)
        sp.add_argument("--keep-rate-limit", action="store_true",
                        help="start servers with their default per-connection request rate "
                             "limit (by default it is lifted: CHAT_RATE=1e9)")

    sp = sub.add_parser("flood", help="a window of W one-to-one messages per connection")
    common(sp)
    sp.add_argument("--pairs", type=int, default=100)
    sp.add_argument("--window", type=int, default=16)
    sp.add_argument("--seq", action="store_true", help="carry seq; the server's ack frees a slot")
    sp = sub.add_parser("fanout", help="one sender per group, deliveries/s at the members")
    common(sp)
    sp.add_argument("--sizes", default="10,100,1000", help="group sizes (sender included)")
    sp.add_argument("--groups", type=int, default=1, help="groups (one sender each) at once")
    sp.add_argument("--window", type=int, default=4, help="group messages in flight per sender")
    sp = sub.add_parser("logins", help="login storm: log in and out in a loop")
    common(sp)
    sp.add_argument("--users", type=int, default=64)
    sp = sub.add_parser("capacity", help="N idle logged-in connections: RSS, then chat")
    common(sp)
    sp.add_argument("--conns", type=int, default=10000)
    sp.add_argument("--rounds", type=int, default=3, help="rounds of one message per user")
    sp = sub.add_parser("sweep", help="rate and latency against clients and against -t")
    common(sp)
    sp.add_argument("--kind", dest="sweep_mode", choices=("pingpong", "flood"),
                    default="pingpong")
    sp.add_argument("--clients", default="2,20,200,2000", help="connections (pairs x 2)")
    sp.add_argument("--threads", default="0,1,2,4", help="-t values")
    sp.add_argument("--base-threads", type=int, default=1, help="-t of the clients sweep")
    sp.add_argument("--base-clients", type=int, default=200, help="clients of the -t sweep")
    sp.add_argument("--window", type=int, default=16, help="flood window")
    sp.add_argument("--rounds", type=int, default=1, help="runs of the plan (median point)")
    sp = sub.add_parser("compare", help="relay vs -t 1 vs -t 4, one vs two servers")
    common(sp)
    sp.add_argument("--pairs", type=int, default=100)
    sp.add_argument("--window", type=int, default=16, help="flood window")
    sp.add_argument("--rounds", type=int, default=1, help="ping-pong rounds (median)")
    sp.add_argument("--no-cluster", dest="cluster", action="store_false",
                    help="skip one vs two servers behind nginx (needs MySQL, Redis, nginx)")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.seconds, args.procs = 0.2, 0.5, min(args.procs, 2)
        for name, value in (("pairs", 4), ("users", 4), ("conns", 20), ("rounds", 1),
                            ("sizes", "3,10"), ("clients", "4"), ("threads", "1"),
                            ("base_clients", 8)):
            if hasattr(args, name):
                setattr(args, name, value)
    if args.procs < 1 or args.seconds < 0:
        p.error("--procs must be positive")
    args.setup_timeout = 600.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_rate_limit:  # servers started here lift it unless $CHAT_RATE is set
        limits = Limits()
        os.environ.setdefault("CHAT_RATE", str(limits.rate))
        os.environ.setdefault("CHAT_BURST", str(limits.burst))
    machine = machine_info()
    mode = args.mode
    if mode == "sweep":
        args.mode = args.sweep_mode
        rows: list[Row] = sweep(args)
        args.mode = mode
    elif mode == "compare":
        result = compare(args)
        rows = result["pingpong"] + result["flood"] + result.get("cluster", [])
    else:
        rows = {"flood": flood, "fanout": fanout, "logins": logins,
                "capacity": capacity}[mode](args)
    config = {k: v for k, v in vars(args).items() if k not in ("json", "relay", "mode")}
    config["server_env"] = {k: os.environ.get(k, v) for k, v in UNLIMITED_RATE_ENV.items()}
    summary: dict[str, Any] = {
        "benchmark": f"load {mode}",
        "command": command_line(),
        "config": config, "machine": machine, "unit": UNITS[mode],
    }
    if mode == "compare":
        summary.update(results=[], **{k: v for k, v in result.items()})
        for part in ("pingpong", "flood"):
            print(f"\n{part}:\n" + (pingpong.format_table({"results": result[part]})
                                    if part == "pingpong" else table(result[part])))
        if "cluster" in result:
            import cluster_bench
            print("\ncluster:\n" + cluster_bench.format_table(
                {"results": result["cluster"],
                 "scaling_nginx_vs_one": result["ratios"]["cluster_nginx_two_vs_one"]}))
        print("\nratios: " + json.dumps(result["ratios"]))
    else:
        summary["results"] = rows
        print(table(rows))
    print(f"nproc {machine['nproc']}, Python {machine['python']}, {machine['uname']}, "
          f"{machine['date']}, load average {machine['loadavg_at_start']}")
    write_summary(args.json, summary)
    return 1 if failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
