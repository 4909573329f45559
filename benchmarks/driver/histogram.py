"""An HDR-style latency histogram: log buckets with linear sub-buckets.

A value ``v`` (an integer, nanoseconds here) below ``2**SUB_BITS`` has a bucket
of its own.  Above that, with ``e = v.bit_length() - SUB_BITS``, ``v`` falls in
bucket ``e * HALF + (v >> e)`` (``HALF = 2**(SUB_BITS - 1)``): the top
``SUB_BITS`` bits of the value pick the bucket, so every bucket is narrower
than 1/HALF of its values (under 1% with SUB_BITS = 8).  Recording is a
``bit_length``, a shift and a list increment; merging is adding lists, so
driver processes each keep one and the parent sums them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SUB_BITS = 8
HALF = 1 << (SUB_BITS - 1)
_SIZE = (64 - SUB_BITS) * HALF + (1 << SUB_BITS)


def bucket_of(value: int) -> int:
    e = value.bit_length() - SUB_BITS
    return value if e <= 0 else e * HALF + (value >> e)


def bucket_high(index: int) -> int:
    """The highest value that falls in bucket ``index``."""
    if index < (1 << SUB_BITS):
        return index
    e, top = divmod(index - HALF, HALF)
    return ((top + HALF + 1) << e) - 1


class Histogram:
    """Counts of integer values (ns) in log buckets; exact count, sum, min and max."""

    __slots__ = ("counts", "max", "min", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * _SIZE
        self.n = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        e = value.bit_length() - SUB_BITS
        self.counts[value if e <= 0 else e * HALF + (value >> e)] += 1
        if value > self.max:
            self.max = value
        if self.n == 0 or value < self.min:
            self.min = value
        self.n += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        if other.n == 0:
            return
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.min = other.min if self.n == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.n += other.n
        self.total += other.total

    def percentile(self, p: float) -> int:
        """The value at or below which ``p`` percent of the values fall (bucket top, capped
        at the exact max); 0 when empty."""
        if self.n == 0:
            return 0
        rank = max(1, -(-self.n * p // 100))  # ceil, at least the first value
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(bucket_high(index), self.max)
        return self.max

    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    # -- transport between processes ----------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "sub_bits": SUB_BITS,
            "n": self.n, "total": self.total, "min": self.min, "max": self.max,
            "buckets": {str(i): c for i, c in enumerate(self.counts) if c},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        if data.get("sub_bits") != SUB_BITS:
            raise ValueError("histogram made with another SUB_BITS")
        h = cls()
        h.n, h.total, h.min, h.max = data["n"], data["total"], data["min"], data["max"]
        for index, count in data["buckets"].items():
            h.counts[int(index)] = count
        return h

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    def summary_us(self, percentiles: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
        """Percentiles, mean and max in microseconds, keyed ``p50``, ``p99.9``, ``max``..."""
        out = {f"p{p:g}": round(self.percentile(p) / 1000, 1) for p in percentiles}
        out["mean"] = round(self.mean() / 1000, 1)
        out["max"] = round(self.max / 1000, 1)
        return out
