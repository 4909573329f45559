"""PNG plots of throughput and p99 latency from the load benchmarks' JSON results.

    .venv/bin/python benchmarks/plot.py [--results benchmarks/results] [--out DIR]

Reads, from the results directory, whatever of these exists and draws one
figure per file (two panels: throughput on the left, p99 latency on the
right), written next to it unless ``--out`` says otherwise:

- ``sweep_*.json`` (``load.py sweep``): against the number of clients at one
  ``-t``, and against ``-t`` at one number of clients;
  -> ``sweep_*_clients.png`` and ``sweep_*_threads.png``;
- ``fanout.json`` (``load.py fanout``): deliveries/s and p99 against group
  size, one line per ``-t`` -> ``fanout.png``;
- ``compare.json`` (``load.py compare``): bars per system for ping-pong and
  flood, each labelled with its ratio to the relay -> ``compare.png``;
- ``pingpong*.json`` (``pingpong.py``): bars per system, each labelled with
  its ratio to the relay of the same run -> ``pingpong*.png``.

An axis over a few measured values spread by factors of ten (clients 2, 20,
200, 2,000) is logarithmic and labelled with exactly those values, so a
reader reads the measured points off the axis, not powers of ten.  Every
figure says in its footer which run it shows (date, command).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RATE_KEYS = ("deliveries_per_s", "msgs_per_s", "logins_per_s")


def _rate(row: dict[str, Any]) -> float:
    return float(next(row[k] for k in RATE_KEYS if k in row))


def _footer(fig: Any, summary: dict[str, Any]) -> None:
    m = summary.get("machine", {})
    fig.text(0.01, 0.01, f"{m.get('nproc', '?')} cores, Python {m.get('python', '?')}, "
             f"{m.get('date', '')}; {summary.get('benchmark', '')}", fontsize=7, color="gray")


def measured_log_axis(ax: Any, xs: list[float]) -> None:
    """A log x axis whose ticks are the measured points, written out (2, 20, 2,000)."""
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _ratio_labels(ax: Any, xs: range, rates: list[float], ratios: list[float | None]) -> None:
    """Each bar labelled with its throughput ratio to the relay of the same run."""
    ax.margins(y=0.12)  # room above the tallest bar for its label
    for x, rate, ratio in zip(xs, rates, ratios, strict=True):
        text = f"{rate:,.0f}" if ratio is None else f"{ratio:.2f}x"
        ax.annotate(text, (x, rate), ha="center", va="bottom", fontsize=8)


def _two_panels(title: str) -> tuple[Any, Any, Any]:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    fig.suptitle(title)
    left.set_ylabel("throughput (messages/s)")
    right.set_ylabel("p99 latency (ms)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return fig, left, right


def _save(fig: Any, path: str) -> str:
    for ax in fig.axes:  # after the data, so the top of the axis follows it
        ax.set_ylim(bottom=0)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_sweep(summary: dict[str, Any], stem: str) -> list[str]:
    rows = summary["results"]
    kind = rows[0].get("mode", "pingpong") if rows else "pingpong"
    out = []
    for axis, xkey, label in (("clients", "clients", "clients (connections)"),
                              ("threads", "threads", "server -t (sub-reactor threads)")):
        part = sorted((r for r in rows if r.get("sweep") == axis), key=lambda r: r[xkey])
        if not part:
            continue
        fixed = (f"-t {part[0]['threads']}" if axis == "clients"
                 else f"{part[0]['clients']} clients")
        fig, left, right = _two_panels(f"chat {kind}: against {axis} ({fixed})")
        xs = [r[xkey] for r in part]
        left.plot(xs, [_rate(r) for r in part], "o-", label="delivered/s")
        right.plot(xs, [r["latency_us"]["p99"] / 1000 for r in part], "o-", color="C3")
        for ax in (left, right):
            ax.set_xlabel(label)
            if axis == "clients":
                measured_log_axis(ax, xs)
            else:
                ax.set_xticks(xs)
        _footer(fig, summary)
        out.append(_save(fig, f"{stem}_{axis}.png"))
    return out


def plot_fanout(summary: dict[str, Any], stem: str) -> list[str]:
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in summary["results"]:
        lines[r["target"]].append(r)
    fig, left, right = _two_panels("group fan-out: one sender per group")
    left.set_ylabel("deliveries/s at the members")
    for target, part in sorted(lines.items()):
        part.sort(key=lambda r: r["group_size"])
        xs = [r["group_size"] for r in part]
        left.plot(xs, [_rate(r) for r in part], "o-", label=target)
        right.plot(xs, [r["latency_us"]["p99"] / 1000 for r in part], "o-", label=target)
    left.axhline(50_000, color="gray", ls="--", lw=1, label="target 50,000/s")
    sizes = sorted({r["group_size"] for part in lines.values() for r in part})
    for ax in (left, right):
        measured_log_axis(ax, sizes)
        ax.set_xlabel("group size (members, sender included)")
        ax.legend(fontsize=8)
    _footer(fig, summary)
    return [_save(fig, f"{stem}.png")]


def plot_compare(summary: dict[str, Any], stem: str) -> list[str]:
    date = summary.get("machine", {}).get("date", "")
    fig, left, right = _two_panels(f"relay vs server -t 1 / -t 4, and 1 vs 2 servers ({date})")
    groups = [("ping-pong", summary.get("pingpong", []), "target"),
              ("flood", summary.get("flood", []), "target"),
              ("cluster ping-pong", summary.get("cluster", []), "scenario")]
    labels, rates, p99s, colors, ratios = [], [], [], [], []
    for i, (name, rows, key) in enumerate(groups):
        base = next((_rate(r) for r in rows if "relay" in str(r[key])), None)
        if name == "cluster ping-pong":
            base = next((_rate(r) for r in rows if r[key] == "one"), None)
        for r in rows:
            labels.append(f"{name}\n{r[key]}".replace("server ", "").replace("reference ", ""))
            rates.append(_rate(r))
            ratios.append(None if base is None else _rate(r) / base)
            p99s.append(r["latency_us"]["p99"] / 1000)
            colors.append(f"C{i}")
    xs = range(len(labels))
    left.bar(xs, rates, color=colors)
    right.bar(xs, p99s, color=colors)
    left.set_title("labels: throughput / the relay's (cluster: / one server's)", fontsize=8)
    _ratio_labels(left, xs, rates, ratios)
    for ax in (left, right):
        ax.set_xticks(list(xs), labels, fontsize=7, rotation=45, ha="right")
    _footer(fig, summary)
    return [_save(fig, f"{stem}.png")]


def plot_pingpong(summary: dict[str, Any], stem: str) -> list[str]:
    rows = summary["results"]
    config = summary.get("config", {})
    busy = config.get("busy", 0)
    load = "quiet host" if not busy else f"{busy} process(es) spinning on the cores"
    fig, left, right = _two_panels(
        f"chat ping-pong, {config.get('pairs', '?')} pairs, {load}: "
        f"median of {config.get('rounds', '?')} rounds")
    base = next((_rate(r) for r in rows if "relay" in r["target"]), None)
    labels = [r["target"].replace("server ", "").replace("reference ", "") for r in rows]
    rates = [_rate(r) for r in rows]
    xs = range(len(rows))
    left.bar(xs, rates, color=[f"C{i}" for i in xs])
    right.bar(xs, [r["latency_us"]["p99"] / 1000 for r in rows], color=[f"C{i}" for i in xs])
    left.set_title("labels: throughput / the relay's in the same run", fontsize=8)
    _ratio_labels(left, xs, rates, [None if base is None else rate / base for rate in rates])
    for ax in (left, right):
        ax.set_xticks(list(xs), labels, fontsize=8, rotation=20, ha="right")
    _footer(fig, summary)
    return [_save(fig, f"{stem}.png")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=os.path.join(HERE, "results"),
                   help="directory of the JSON results (default benchmarks/results)")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: --results)")
    args = p.parse_args(argv)
    out_dir = args.out or args.results
    os.makedirs(out_dir, exist_ok=True)
    made = []
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        name = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            summary = json.load(f)
        stem = os.path.join(out_dir, name)
        if name.startswith("sweep"):
            made += plot_sweep(summary, stem)
        elif name == "fanout":
            made += plot_fanout(summary, stem)
        elif name == "compare":
            made += plot_compare(summary, stem)
        elif name.startswith("pingpong"):
            made += plot_pingpong(summary, stem)
    for path in made:
        print(os.path.relpath(path))
    if not made:
        print("no sweep_*.json, fanout.json, compare.json or pingpong*.json found")
    return 0 if made else 1


if __name__ == "__main__":
    raise SystemExit(main())
