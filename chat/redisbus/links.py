"""The bus's own Redis connections: RESP written by hand, replies read by hiredis.

redis-py spends tens of microseconds of Python per message in a pipeline's
command packing and in ``PubSub.get_message`` (measured with py-spy under
the cluster benchmark); these connections spend about one.  They serve
plain ``redis://`` URLs (TCP, no TLS) when hiredis is installed; for any
other URL the bus uses redis-py (``PubSubLink``, redis-py pipelines).

- `RawPublisher`: the publisher thread's pipelines, one round trip each;
  also the address and the AUTH/SELECT a new connection sends first, which
  the loops' rounds (`chat.redisbus.rounds`) reuse for their connections.
- `Link`: what the subscriber thread needs of its connection in subscribed
  mode; `RawLink` is ours, `PubSubLink` wraps redis-py's PubSub.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import redis
from redis.connection import parse_url
from redis.exceptions import RedisError

try:
    import hiredis
except ImportError:  # pragma: no cover - the redis extra installs it
    hiredis = None  # type: ignore[assignment]

SUB_CONNECT_TIMEOUT, SUB_TIMEOUT = 1.0, 5.0  # the subscriber connection's socket timeouts
HEALTH_EVERY = 5.0  # a silent subscriber connection PINGs Redis after this long


def pack_publish(messages: list[tuple[str, bytes]]) -> bytes:
    """PUBLISH channel payload, for each (channel, payload), as RESP."""
    return b"".join([b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                     % (len(c), c, len(p), p)
                     for c, p in ((ch.encode(), pl) for ch, pl in messages)])


class RawPublisher:
    """One connection for the publisher thread's pipelines: PUBLISH commands
    written as RESP by hand, the replies read by hiredis.

    redis-py's pipeline spends some 30 us of Python per command (measured with
    py-spy under the cluster benchmark); this spends about one.  Only for
    ``redis://`` URLs (TCP, no TLS); any error closes the connection, the next
    call opens a new one.
    """

    def __init__(self, host: str, port: int, db: int, username: str | None,
                 password: str | None, timeout: float) -> None:
        self.address = (host, port)
        self.setup: list[bytes] = []  # what a new connection sends first
        if password is not None:
            self.setup.append(command(b"AUTH", *([username] if username else []), password))
        if db:
            self.setup.append(command(b"SELECT", str(db)))
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: hiredis.Reader | None = None

    @classmethod
    def for_url(cls, url: str, timeout: float) -> RawPublisher | None:
        if hiredis is None or not url.startswith("redis://"):
            return None
        params = parse_url(url)  # type: ignore[no-untyped-call]
        if "host" not in params or "connection_class" in params:
            return None
        return cls(params["host"], int(params.get("port", 6379)), int(params.get("db", 0)),
                   params.get("username"), params.get("password"), timeout)

    def publish(self, messages: list[tuple[str, bytes]]) -> list[int]:
        """Subscribers reached by each (channel, payload), in one round trip."""
        try:
            if self._sock is None:
                self._connect()
            out = pack_publish(messages)
            return [n if type(n) is int else 0 for n in self._round_trip(out, len(messages))]
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        self._sock, self._reader = open_connection(self.address, self.setup, self._timeout)

    def _round_trip(self, out: bytes, replies: int) -> list[object]:
        sock, reader = self._sock, self._reader
        assert sock is not None and reader is not None
        sock.sendall(out)
        return [read_reply(sock, reader) for _ in range(replies)]

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = self._reader = None


class Link(Protocol):
    """The subscriber thread's connection in subscribed mode."""

    def request(self, kind: str, channels: list[str]) -> None:
        """Send SUBSCRIBE (``kind`` "subscribe") or UNSUBSCRIBE for ``channels``."""

    def read(self, timeout: float, most: int) -> list[tuple[str, str, bytes]]:
        """What Redis sent, as (kind, channel, data), at most ``most``: waits up
        to ``timeout`` for the first, then takes only what is already readable."""

    def close(self) -> None: ...


class PubSubLink:
    """redis-py's PubSub as a `Link` (a URL `RawPublisher` does not handle)."""

    def __init__(self, pubsub: redis.client.PubSub) -> None:
        self._pubsub = pubsub

    def request(self, kind: str, channels: list[str]) -> None:
        if kind == "subscribe":
            self._pubsub.subscribe(*channels)
        else:
            self._pubsub.unsubscribe(*channels)  # type: ignore[no-untyped-call]

    def read(self, timeout: float, most: int) -> list[tuple[str, str, bytes]]:
        got: list[tuple[str, str, bytes]] = []
        msg = self._pubsub.get_message(timeout=timeout)
        while msg is not None:
            got.append((decode(msg["type"]), decode(msg["channel"]), msg["data"]))
            if len(got) >= most:
                break
            msg = self._pubsub.get_message(timeout=0)
        return got

    def close(self) -> None:
        try:
            self._pubsub.reset()
        except (RedisError, OSError):
            pass


class RawLink:
    """The subscriber's own connection: commands written as RESP, replies read by
    hiredis, everything readable taken in one ``recv`` (redis-py's
    ``get_message`` spends tens of microseconds of Python per message).

    Liveness as redis-py's ``health_check_interval`` gives it: after
    ``HEALTH_EVERY`` s without a byte a PING goes out, and no answer within
    ``SUB_TIMEOUT`` s more drops the connection (TCP keepalive besides).
    """

    def __init__(self, address: tuple[str, int], setup: list[bytes]) -> None:
        sock, self._reader = open_connection(address, setup, SUB_CONNECT_TIMEOUT)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.settimeout(SUB_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._heard = time.monotonic()
        self._pinged = 0.0

    def request(self, kind: str, channels: list[str]) -> None:
        self._sock.sendall(command(b"SUBSCRIBE" if kind == "subscribe" else b"UNSUBSCRIBE",
                                    *channels))

    def read(self, timeout: float, most: int) -> list[tuple[str, str, bytes]]:
        got = self._parsed(most)
        if got:
            return got
        now = time.monotonic()
        if self._pinged:
            if now - self._pinged > SUB_TIMEOUT:
                raise ConnectionError("Redis did not answer a PING")
        elif now - self._heard > HEALTH_EVERY:
            self._sock.sendall(command(b"PING"))
            self._pinged = now
        self._sock.settimeout(timeout)
        try:
            self._recv()
        except TimeoutError:
            return []
        finally:
            self._sock.settimeout(SUB_TIMEOUT)
        return self._parsed(most)

    def _recv(self) -> None:
        data = self._sock.recv(262144)
        if not data:
            raise ConnectionError("Redis closed the connection")
        self._reader.feed(data)
        self._heard = time.monotonic()
        self._pinged = 0.0

    def _parsed(self, most: int) -> list[tuple[str, str, bytes]]:
        got: list[tuple[str, str, bytes]] = []
        gets = self._reader.gets
        while len(got) < most and (reply := gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                raise RedisError(str(reply))
            if type(reply) is list and len(reply) == 3:
                kind, channel, data = reply
                got.append((kind.decode(), channel.decode(),
                            data if type(data) is bytes else b""))
            # else a PING's answer: nothing to do, hearing it was the point
        return got

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def receive(sock: socket.socket) -> bytes | None:
    """What a non-blocking ``sock`` has (up to 256 KiB), or None if nothing yet;
    raises OSError (ConnectionError at EOF) if the connection is gone."""
    try:
        data = sock.recv(262144)
    except (BlockingIOError, InterruptedError):
        return None
    if not data:
        raise ConnectionError("Redis closed the connection")
    return data


def read_reply(sock: socket.socket, reader: Any) -> object:
    """The next reply on a blocking ``sock`` (reading as needed); an error reply
    raises RedisError, a closed connection ConnectionError."""
    while (reply := reader.gets()) is False:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("Redis closed the connection")
        reader.feed(data)
    if isinstance(reply, hiredis.ReplyError):
        raise RedisError(str(reply))
    return reply


def open_connection(address: tuple[str, int], setup: list[bytes],
                    timeout: float) -> tuple[socket.socket, Any]:
    """A connection to Redis (TCP_NODELAY, ``timeout`` on its socket) whose
    ``setup`` commands (AUTH, SELECT) were sent and answered, and the hiredis
    reader that read the answers."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = hiredis.Reader()
        if setup:
            sock.sendall(b"".join(setup))
            for _ in setup:
                read_reply(sock, reader)
    except BaseException:
        sock.close()
        raise
    return sock, reader


def connect_off_loop(run_after: Callable[[float, Callable[[], None]], object],
                     address: tuple[str, int], setup: list[bytes], timeout: float,
                     opened: Callable[[socket.socket, Any], None],
                     failed: Callable[[BaseException], None], name: str) -> None:
    """``open_connection`` on a thread of its own, then ``opened(sock, reader)``
    or ``failed(exc)`` in the loop's thread (``run_after`` is the loop's): an
    address that does not answer (a host gone, not a refused port) would
    hold a loop up for the connect timeout."""
    def connect() -> None:
        try:
            sock, reader = open_connection(address, setup, timeout)
        except (OSError, RedisError) as exc:  # cleared at the block's end: bound now
            run_after(0, partial(failed, exc))
            return
        run_after(0, partial(opened, sock, reader))
    threading.Thread(target=connect, name=name, daemon=True).start()


def command(*args: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
