"""benchmarks/plot.py: measured points on the axes, and every committed figure has its data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
from plot import measured_log_axis  # noqa: E402


def test_a_log_axis_is_labelled_with_the_measured_points() -> None:
    fig, ax = plt.subplots()
    try:
        ax.plot([2, 20, 200, 2000], [1, 2, 3, 4])
        measured_log_axis(ax, [2, 20, 200, 2000])
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["2", "20", "200", "2,000"]
        assert ax.xaxis.get_minor_locator().tick_values(1, 3000) == []
    finally:
        plt.close(fig)


def test_every_committed_figure_is_drawn_from_committed_results(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "plot.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    drawn = {p.name for p in tmp_path.glob("*.png")}
    committed = {p.name for p in (BENCH / "results").glob("*.png")}
    assert committed == drawn


def test_tables_print_whole_messages_per_second() -> None:
    import load
    import store_bench

    row = {"target": "server -t 1", "msgs_per_s": 22610.8, "errors": 0,
           "latency_us": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0, "max": 5.0}}
    assert "| server -t 1 | 22,611 |" in load.table([row])
    line = store_bench.format_row({
        "backend": "sqlite", "threads": 1, "scrypt_log2n": 10,
        "login": {"logins_per_s": 994.4},
        "offline": {"store_per_s": 12345.6, "messages": 10, "store_seconds": 0.1,
                    "deliver_per_s": 54321.5}})
    assert "994" in line and "12,346" in line and "54,322" in line and ".4" not in line
