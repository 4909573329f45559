"""The home loop's subscriptions: chat from other servers read by a reactor loop.

Why
---
With one subscriber thread, a message from another server woke two threads
here: the subscriber read it and posted it to the recipient's loop, which
woke to write it.  One loop of the pool, the *home loop*, subscribes the
channel of every user who logs in (on any loop) on a connection of its own
(`LoopSubscriptions`) and watches that connection as it watches its
clients.  The connections that keep handing chat to the bus are moved
there by the reactor's placement (``talks_to_loop``), so for them the
message is read and written in one thread and one wake-up; for the others
the router posts it on to their loop, as the subscriber thread did.  One
loop rather than each loop its own users: under the loops' turn only one
runs at a time, and a message that crossed two servers waited for a turn
hand-over among the loops on each (users on two servers at ``-t 4`` got
0.37x the rate of users on one that way, 0.68x with one home loop;
benchmarks/README.md).

The guarantees of the subscriber thread (``chat.redisbus``) hold here too:

- ``subscribe`` returns once Redis confirmed the subscription, so a login's
  fetch of its stored messages cannot miss one that a sender stored because
  nobody took it (the sender's ``flush`` now reaches us).  A login on
  another loop waits for the home loop to read the confirmation; a login
  on the home loop, the only reader of the connection, reads it itself, and
  what else it reads is kept, in order, and handled once the login's
  handler returned, before anything read later.  Handled inside the
  login, a ``flush`` for the user would send its stored messages before
  the login ack, and the login would send them again (the soak found
  that).
- ``unsubscribe`` (from any thread: the releasing thread, shutdown) returns
  once Redis confirmed it, and the loop handles replies in order, so every
  message Redis sent for the user before that was handled first (stored,
  when the user has left).
- A lost connection loses its subscriptions: the loop connects again with
  backoff and subscribes its users again; a confirmation that nobody waits
  for flushes its user, since others stored messages for it meanwhile.
- A silent connection PINGs Redis after ``HEALTH_EVERY`` seconds and is
  dropped when no answer came ``SUB_TIMEOUT`` seconds later.
"""

from __future__ import annotations

import logging
import select
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from chat.redisbus.links import (
    HEALTH_EVERY,
    SUB_CONNECT_TIMEOUT,
    SUB_TIMEOUT,
    command,
    connect_off_loop,
    receive,
)
from chat.redisbus.names import FLUSH, user_channel, user_of

if TYPE_CHECKING:
    from chat.redisbus import RedisBus
    from chat.redisbus.rounds import LoopHooks

log = logging.getLogger("chat.redisbus")

BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0
_SUBSCRIBE, _UNSUBSCRIBE, _MESSAGE = b"subscribe", b"unsubscribe", b"message"


class LoopSubscriptions:
    """Users' channels on a connection of one loop's own, read by that loop.

    ``subscribe``, ``unsubscribe``, ``wait_connected`` and ``close`` from any
    thread; everything that reads runs in the loop's thread, and every
    connection, the first included, is made on a thread of its own.
    """

    def __init__(self, bus: RedisBus, loop: LoopHooks, address: tuple[str, int],
                 setup: list[bytes]) -> None:
        self._bus = bus
        self._loop = loop
        self._address, self._setup = address, setup
        self._owner = threading.get_ident()
        self._lock = threading.Lock()  # _users, _waiters, _sock and writing to it
        self._users: set[int] = set()  # subscribed here, or to be once connected
        self._waiters: dict[tuple[bytes, bytes], list[threading.Event]] = {}
        self._sock: socket.socket | None = None
        self._up = threading.Event()  # set while _sock is
        self._reader: Any = None
        self._heard = self._pinged = 0.0
        # Read while a login waited for its subscription, handled after it.
        self._held: list[tuple[bytes, bytes, bytes]] = []
        self._held_due = False
        self._backoff = BACKOFF_MIN
        self._closed = False
        self._connect()
        loop.run_after(HEALTH_EVERY, self._health)

    # -- any thread ---------------------------------------------------------------

    def unsubscribe(self, user_ids: list[int], wait: float) -> None:
        """Stop holding ``user_ids``; returns once Redis confirmed it, at most
        ``wait`` seconds later (at once while the connection is down)."""
        channels = [user_channel(u).encode() for u in user_ids]
        events = [threading.Event() for _ in channels]
        with self._lock:
            self._users.difference_update(user_ids)
            if self._sock is None:
                return  # a new connection subscribes only who is left
            for channel, done in zip(channels, events, strict=True):
                self._waiters.setdefault((_UNSUBSCRIBE, channel), []).append(done)
            self._send(command(b"UNSUBSCRIBE", *channels))
        self._await(events, time.monotonic() + wait, "unsubscribe", holding=False)

    def wait_connected(self, timeout: float) -> bool:
        """Whether the connection is up, or comes up within ``timeout`` seconds."""
        return self._up.wait(timeout)

    def close(self) -> None:
        """Stop reconnecting; the connection is closed in the loop's thread."""
        self._closed = True
        with self._lock:
            self._release_waiters()
        self._loop.run_after(0, lambda: self._drop(None))

    def subscribe(self, user_id: int, wait: float) -> None:
        """Hold ``user_id`` here; returns once Redis confirmed it, at most ``wait``
        seconds later (at once while the connection is down: the next one
        subscribes and flushes it).  Any thread."""
        channel = user_channel(user_id).encode()
        done = threading.Event()
        with self._lock:
            self._users.add(user_id)
            if self._sock is None:
                return
            self._waiters.setdefault((_SUBSCRIBE, channel), []).append(done)
            self._send(command(b"SUBSCRIBE", channel))
        self._await([done], time.monotonic() + wait, "subscribe", holding=True)

    # -- the loop's thread, but for _await and _send ---------------------------------

    def _await(self, events: list[threading.Event], deadline: float, kind: str,
               holding: bool) -> None:
        """Wait for Redis's confirmations.  In the loop's thread, by reading the
        connection (nobody else will): ``holding`` (a login's subscription),
        what comes meanwhile is kept, in order, and handled once the handler
        that waits has returned (``_held``), as the loop would have handled it,
        and only a subscription's confirmation that somebody waits for is taken
        at once; else (an unsubscribe: at shutdown, or with no loop but the
        main one) everything is handled as it comes, which is what the
        unsubscribe waits for."""
        owner = threading.get_ident() == self._owner
        with self._bus._blocking():
            for done in events:
                while not done.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if not owner:
                        done.wait(left)
                        continue
                    sock = self._sock
                    if sock is None:
                        break  # dropped: the waiters were released
                    if _ready(sock, select.POLLIN, left):
                        self._read(holding)
        if owner and self._held and not self._held_due:
            self._held_due = True
            self._loop.call_before_poll(self._handle_held)
        late = [done for done in events if not done.is_set()]
        if late:
            log.warning("%s of %d user(s) not confirmed in time", kind, len(late))
            with self._lock:
                for waiting in self._waiters.values():
                    for done in late:
                        if done in waiting:
                            waiting.remove(done)

    def _send(self, data: bytes) -> None:
        """Lock held: send a command.  Under the lock that guards ``_users``, so
        commands leave in the order of the changes they make; a failure shuts
        the socket down, and the loop, reading EOF, drops it."""
        sock = self._sock
        if sock is None:
            return
        try:
            view = memoryview(data)
            while view:
                try:
                    view = view[sock.send(view):]
                except BlockingIOError:
                    if not _ready(sock, select.POLLOUT, SUB_TIMEOUT):
                        raise TimeoutError("Redis did not take a command") from None
        except OSError as exc:
            log.warning("redis subscription connection lost: %s", exc)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connect(self) -> None:
        """Connect on a thread of its own: at first, then after a failure."""
        if not self._closed:
            connect_off_loop(self._loop.run_after, self._address, self._setup,
                             SUB_CONNECT_TIMEOUT, self._adopt, self._failed_to_connect,
                             "redis-sub-connect")

    def _failed_to_connect(self, exc: BaseException) -> None:
        if self._backoff == BACKOFF_MIN:
            log.warning("redis subscription connection failed: %s; retrying", exc)
        self._connect_later()

    def _connect_later(self) -> None:
        self._loop.run_after(self._backoff, self._connect)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _adopt(self, sock: socket.socket, reader: Any) -> None:
        """Loop thread: watch a new connection and subscribe every user here on
        it (each confirmation, awaited by nobody, flushes its user)."""
        if self._closed:
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._reader = reader
        self._heard, self._pinged = time.monotonic(), 0.0
        self._loop.register(sock, selectors.EVENT_READ, self._on_readable)
        with self._lock:
            self._sock = sock
            self._up.set()
            users = list(self._users)
            if users:
                self._send(command(b"SUBSCRIBE", *(user_channel(u) for u in users)))
        if self._backoff != BACKOFF_MIN:
            log.info("redis subscription connection back, %d user(s)", len(users))
        self._backoff = BACKOFF_MIN

    def _on_readable(self, _mask: int) -> None:
        self._read(holding=False)

    def _read(self, holding: bool) -> None:
        """Take what Redis sent and handle it, or, ``holding`` (a login waits
        for its subscription), keep it for later but the awaited confirmations."""
        sock = self._sock
        if sock is None:
            return
        try:
            data = receive(sock)
        except OSError as exc:
            self._drop(exc)
            return
        if data is None:
            return
        self._heard, self._pinged = time.monotonic(), 0.0
        self._reader.feed(data)
        try:
            replies = self._parsed()
        except RedisError as exc:
            self._drop(exc)
            return
        if holding:
            self._held += [r for r in replies if not self._awaited_subscription(r)]
        else:
            if self._held:
                self._handle_held()
            self._handle(replies)

    def _parsed(self) -> list[tuple[bytes, bytes, bytes]]:
        """Every complete (kind, channel, data) reply so far; a PING's answer is
        dropped (hearing it was the point)."""
        got: list[Any] = []  # hiredis's lists, taken as they are
        gets = self._reader.gets
        while (reply := gets()) is not False:
            if type(reply) is list and len(reply) == 3:
                got.append(reply)
            elif isinstance(reply, Exception):
                raise RedisError(str(reply))
        return got

    def _awaited_subscription(self, reply: tuple[bytes, bytes, bytes]) -> bool:
        """A subscription's confirmation that somebody waits for: they are woken
        now (nothing else is done with it, so nothing is handled early)."""
        if reply[0] != _SUBSCRIBE:
            return False
        with self._lock:
            events = self._waiters.pop((_SUBSCRIBE, reply[1]), [])
        for done in events:
            done.set()
        return bool(events)

    def _handle_held(self) -> None:
        """What was read while a login waited, before anything read later."""
        self._held_due = False
        held, self._held = self._held, []
        self._handle(held)

    def _handle(self, replies: list[tuple[bytes, bytes, bytes]]) -> None:
        """In order: messages handed on in batches, a confirmation only after
        what came before it."""
        batch: list[tuple[int, bytes | None]] = []
        for kind, channel, data in replies:
            if kind == _MESSAGE:
                user_id = user_of(channel.decode())
                if user_id is not None:
                    batch.append((user_id, None if data == FLUSH else data))
                continue
            self._bus._hand_on(batch)
            if kind in (_SUBSCRIBE, _UNSUBSCRIBE):
                self._confirmed(kind, channel)
        self._bus._hand_on(batch)

    def _confirmed(self, kind: bytes, channel: bytes) -> None:
        with self._lock:
            events = self._waiters.pop((kind, channel), [])
            user_id = user_of(channel.decode())
            unawaited = kind == _SUBSCRIBE and not events and user_id in self._users
        for done in events:
            done.set()
        if unawaited and user_id is not None:
            self._bus._flush_users([user_id])

    def _health(self) -> None:
        """Timer: PING a silent connection; drop one that does not answer."""
        if self._closed:
            return
        now = time.monotonic()
        if self._sock is not None:
            if self._pinged:
                if now - self._pinged > SUB_TIMEOUT:
                    self._drop(TimeoutError("Redis did not answer a PING"))
            elif now - self._heard > HEALTH_EVERY:
                self._pinged = now
                with self._lock:
                    self._send(command(b"PING"))
        self._loop.run_after(min(HEALTH_EVERY, SUB_TIMEOUT) / 2, self._health)

    def _drop(self, exc: BaseException | None) -> None:
        """The connection is gone: nobody waits for it; connect again (unless closed)."""
        with self._lock:
            sock, self._sock, self._reader = self._sock, None, None
            self._up.clear()
            self._release_waiters()
        if sock is None:
            return  # dropped already: one reconnection at a time
        try:
            self._loop.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        if exc is None or self._closed:
            return
        log.warning("redis subscription connection lost: %s; reconnecting", exc)
        self._connect_later()

    def _release_waiters(self) -> None:
        """Lock held: nobody waits for a connection that is gone (the next one flushes)."""
        for events in self._waiters.values():
            for done in events:
                done.set()
        self._waiters.clear()


def _ready(sock: socket.socket, events: int, timeout: float) -> bool:
    """Whether ``sock`` became ready for ``events`` within ``timeout`` seconds
    (``poll``: a loop's descriptors may be past ``select``'s 1024)."""
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(max(0, int(timeout * 1000))))
