"""Every Prometheus metric of a chat server process, in one place.

Theory of operation
-------------------
All metrics live on prometheus_client's default ``REGISTRY``, which also
carries the library's process collector (RSS, open fds, CPU seconds).  The
HTTP side that serves them is ``chat/monitor.py``; code elsewhere updates
them with one short line at its boundary (a request handled, a message
handed over, a database call, a publish).

Two kinds of metric objects, by cost:

* prometheus_client's own ``Counter``/``Gauge``/``Histogram`` for everything
  off the per-message path (a database call, a Redis publish, a refused
  connection).  Each update takes a lock: about 0.3 µs for a counter and
  0.7 µs for a histogram here, nothing next to the call it measures.
* For the per-message path (requests, deliveries and their latency) that is
  too much: the whole server spends about 9 µs of CPU per ping-pong message,
  and two locked updates would be 10% of it.  :class:`ThreadCounter` and
  :class:`ThreadHistogram` keep one plain dict per thread, written only by
  that thread and without a lock (about 0.1 µs), and add the threads up
  when Prometheus scrapes.  A scrape may catch a histogram between its
  bucket and its sum; a counter never goes back.

Loop metrics come from a round observer (``EventLoop.set_round_observer``),
one :class:`LoopStats` per loop, called by that loop's thread only: the
reactor knows nothing of this module, and a loop without an observer pays
nothing.

Label values are always from small fixed sets (msgid names, errno numbers,
reasons, store method names, loop names), never from client input.
"""

from __future__ import annotations

import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from chat.protocol import MsgId

# Latency buckets from 50 µs (a message relayed in one round) to 10 s (a stalled database).
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EVENTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


# -- lock-free per-thread metrics ------------------------------------------------

class _Shards:
    """One dict per thread in ``local.shard``, registered so a scrape can read them all.

    Hot callers read ``local.shard`` themselves and call :meth:`new` only
    when it is missing: a method call more per update would double its cost.
    """

    def __init__(self) -> None:
        self.local = threading.local()
        self._lock = threading.Lock()
        self._all: list[dict[Any, Any]] = []

    def new(self) -> dict[Any, Any]:
        shard: dict[Any, Any] = {}
        self.local.shard = shard
        with self._lock:
            self._all.append(shard)  # kept after the thread ends: counters never go back
        return shard

    def snapshot(self) -> list[dict[Any, Any]]:
        with self._lock:
            return list(self._all)


class ThreadCounter:
    """A labelled counter each thread increments without a lock; see the module docstring.

    ``key`` is whatever ``labels_of`` turns into the label values; it must be
    hashable and from a small set.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 labels_of: Callable[[Any], tuple[str, ...]],
                 also: Callable[[], dict[Hashable, int]] | None = None) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames, self.labels_of = labelnames, labels_of
        self._also = also  # counts kept elsewhere, added at scrape time
        self._shards = _Shards()
        self._local = self._shards.local

    def inc(self, key: Hashable, amount: int = 1) -> None:
        """Count ``amount`` for ``key``. Safe from any thread."""
        try:
            self._local.shard[key] += amount
        except AttributeError:
            self._shards.new()[key] = amount
        except KeyError:
            self._local.shard[key] = amount

    def totals(self) -> dict[Hashable, int]:
        out: dict[Hashable, int] = dict(self._also()) if self._also is not None else {}
        for shard in self._shards.snapshot():
            for key, n in shard.copy().items():  # dict.copy holds the GIL throughout
                out[key] = out.get(key, 0) + n
        return out

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, n in sorted(self.totals().items(), key=lambda kv: str(kv[0])):
            family.add_metric(self.labels_of(key), n)
        return family


class LocalHistogram:
    """Buckets and a sum written by one thread only; read (slightly stale) by scrapes."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_to(self, counts: list[int], total: list[float]) -> None:
        for i, n in enumerate(list(self.counts)):
            counts[i] += n
        total[0] += self.sum


def _add_histogram(family: HistogramMetricFamily, labels: list[str],
                   bounds: tuple[float, ...], parts: Iterable[LocalHistogram]) -> None:
    counts = [0] * (len(bounds) + 1)
    total = [0.0]
    for part in parts:
        part.add_to(counts, total)
    cumulative, buckets = 0, []
    for bound, n in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        cumulative += n
        buckets.append((bound, cumulative))
    family.add_metric(labels, buckets, total[0])


class ThreadHistogram:
    """A histogram with one label, observed by each thread without a lock."""

    def __init__(self, name: str, documentation: str, labelname: str,
                 bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.documentation, self.labelname = name, documentation, labelname
        self.bounds = bounds
        self._shards = _Shards()
        self.local = self._shards.local  # ``local.shard``: label -> this thread's LocalHistogram

    def observe(self, label: str, value: float) -> None:
        """Safe from any thread."""
        self.histogram(label).observe(value)

    def histogram(self, label: str) -> LocalHistogram:
        """This thread's histogram of ``label``."""
        try:
            shard = self.local.shard
        except AttributeError:
            shard = self._shards.new()
        hist = shard.get(label)
        if hist is None:
            hist = shard[label] = LocalHistogram(self.bounds)
        return hist  # type: ignore[no-any-return]

    def count(self) -> int:
        """Observations over every label and thread."""
        return sum(sum(list(h.counts)) for shard in self._shards.snapshot()
                   for h in shard.copy().values())

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.labelname])
        by_label: dict[str, list[LocalHistogram]] = {}
        for shard in self._shards.snapshot():
            for label, hist in shard.copy().items():
                by_label.setdefault(label, []).append(hist)
        for label in sorted(by_label):
            _add_histogram(family, [label], self.bounds, by_label[label])
        return family


# -- event loops -----------------------------------------------------------------

class LoopStats:
    """Round observer of one loop (``EventLoop.set_round_observer``); its thread only."""

    __slots__ = ("busy", "events", "lag")

    def __init__(self) -> None:
        self.events = LocalHistogram(EVENTS_BUCKETS)
        self.lag = LocalHistogram(LATENCY_BUCKETS)
        self.busy = 0.0

    def __call__(self, events: int, lag: float, busy: float) -> None:
        # LocalHistogram.observe inlined: called once per round, measured at 0.56 µs
        # with the two calls and 0.3 µs without.
        hist = self.events
        hist.counts[bisect_left(EVENTS_BUCKETS, events)] += 1
        hist.sum += events
        hist = self.lag
        hist.counts[bisect_left(LATENCY_BUCKETS, lag)] += 1
        hist.sum += lag
        self.busy += busy


class _LoopCollector(Collector):
    def __init__(self) -> None:
        self.loops: dict[str, LoopStats] = {}

    def collect(self) -> Iterator[Metric]:
        events = HistogramMetricFamily(
            "chat_loop_ready_events", "Ready sockets handled per loop round", labels=["loop"])
        lag = HistogramMetricFamily(
            "chat_loop_lag_seconds",
            "Time from select() returning to the round's handlers starting", labels=["loop"])
        busy = CounterMetricFamily(
            "chat_loop_busy_seconds", "Time spent handling rounds (not waiting in select)",
            labels=["loop"])
        for name, stats in sorted(self.loops.copy().items()):
            _add_histogram(events, [name], EVENTS_BUCKETS, [stats.events])
            _add_histogram(lag, [name], LATENCY_BUCKETS, [stats.lag])
            busy.add_metric([name], stats.busy)
        yield from (events, lag, busy)


_loops = _LoopCollector()


def loop_observer(name: str) -> LoopStats:
    """A new observer for the loop called ``name`` (e.g. ``io0``); its metrics carry it."""
    stats = _loops.loops[name] = LoopStats()
    return stats


# -- the chat server's metrics ---------------------------------------------------

_MSGID_NAMES = {int(m): m.name for m in MsgId}


def _msgid_label(msgid: Any) -> tuple[str]:
    return (_MSGID_NAMES.get(msgid, "unknown") if type(msgid) is int else "unknown",)


REQUESTS = ThreadCounter("chat_requests", "Requests received, by msgid",
                         ("msgid",), _msgid_label)
REQUEST_ERRORS = Counter("chat_request_errors", "Requests refused, by msgid and errno",
                         ["msgid", "errno"])
DELIVERY_LATENCY = ThreadHistogram(
    "chat_delivery_latency_seconds",
    "From the read of the sender's frame to the recipient's bytes handed to its connection",
    "kind")
DELIVERED = ThreadCounter(
    "chat_messages_delivered",
    "Chat messages handed on, by path: live (a connection here), bus (another server "
    "took it), from_bus (another server's message to a connection here), stored (offline)",
    ("path",), lambda path: (path,),
    also=lambda: {"live": DELIVERY_LATENCY.count()})  # each live delivery is timed
BACKLOG_DELIVERED = Counter("chat_backlog_delivered",
                            "Stored offline messages sent at login or on a flush")
CONNECTIONS_REFUSED = Counter("chat_connections_refused",
                              "Connections refused at accept, by reason", ["reason"])
CONNECTIONS_DROPPED = Counter("chat_connections_dropped",
                              "Connections the server closed, by reason", ["reason"])
DB_CALL = Histogram("chat_db_call_seconds", "Store calls, by operation (Store method)",
                    ["operation"], buckets=LATENCY_BUCKETS)
DB_POOL_IN_USE = Gauge("chat_db_pool_connections_in_use", "Pooled connections lent out")
DB_POOL_WAIT = Histogram("chat_db_pool_wait_seconds",
                         "Time to get a connection from the pool (including connecting)",
                         buckets=LATENCY_BUCKETS)
REDIS_PUBLISH = Histogram("chat_redis_publish_seconds",
                          "Redis PUBLISH round trips (a pipeline counts once)",
                          buckets=LATENCY_BUCKETS)
# Registered by watch_redis only: a server without Redis has no such series.
REDIS_UP = Gauge("chat_redis_up", "1 while every Redis subscribing connection is up",
                 registry=None)
USERS_ONLINE = Gauge("chat_users_online", "Users logged in on this server")

ConnectionCounts = Callable[[], dict[tuple[str, str], int]]


class _ConnectionCollector(Collector):
    """``chat_connections_open{transport,dialect}``, counted at scrape time from the sources."""

    def __init__(self) -> None:
        self.sources: list[ConnectionCounts] = []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("chat_connections_open", "Open client connections",
                                   labels=["transport", "dialect"])
        totals: dict[tuple[str, str], int] = {}
        for source in list(self.sources):
            for key, n in source().items():
                totals[key] = totals.get(key, 0) + n
        for (transport, dialect), n in sorted(totals.items()):
            family.add_metric([transport, dialect], n)
        yield family


class _ThreadMetrics(Collector):
    def collect(self) -> Iterator[Metric]:
        for metric in (REQUESTS, DELIVERED, DELIVERY_LATENCY):
            yield metric.collect()


_connections = _ConnectionCollector()


def watch_redis(connected: Callable[[], bool]) -> None:
    """Export ``chat_redis_up`` from ``connected()``, read at each scrape."""
    REDIS_UP.set_function(lambda: 1 if connected() else 0)
    if REDIS_UP not in _registered:  # a second server in one process reuses it
        REGISTRY.register(REDIS_UP)
        _registered.add(REDIS_UP)


_registered: set[Collector] = set()


def count_connections(source: ConnectionCounts) -> None:
    """Add a source of open connections by (transport, dialect), called at each scrape."""
    _connections.sources.append(source)


for _collector in (_ThreadMetrics(), _loops, _connections):
    REGISTRY.register(_collector)


# -- one-line helpers for the hot spots ------------------------------------------

_delivery_local = DELIVERY_LATENCY.local
_monotonic = time.monotonic


def delivered_live(kind: str, read_at: float) -> None:
    """A chat message read at ``read_at`` (monotonic) was handed to a connection here.

    Counted as ``chat_messages_delivered_total{path="live"}`` through the
    latency histogram's count.  The per-message hot spot: its calls inlined.
    """
    latency = _monotonic() - read_at
    try:
        hist = _delivery_local.shard[kind]
    except (AttributeError, KeyError):
        hist = DELIVERY_LATENCY.histogram(kind)
    if latency <= _FIRST_BOUND:  # the usual one, handed over in the read's own round
        hist.counts[0] += 1
    else:
        hist.counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
    hist.sum += latency


_FIRST_BOUND = LATENCY_BUCKETS[0]


def store_operation() -> str:
    """The Store method that called ``ConnectionPool.run``: the first caller up the
    stack whose name is not private (``_read``/``_write`` are helpers of the method)."""
    frame = sys._getframe(2)
    for _ in range(3):
        if frame.f_back is None or not frame.f_code.co_name.startswith("_"):
            break
        frame = frame.f_back
    return frame.f_code.co_name


def request_failed(msgid: Any, errno: int) -> None:
    """A request (or a frame that was none, ``msgid`` None) got a non-zero errno."""
    REQUEST_ERRORS.labels(_msgid_label(msgid)[0], str(int(errno))).inc()
