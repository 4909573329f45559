"""Limits that keep one client from hurting the others.

`Limits` gathers the configurable numbers (options of ``python -m chat.server``).
`TokenBucket` meters the requests of one connection; it is touched only by
that connection's loop thread, so it needs no lock.  `FailureThrottle` counts
failed logins per account and per address across all loops, under a lock held
for dictionary operations only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _limit(default: float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Limits:
    """Each field is a server option: ``max_msg_len`` is ``--max-msg-len``/``CHAT_MAX_MSG_LEN``."""

    max_frame: int = _limit(64 * 1024, "largest request frame in bytes")
    max_msg_len: int = _limit(32 * 1024, "longest chat text in characters")
    max_offline: int = _limit(10_000, "offline messages kept per user; the oldest go first")
    max_offline_bytes: int = _limit(64 * 1024 * 1024, "bytes of offline messages kept per "
                                    "user; the oldest go first")
    login_batch: int = _limit(100, "stored messages in a login ack at most; the rest follow "
                              "as the client reads")
    ack_window: int = _limit(256, "messages delivered and not yet acknowledged on one "
                             "connection at most (logins with \"ack\": true)")
    # A person never comes near these; they stop one connection from taking a
    # large share of a process (about 75,000 requests/s on 2 cores, measured).
    rate: float = _limit(2000.0, "requests per second per connection, sustained")
    burst: int = _limit(2000, "requests a connection may send at once; a connection "
                        "refused this many times in a row is closed")
    max_connections: int = _limit(20_000, "connections per process; more are refused")
    login_timeout: float = _limit(60.0, "seconds a connection may stay without logging in")
    idle_timeout: float = _limit(300.0, "seconds without a complete frame before a connection is "
                                 "closed; an empty line is a keep-alive")
    account_failures: int = _limit(5, "failed logins of one account from one address per "
                                   "window before that address's logins to it are refused")
    address_failures: int = _limit(50, "failed logins from one address per window (behind "
                                   "nginx, use --proxy-protocol to see clients' addresses)")
    login_window: float = _limit(60.0, "seconds the failed logins are remembered")
    register_rate: float = _limit(0.5, "registrations per second per client address, "
                                  "sustained")
    register_burst: int = _limit(20, "registrations a client address may make at once")
    hash_workers: int = _limit(2, "threads that hash passwords (register, login), off "
                               "the loop threads; 0 hashes on the loop threads")
    hash_queue: int = _limit(64, "password hashes that may wait for a worker; beyond, "
                             "a login or registration gets errno 9 \"server busy\"")
    log_interval: float = _limit(10.0, "seconds over which repeated warnings of one kind "
                                 "are summarised in one line")
    high_water_mark: int = _limit(4 * 1024 * 1024, "bytes queued for a client before it "
                                  "is watched as a slow reader")
    slow_grace: float = _limit(10.0, "seconds a client may stay over the high-water mark "
                               "before it is dropped")
    max_backlog: int = _limit(64 * 1024 * 1024, "bytes queued for a client beyond which it "
                              "is dropped at once")


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; each request takes one.

    ``take`` gets the time from its caller, which reads the clock once per
    read (a read often carries many requests), and refills on the way: one
    call per request, the usual read carrying one.
    """

    __slots__ = ("_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self._last) * self.rate
        if tokens > self.burst:  # not min(): a call less
            tokens = self.burst
        self._last = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class AddressBuckets:
    """A `TokenBucket` per key (a client address), shared by all loops under a lock.

    Memory is bounded: past ``max_keys`` the buckets that have refilled
    completely are forgotten (a full bucket is what a new key gets anyway).
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[object, TokenBucket] = {}

    def take(self, key: object) -> bool:
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._forget_full(now)
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items()
                    if b.tokens + (now - b._last) * b.rate >= b.burst]:
            del self._buckets[key]


class FailureThrottle:
    """Refuses keys (an account, an address) that failed ``limit`` times in ``window`` s."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[object, list[float]] = {}

    def blocked(self, key: object) -> bool:
        cutoff = self._clock() - self.window
        with self._lock:
            times = self._failures.get(key)
            if not times:
                return False
            times[:] = [t for t in times if t > cutoff]
            if not times:
                del self._failures[key]
            return len(times) >= self.limit

    def failed(self, key: object) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 100_000:
                self._forget_old(now - self.window)
            self._failures.setdefault(key, []).append(now)

    def succeeded(self, key: object) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _forget_old(self, cutoff: float) -> None:
        # Bounded memory under a spray of distinct keys.
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= cutoff]:
            del self._failures[key]
