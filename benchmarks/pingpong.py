"""Chat ping-pong: P pairs of logged-in users, one one-to-one message in flight per pair.

User A of a pair sends a 64-character message to B; when B receives it, B
sends one back to A; and so on.  Each message carries its send instant
(``time.monotonic_ns``, the same clock in every process), so the receiver
records the one-way latency A -> server -> B in a log-bucket histogram.  The
figure is delivered messages per second over the measuring window, after a
warm-up, summed over K driver processes (each a selectors loop over its own
non-blocking sockets; pairs never span processes).

The same driver runs, one after the other in one invocation, against the
bare relay (``benchmarks/relay.py``: one thread, one selectors loop, no
storage, no checks) and the chat server with ``-t 1``,
``-t 4`` and ``-t 0``, then prints a table with the ratio to the relay.

    .venv/bin/python benchmarks/pingpong.py [--pairs 100] [--procs 2] [--seconds 10]
        [--targets relay,t1,t4,t4-noturns,t0] [--busy N] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import deque
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # run as a script or imported as benchmarks.pingpong
    sys.path.insert(0, HERE)

from driver.common import logged_in, measuring_window, split  # noqa: E402
from driver.histogram import Histogram  # noqa: E402
from driver.servers import (  # noqa: E402
    ChatServerProcess,
    RelayProcess,
    add_session_option,
    command_line,
    machine_info,
    process_context_switches,
    process_cpu_seconds,
    write_summary,
)
from driver.users import DriverError, UserConn, UserPool, pair_up, readable  # noqa: E402
from driver.workers import WorkerControl, run_workers  # noqa: E402

MSG_LEN = 64
RECEIPT = 18  # MsgId.RECEIPT: an acknowledging sender learns its message arrived
ACK_FRAME = b'{"msgid":17,"mid":%d}\n'  # DELIVERY_ACK
ACK_BATCH = 32
ACK_DELAY_NS = 100_000_000
ACK_MODES = ("off", "every", "batch")
STAMP_LEN = 20  # zero-padded monotonic_ns at the start of the text
DEFAULT_TARGETS = "relay,t1,t4,t4-noturns,t0"


# --------------------------------------------------------------------- worker
def _frame_prefixes(conns: list[UserConn], when: str) -> dict[int, bytes]:
    """Per sender, the bytes of its chat frame up to the message text (built once)."""
    out = {}
    for c in conns:
        assert c.peer is not None
        head = (f'{{"msgid":5,"id":{c.user_id},"name":"{c.name}","to":{c.peer.user_id},'
                f'"time":"{when}","msg":"')
        out[c.index] = head.encode()
    return out


def _login_pairs(cfg: dict[str, Any]) -> tuple[list[UserPool], list[UserConn]]:
    """``cfg["pairs"]`` pairs logged in, on one selector; the pools and the connections
    in pair order (A, B, A, B, ...), each user the other's ``peer``.

    By default one pool of 2 x pairs users on ``cfg["host"]:cfg["port"]``.  With
    ``cfg["a"]`` and ``cfg["b"]`` (``(host, port)`` each; cluster_bench.py) the A user
    of every pair connects to the first address and the B user to the second.
    """
    if "a" in cfg:
        side_a = UserPool(*cfg["a"], cfg["pairs"], cfg["prefix"] + "a")
        side_b = UserPool(*cfg["b"], cfg["pairs"], cfg["prefix"] + "b", sel=side_a.sel)
        pools = [side_b, side_a]  # close order: the selector's owner last
        side_a.setup()
        side_b.setup()
        conns = [c for pair in zip(side_a.conns, side_b.conns, strict=True) for c in pair]
        for i, c in enumerate(conns):
            c.index = i  # unique keys for the per-connection tables
    else:
        pool = logged_in(cfg, 2 * cfg["pairs"], setup_timeout=60.0)
        pools, conns = [pool], pool.conns
    pair_up(conns)
    return pools, conns


def pingpong_worker(cfg: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    """One driver process: ``cfg["pairs"]`` pairs; returns counts and the histogram."""
    pools, conns = _login_pairs(cfg)
    heads = _frame_prefixes(conns, time.strftime("%Y-%m-%d %H:%M:%S"))
    tail = b"x" * (MSG_LEN - STAMP_LEN) + b'"}\n'
    peer_id = {c.index: c.peer.user_id for c in conns if c.peer is not None}

    warm_end, end, drain_deadline = measuring_window(cfg, ctl, drain=5.0)

    hist = Histogram()
    record = hist.record
    monotonic_ns = time.monotonic_ns
    delivered = total = errors = receipts = 0
    first_error = ""
    now = monotonic_ns()
    for a in conns[0::2]:
        a.send(heads[a.index] + b"%020d" % now + tail)
    finished = 0  # pairs whose last message arrived after the window closed
    cpu_start = cpu_end = 0.0  # this process's CPU time at the window's edges
    sel = conns[0].sel
    acker = Acker(cfg.get("ack", "off"))
    select_timeout = 0.01 if acker.mode == "batch" else 0.2  # the batch timer's resolution
    while finished < len(conns) // 2:
        for c in readable(sel, select_timeout):
            for m in c.receive():
                now = monotonic_ns()
                if type(m) is dict and m.get("msgid") == RECEIPT:
                    receipts += 1  # the peer acknowledged our message
                    continue
                if type(m) is not dict or m.get("msgid") != 5 or m.get("id") != peer_id[c.index]:
                    errors += 1
                    first_error = first_error or repr(m)[:200]
                    continue
                total += 1
                if not cpu_start and now >= warm_end:
                    cpu_start = time.process_time()
                if not cpu_end and now >= end:
                    cpu_end = time.process_time()
                if now >= warm_end and now < end:
                    record(now - int(m["msg"][:STAMP_LEN]))
                    delivered += 1
                if now < end:
                    c.send(acker.before_reply(c, m.get("mid", 0), now)
                           + heads[c.index] + b"%020d" % now + tail)
                else:
                    finished += 1
            if not total & 255:
                ctl.progress(total)
        acker.send_due(monotonic_ns())
        if monotonic_ns() > drain_deadline:
            break
    lost = len(conns) // 2 - finished
    for pool in pools:
        pool.close()
    return {"delivered": delivered, "total": total, "errors": errors, "lost": lost,
            "first_error": first_error, "cpu_seconds": cpu_end - cpu_start,
            "histogram": hist.to_dict(), "acks": acker.sent, "receipts": receipts}


class Acker:
    """A client's DELIVERY_ACKs (``--ack``): after ``every`` message, in a ``batch``
    (every ACK_BATCH messages or ACK_DELAY_NS after the first one not acknowledged,
    whichever comes first), or ``off`` (a login without acknowledgements)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        # per connection: (messages not acknowledged, the last one's mid, since when)
        self._pending: dict[int, tuple[int, int, int]] = {}
        self._timers: deque[tuple[int, UserConn, int]] = deque()  # (due, conn, since)

    def before_reply(self, c: UserConn, mid: int, now: int) -> bytes:
        """What to send ahead of the reply to the message ``mid``: its acknowledgement,
        a batch's, or nothing yet."""
        if self.mode == "off":
            return b""
        if self.mode == "every":
            self.sent += 1
            return ACK_FRAME % mid
        count, _, since = self._pending.get(c.index, (0, 0, now))
        if not count:
            self._timers.append((now + ACK_DELAY_NS, c, now))
        if count + 1 >= ACK_BATCH:
            self._pending[c.index] = (0, 0, 0)
            self.sent += 1
            return ACK_FRAME % mid
        self._pending[c.index] = (count + 1, mid, since)
        return b""

    def send_due(self, now: int) -> None:
        """Acknowledge the batches whose first message has waited ACK_DELAY_NS."""
        while self._timers and self._timers[0][0] <= now:
            _, c, since = self._timers.popleft()
            count, mid, started = self._pending.get(c.index, (0, 0, 0))
            if count and started == since:  # not acknowledged by count meanwhile
                self._pending[c.index] = (0, 0, 0)
                self.sent += 1
                c.send(ACK_FRAME % mid)


# --------------------------------------------------------------- orchestration
def run_target(name: str, system: Target, args: argparse.Namespace,
               run_id: str, ack: str = "off") -> dict[str, Any]:
    """Drive one listening system with ``args.procs`` processes; one result row.

    ``ack``: the users log in with acknowledged delivery and acknowledge every
    message or in batches (`Acker`), or ("off") log in without it."""
    configs = [
        {"host": system.host, "port": system.port, "pairs": n, "warmup": args.warmup,
         "seconds": args.seconds, "prefix": f"pp{run_id}{name}w{i}u", "ack": ack}
        for i, n in enumerate(split(args.pairs, args.procs)) if n
    ]
    cpu: list[float] = []
    switches: list[int] = []

    def probe() -> None:  # the server's CPU time at the measuring window's edges
        cpu.append(system.cpu_seconds())
        switches.append(process_context_switches(system.pid))

    marks = [(args.warmup, probe), (args.warmup + args.seconds, probe)] if system.pid else []
    results = run_workers(pingpong_worker, configs, label=name, marks=marks)
    hist = Histogram.merged(Histogram.from_dict(r["histogram"]) for r in results)
    delivered = sum(r["delivered"] for r in results)
    row: dict[str, Any] = {
        "target": name,
        "msgs_per_s": round(delivered / args.seconds, 1),
        "delivered": delivered,
        "errors": sum(r["errors"] for r in results),
        "lost_in_flight": sum(r["lost"] for r in results),
        "latency_us": hist.summary_us(),
        "server_cpu_us_per_msg": (round((cpu[1] - cpu[0]) * 1e6 / delivered, 1)
                                  if len(cpu) == 2 and delivered else None),
        "driver_cpu_us_per_msg": (round(sum(r["cpu_seconds"] for r in results) * 1e6
                                        / delivered, 1) if delivered else None),
        "server_switches_per_msg": (round((switches[1] - switches[0]) / delivered, 3)
                                    if len(switches) == 2 and delivered else None),
        "ack": ack,
        "acks_sent": sum(r["acks"] for r in results),
        "receipts": sum(r["receipts"] for r in results),
    }
    first_error = next((r["first_error"] for r in results if r["first_error"]), "")
    if first_error:
        row["first_error"] = first_error
    return row


class ExternalTarget:
    """A system somebody else started (a server under a profiler, nginx in front):
    ``HOST:PORT``, or ``HOST:PORT@PID`` to report that process's CPU per message."""

    def __init__(self, address: str) -> None:
        address, _, pid = address.partition("@")
        host, _, port = address.rpartition(":")
        self.host, self.port, self.pid = host or "127.0.0.1", int(port), int(pid or 0)

    def stop(self) -> None:
        pass

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)


Target = ChatServerProcess | RelayProcess | ExternalTarget


def start_target(target: str, relay: str | None, new_session: bool = True) -> Target:
    """Start ``target`` (in a session of its own unless ``new_session`` is false)."""
    if ":" in target:
        return ExternalTarget(target)
    if target == "relay":
        return RelayProcess(relay, new_session).start()
    threads, _, variant = target.partition("-")
    if threads.startswith("t") and threads[1:].isdigit() and variant in VARIANTS:
        extra = [VARIANTS[variant]] if variant else []
        return ChatServerProcess(int(threads[1:]), extra, new_session=new_session).start()
    raise SystemExit(f"unknown target {target!r}: use relay, tN (server with -t N) "
                     "or tN-noturns, tN-nomoves, tN-nodefer, tN-roundwrites (without one "
                     "reactor mechanism)")


# The reactor's mechanisms, each switched off by one option (the A/B of
# benchmarks/README.md): taking turns, gathering talkers, writing after a batch
# of handlers, writing every 32 handlers rather than after the whole round.
VARIANTS = {"": "", "noturns": "--no-turns", "nomoves": "--no-moves",
            "nodefer": "--no-deferred-writes", "roundwrites": "--write-batch=0"}


def describe(target: str) -> str:
    if ":" in target:
        return target
    if target == "relay":
        return "reference relay"
    threads, _, variant = target.partition("-")
    return f"server -t {threads[1:]}" + (f" {VARIANTS[variant]}" if variant else "")


def drive(target: str, args: argparse.Namespace, run_id: str,
          ack: str = "off") -> dict[str, Any]:
    """Start ``target``, drive it once (with ``ack``: see `run_target`), stop it; one row."""
    system = start_target(target, args.relay, not args.same_session)
    try:
        print(f"{describe(target)}: pid {system.pid}, port {system.port}", file=sys.stderr)
        if args.pause:
            input(f"  attach a profiler to pid {system.pid}, then press Enter ")
        row = run_target(target, system, args, run_id, ack)
    except (DriverError, RuntimeError) as exc:
        raise SystemExit(f"{describe(target)}: {exc}") from exc
    finally:
        system.stop()
    row["target"] = describe(target) + ("" if args.ack == "off" else f", ack {ack}")
    print(f"  {row['msgs_per_s']:,.0f} msg/s, p50 {row['latency_us']['p50']:,.0f} us",
          file=sys.stderr)
    return row


# Command line of a --busy process; the smoke test looks for it to see none is left.
SPIN = "while True: pass  # pingpong.py --busy"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every target, ``args.rounds`` times, interleaved; per target the median round."""
    run_id = f"{os.getpid() % 100000}"
    machine = machine_info()
    targets = [(t, ack) for t in args.targets.split(",") for ack in args.ack.split(",")]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {t: [] for t in targets}
    # Other tenants' load on demand, so that a busy phase can be measured
    # when it is wanted rather than when the machine happens to be in one.
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(args.busy)]
    try:
        for rnd in range(args.rounds):
            for target, ack in targets:
                runs[(target, ack)].append(drive(target, args, f"{run_id}r{rnd}{ack[0]}", ack))
                time.sleep(args.cooldown)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    rows = []
    for target in targets:
        by_rate = sorted(runs[target], key=lambda r: r["msgs_per_s"])
        row = dict(by_rate[(len(by_rate) - 1) // 2])  # the (lower) median round
        row["rounds_msgs_per_s"] = [r["msgs_per_s"] for r in runs[target]]
        row["errors"] = sum(r["errors"] for r in runs[target])
        row["lost_in_flight"] = sum(r["lost_in_flight"] for r in runs[target])
        rows.append(row)
    ref = next((r for r in rows if r["target"].startswith("reference relay")), None)
    for r in rows:
        r["ratio_vs_relay"] = (round(r["msgs_per_s"] / ref["msgs_per_s"], 3)
                               if ref and ref["msgs_per_s"] else None)
    if args.ack != "off":
        add_ack_ratios(rows)
    return {
        "benchmark": "chat ping-pong",
        "command": command_line(),
        "config": {"pairs": args.pairs, "procs": args.procs, "seconds": args.seconds,
                   "warmup": args.warmup, "rounds": args.rounds, "message_chars": MSG_LEN,
                   "busy": args.busy, "servers_in_own_session": not args.same_session,
                   "ack": args.ack},
        "machine": machine,
        "unit": {"msgs_per_s": "delivered one-to-one messages per second",
                 "latency_us": "one-way sender -> server -> recipient, microseconds"},
        "results": rows,
    }


def add_ack_ratios(rows: list[dict[str, Any]]) -> None:
    """Per system, each ack mode's rate and p99 against the same system's ``ack off``."""
    for r in rows:
        base = next((b for b in rows if b["ack"] == "off"
                     and b["target"].split(", ack")[0] == r["target"].split(", ack")[0]), None)
        if base is None or not base["msgs_per_s"]:
            continue
        r["rate_vs_ack_off"] = round(r["msgs_per_s"] / base["msgs_per_s"], 3)
        r["p99_vs_ack_off"] = round(r["latency_us"]["p99"] / base["latency_us"]["p99"], 3)


def format_table(summary: dict[str, Any]) -> str:
    cols = ("p50", "p90", "p99", "p99.9", "max")
    head = (f"| {'system':<16} | {'msgs/s':>8} | {'vs relay':>8} | "
            + " | ".join(f"{c + ' us':>9}" for c in cols)
            + " | server CPU us/msg | switches/msg | driver CPU us/msg | errors |")
    lines = [head, "|" + "|".join("-" * len(part) for part in head.split("|")[1:-1]) + "|"]
    for r in summary["results"]:
        ratio = f"{r['ratio_vs_relay']:.2f}x" if r["ratio_vs_relay"] is not None else "-"
        lat = " | ".join(f"{r['latency_us'][c]:>9,.0f}" for c in cols)
        srv, drv = r["server_cpu_us_per_msg"], r["driver_cpu_us_per_msg"]
        sw = r.get("server_switches_per_msg")
        lines.append(f"| {r['target']:<16} | {r['msgs_per_s']:>8,.0f} | {ratio:>8} | {lat} | "
                     f"{'-' if srv is None else f'{srv:.1f}':>17} | "
                     f"{'-' if sw is None else f'{sw:.2f}':>12} | "
                     f"{'-' if drv is None else f'{drv:.1f}':>17} | "
                     f"{r['errors'] + r['lost_in_flight']:>6} |")
    return "\n".join(lines)


def add_pair_options(p: argparse.ArgumentParser) -> None:
    """--pairs, --procs, --seconds, --warmup, --same-session (cluster_bench.py takes them too)."""
    p.add_argument("--pairs", type=int, default=100, help="user pairs (default 100)")
    p.add_argument("--procs", type=int, default=2, help="driver processes (default 2)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (default 2)")
    add_session_option(p)


def finish(summary: dict[str, Any], json_path: str | None) -> int:
    """Write the summary to ``json_path`` if given; exit status 1 if any row has errors
    or messages lost in flight."""
    write_summary(json_path, summary)
    bad = [r for r in summary["results"] if r["errors"] or r["lost_in_flight"]]
    return 1 if bad else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_pair_options(p)
    p.add_argument("--targets", default=DEFAULT_TARGETS,
                   help="comma list of relay, tN (server -t N), tN-noturns, tN-nomoves, "
                        "tN-nodefer, tN-roundwrites (with --no-turns, --no-moves, "
                        "--no-deferred-writes, --write-batch=0) and "
                        f"HOST:PORT[@PID] (a running server); default {DEFAULT_TARGETS}")
    p.add_argument("--relay", default=None,
                   help="path of another relay script taking a PORT argument "
                        "($CHAT_REFERENCE_RELAY, default benchmarks/relay.py)")
    p.add_argument("--rounds", type=int, default=1,
                   help="drive every target this many times, interleaved, and report each "
                        "target's median round (default 1)")
    p.add_argument("--cooldown", type=float, default=1.0, help="pause between targets")
    p.add_argument("--pause", action="store_true",
                   help="wait for Enter before driving each target (to attach py-spy)")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="keep N processes spinning on the CPUs for the whole run, a busy "
                        "machine on demand (default 0)")
    p.add_argument("--ack", default="off",
                   help="comma list of off, every, batch: users log in without acknowledged "
                        "delivery, or with it acknowledging every message, or every "
                        f"{ACK_BATCH} messages or {ACK_DELAY_NS // 1_000_000} ms (default off)")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    p.add_argument("--quick", action="store_true",
                   help="tiny run for CI: 4 pairs, 0.3 s warm-up, 1 s, relay,t1,t4,t4-noturns")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.warmup, args.seconds, args.cooldown = 4, 0.3, 1.0, 0.0
        if args.targets == DEFAULT_TARGETS:
            args.targets = "relay,t1,t4,t4-noturns"
    if args.pairs < 1 or args.procs < 1 or args.seconds <= 0 or args.rounds < 1:
        p.error("--pairs, --procs, --seconds and --rounds must be positive")
    if args.busy < 0:
        p.error("--busy must not be negative")
    if not set(args.ack.split(",")) <= set(ACK_MODES):
        p.error(f"--ack takes a comma list of {', '.join(ACK_MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = run(args)
    print(format_table(summary))
    m = summary["machine"]
    cfg = summary["config"]
    busy = f", {cfg['busy']} spinning" if cfg["busy"] else ""
    for r in summary["results"]:
        if "rate_vs_ack_off" in r:
            print(f"{r['target']}: {r['rate_vs_ack_off']:.2f}x the rate and "
                  f"{r['p99_vs_ack_off']:.2f}x the p99 of ack off; {r['acks_sent']} acks, "
                  f"{r['receipts']} receipts")
    print(f"{cfg['pairs']} pairs, {cfg['procs']} driver processes, {cfg['seconds']:g} s after "
          f"{cfg['warmup']:g} s warm-up, median of {cfg['rounds']} round(s){busy}; "
          f"nproc {m['nproc']}, Python {m['python']}, {m['uname']}, {m['date']}")
    return finish(summary, args.json)


if __name__ == "__main__":
    sys.exit(main())
