"""The cluster's bus: routing between chat server processes over Redis pub/sub.

Theory of operation
-------------------
Names in Redis (docs/cluster.md has the full contract):

- ``chat:user:<id>``: the channel of user ``<id>``, subscribed by the one
  process that holds the user.  A payload that starts with ``{`` is a chat
  message to forward as is; the payload ``flush`` asks the holder to send the
  user's stored offline messages now.
- ``chat:cluster``: subscribed by every process; ``flush-all`` asks every
  process to flush the offline messages of all its users.
- ``chat:wake:<server id>:<token>``: this process only; a publish to it wakes
  the subscriber thread so a subscribe request does not wait for a timeout.
- key ``chat:server:<server id>``: this process's heartbeat, set with a TTL
  and refreshed well within it.  A server whose key has expired is dead and
  its users may log in elsewhere (``is_alive``).

Threads:

- The *home loop* (``attach_loop(loop, home=True)``, the pool's first)
  subscribes every user who logs in on a connection of its own and reads it
  like its sockets (`LoopSubscriptions`, chat/redisbus/loopsub.py, which
  says why and how the guarantees below hold there too): a message from
  another server is written to its recipient without waking another
  thread, once the reactor has moved the recipient's connection there
  (``home_loop``).  ``unsubscribe`` finds the connection that holds the user.
- The *subscriber thread* alone owns the PubSub connection of
  ``chat:cluster``, the wake channel and users subscribed outside a loop
  (redis-py's PubSub is not thread-safe).  ``subscribe``/``unsubscribe``
  queue a request, wake it and wait until Redis confirmed the request.  So a login that fetches
  offline messages after ``subscribe`` cannot miss a message that a sender
  found no subscriber for (that sender stores, then publishes ``flush``,
  which now reaches us).  And once ``unsubscribe`` returns, every message
  Redis sent us for the user has been handed on (to the user's last
  connection, which stores it: ``Router.leave`` waits for that before the
  caller marks the user offline), so a login elsewhere that the caller's
  mark-offline then lets through subscribes alone: two processes never both
  take one message, one to deliver it live and one to store it.  On any
  error the session is dropped and rebuilt with backoff; the new session
  subscribes every local user again, and each confirmed subscription that
  no login waits for flushes its user, since others stored messages for it
  meanwhile.
- The *heartbeat thread* refreshes the heartbeat key and pays back owed
  ``flush-all`` broadcasts.
- Chat for users of other processes is published without a loop ever
  waiting on Redis for it (group commit).  The service hands the bus a
  `Handoff` (one request's messages, one per recipient) and suspends the
  sender's connection until the handoff is done (RequestPipeline's
  ``suspended``, as for a password hash): the reply follows, then the
  connection's later frames.  A loop thread that ``attach_loop`` was called
  in publishes its handoffs itself, as a *round* (`LoopRound`): before it polls
  again it writes ONE pipeline on a Redis connection of its own (opened on
  a thread, never in the loop) and goes on; the loop watches that
  connection as it watches its clients, and when a pipeline's replies are
  all in, it settles them.  Any other thread's
  handoffs go to the *publisher thread*, which does the same with one
  pipeline at a time (it waits for each).  The rules, for both:

  * a pipeline holds at most one message per recipient, and none for a
    recipient whose previous message is still in flight; a later message for
    such a recipient, and every message for it after that one, waits, so a
    recipient's messages leave in the order they were handed off;
  * settling: >0 subscribers took it (delivered); 0, a failed pipeline, a
    connection that did not answer within ``PUBLISH_TIMEOUT``, or a user in
    ``_unflushed`` (not even sent) goes to the ``settle`` callback (the
    router stores it offline, which also kicks a local holder or publishes
    ``flush``) at once, in that thread, before the recipient's next message
    may go.  So the rule "PUBLISH returned 0 -> store" stays true per
    message, and a message for a user never overtakes an earlier one for
    the same user handed to the same round or thread, even when the earlier
    one was stored.  Per sender the order holds whatever the thread: the
    sender's next request is served only once this one is settled;
  * then each finished handoff's ``done`` runs (the service posts the
    sender's reply into its loop).

  What one round trip costs is shared by every message in the pipeline, and
  a loop thread hands nothing to another thread to publish.  Receipts
  (``notify_each``) ride the same way, best effort.  ``close`` drains the
  publisher thread (what Redis does not take is stored); a handoff after
  ``close`` or before ``start`` is settled in the caller's thread (stored).
  A PUBLISH that timed out counts as not taken and is stored, but a stalled
  (not dead) Redis may still run it when it resumes: that message then
  arrives twice, with one ``mid`` (clients drop the repeat).
- Any thread may also ``publish``/``publish_many`` synchronously (tools,
  tests, a bus user that does not hand off); they and the publisher thread
  use a pooled client with short timeouts.  A failed publish counts as
  nobody took it (the message is stored offline) and opens a short circuit
  breaker so an outage costs nothing per message.  Any failed ``flush``
  notice is owed: once Redis answers again, one ``flush-all`` on
  ``chat:cluster`` makes every holder look.
- Delivery in batches: after ``get_message`` returns a message, the
  subscriber thread takes what else is already readable (up to
  ``DELIVER_BATCH``) and hands the user-channel messages and ``flush``
  notices to ``deliver_many`` in one call, in arrival order; the router
  posts one closure per recipient connection for the whole batch.  Anything
  else (a subscription's confirmation, ``flush-all``) first hands on what the
  batch holds so far, so an unsubscribe is still confirmed only after every
  message before it was handled.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from contextlib import nullcontext

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from chat import metrics
from chat.bus import Blocking, Deliver, DeliverMany, Flush, Handoff, Settle
from chat.redisbus.links import Link, PubSubLink, RawLink, RawPublisher
from chat.redisbus.loopsub import LoopSubscriptions
from chat.redisbus.names import CLUSTER_CHANNEL, FLUSH, FLUSH_ALL, PREFIX, server_key, user_channel
from chat.redisbus.names import user_of as _user_of
from chat.redisbus.rounds import PUBLISH_TIMEOUT, LoopHooks, LoopRound, one_per_user

log = logging.getLogger("chat.redisbus")

HEARTBEAT_TTL = 6.0  # a SIGKILLed server's users can log in elsewhere after this
HEARTBEAT_EVERY = 1.5
SUBSCRIBE_WAIT = 2.0  # longest a (un)subscribe waits for Redis to confirm it
SHUTDOWN_UNSUBSCRIBE_WAIT = 1.0  # the same for all users at shutdown, inside its 5 s
CIRCUIT_OPEN = 0.5  # after a failed publish, fail the next ones at once for this long
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0
POLL = 1.0  # the subscriber's longest sleep in get_message
DELIVER_BATCH = 256  # messages the subscriber reads before handing them on
CLOSE_WAIT = 3.0  # how long close waits for the publisher thread to drain


class RedisBus:
    """The Bus of a cluster member.  Every public method is safe from any thread."""

    later = True  # chat goes through ``hand_off`` and the publisher thread

    def __init__(self, url: str, server_id: str, heartbeat_ttl: float = HEARTBEAT_TTL,
                 heartbeat_every: float = HEARTBEAT_EVERY,
                 blocking: Blocking = nullcontext) -> None:
        self.server_id = server_id
        self._blocking = blocking  # around every wait on Redis; see Bus
        self._ttl = heartbeat_ttl
        self._every = heartbeat_every
        self._token = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._wake_channel = f"{PREFIX}wake:{server_id}:{self._token}"
        self._pub = redis.Redis.from_url(
            url, socket_timeout=PUBLISH_TIMEOUT, socket_connect_timeout=PUBLISH_TIMEOUT,
            retry=Retry(NoBackoff(), 1))
        self._sub = redis.Redis.from_url(
            url, socket_timeout=5.0, socket_connect_timeout=1.0, socket_keepalive=True,
            health_check_interval=5, retry=Retry(NoBackoff(), 0))
        # The publisher thread's own connection (a plain TCP Redis URL and hiredis),
        # else redis-py's pipelines.
        self._raw = RawPublisher.for_url(url, PUBLISH_TIMEOUT)
        self._requests: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._users: set[int] = set()  # desired subscriptions (subscriber thread only)
        # (reply type, channel) -> the callers waiting for that reply; under _lock
        self._waiters: dict[tuple[str, str], list[threading.Event]] = {}
        self._connected = False
        self._ready = threading.Event()  # set while _connected
        self._circuit_until = 0.0
        self._owe_flush_all = False
        # Users with messages stored here while Redis failed and no flush since:
        # later messages for them are stored too, so they cannot overtake.
        self._unflushed: set[int] = set()
        self._stop = threading.Event()
        self._deliver: Deliver | None = None
        self._flush: Flush | None = None
        self._deliver_many: DeliverMany | None = None
        self._settle: Settle | None = None
        self._threads: list[threading.Thread] = []
        # The publisher thread's queue: handoffs, then None once closed.
        self._outq: queue.SimpleQueue[Handoff | None] = queue.SimpleQueue()
        self._out_lock = threading.Lock()  # orders hand_off against close
        self._publishing = False  # the publisher thread runs (under _out_lock)
        self._publisher_thread: threading.Thread | None = None
        self._local = threading.local()  # .round: the loop thread's (attach_loop)
        self.home_loop: object | None = None  # the loop of _home
        self._home: LoopSubscriptions | None = None  # users subscribed in a loop
        self._held_home: set[int] = set()  # users subscribed on _home (under _lock)

    # -- Bus -------------------------------------------------------------------

    def start(self, deliver: Deliver, flush: Flush | None = None,
              deliver_many: DeliverMany | None = None, settle: Settle | None = None) -> None:
        """Beat once (so peers see us alive at once), then start the threads."""
        self._deliver, self._flush = deliver, flush
        self._deliver_many, self._settle = deliver_many, settle
        self._beat()
        for target, name in ((self._subscriber, "redis-sub"), (self._heartbeat, "redis-beat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        with self._out_lock:
            self._publishing = True
        self._publisher_thread = threading.Thread(target=self._publisher, name="redis-pub",
                                                  daemon=True)
        self._publisher_thread.start()

    def attach_loop(self, loop: LoopHooks, home: bool = False) -> None:
        """Called in ``loop``'s thread: what this thread hands off from now on is
        published at the end of the loop's round, on a connection of the loop's
        own whose replies the loop reads as it reads its sockets (`LoopRound`),
        instead of by the publisher thread.  ``home``: this loop also
        subscribes every user that logs in on any loop from now on, on another
        connection of its own that it reads (`LoopSubscriptions`), and is the
        ``home_loop`` that connections handing chat off are moved to.  Without
        our own connections (see `RawPublisher`) it does nothing."""
        if self._raw is None:
            return
        self._local.round = LoopRound(self, loop, self._raw)
        if home and self._home is None:
            self._home = LoopSubscriptions(self, loop, self._raw.address, self._raw.setup)
            self.home_loop = loop

    def hand_off(self, handoff: Handoff) -> None:
        """Publish ``handoff`` at the end of this loop's round (``attach_loop``) or
        from the publisher thread; never waits on Redis.

        Not started, or closed: settled here and now (all of it stored).
        """
        if not handoff.items:
            if handoff.done is not None:
                handoff.done(handoff)
            return
        rnd: LoopRound | None = getattr(self._local, "round", None)
        if rnd is not None:
            rnd.add(handoff)
            return
        with self._out_lock:
            if self._publishing:
                self._outq.put(handoff)
                return
        self._finish([(handoff, i) for i in range(len(handoff.items))],
                     [0] * len(handoff.items))

    def subscribe(self, user_id: int) -> None:
        """Hold ``user_id`` here; returns once Redis confirmed it (or is unreachable).

        On the home loop's connection once there is one (``attach_loop``),
        which that loop reads (`LoopSubscriptions`); before, on the subscriber
        thread's."""
        home = self._home
        if home is None:
            self._request("subscribe", [user_id])
            return
        with self._lock:
            self._held_home.add(user_id)
        home.subscribe(user_id, SUBSCRIBE_WAIT)

    def unsubscribe(self, user_id: int) -> None:
        """Stop holding ``user_id``; returns once Redis confirmed it (or is unreachable)."""
        self._unsubscribe([user_id], SUBSCRIBE_WAIT)

    def unsubscribe_many(self, user_ids: list[int]) -> None:
        """``unsubscribe`` each user, all waited for at once (shutdown)."""
        self._unsubscribe(user_ids, SHUTDOWN_UNSUBSCRIBE_WAIT)

    def _unsubscribe(self, user_ids: list[int], wait: float) -> None:
        """Each user from the connection that holds it: the home loop's or the
        subscriber thread's."""
        at_home: list[int] = []
        elsewhere: list[int] = []
        with self._lock:
            for user_id in user_ids:
                if user_id in self._held_home:
                    self._held_home.discard(user_id)
                    at_home.append(user_id)
                else:
                    elsewhere.append(user_id)
        if at_home and self._home is not None:
            self._home.unsubscribe(at_home, wait)
        self._request("unsubscribe", elsewhere, wait)

    def _request(self, kind: str, user_ids: list[int], wait: float = SUBSCRIBE_WAIT) -> None:
        """Queue ``kind`` ("subscribe" or "unsubscribe") for each user and wait for
        Redis's replies, together for at most ``wait`` seconds."""
        if not user_ids:
            return
        keys = [(kind, user_channel(u)) for u in user_ids]
        events = [threading.Event() for _ in keys]
        with self._lock:  # not connected: nobody waits (a subscription flushes instead)
            connected = self._connected
            if connected:
                for key, done in zip(keys, events, strict=True):
                    self._waiters.setdefault(key, []).append(done)
        for user_id in user_ids:
            self._requests.put((kind, user_id))
        late: list[tuple[tuple[str, str], threading.Event]] = []
        with self._blocking():  # one step out of the turn for both round trips
            self._wake()
            if connected:
                deadline = time.monotonic() + wait
                late = [(key, done) for key, done in zip(keys, events, strict=True)
                        if not done.wait(max(0.0, deadline - time.monotonic()))]
        if not late:
            return
        log.warning("%s of %d user(s) not confirmed in time", kind, len(late))
        with self._lock:  # nobody waits now: a late subscription flushes instead
            for key, done in late:
                waiting = self._waiters.get(key, [])
                if done in waiting:
                    waiting.remove(done)

    def publish(self, user_id: int, payload: bytes) -> bool:
        """True if a process holding ``user_id`` took ``payload``.

        False, without publishing, while a message this process stored for
        ``user_id`` because Redis failed has not been followed by a ``flush``
        that reached Redis: a newer message sent live would overtake it.  The
        caller stores this one too, and its ``notify_stored`` sends the flush.
        """
        if user_id in self._unflushed:
            return False
        if (n := self._publish(user_channel(user_id), payload)) < 0:
            self._unflushed.add(user_id)
        return n > 0

    def publish_many(self, user_ids: list[int], payload: bytes) -> list[int]:
        """``publish`` to each user in one pipelined round trip; returns who was not reached."""
        held = [u for u in user_ids if u in self._unflushed]
        targets = [u for u in user_ids if u not in self._unflushed]
        counts = self._publish_each([(user_channel(u), payload) for u in targets])
        if counts is None:
            self._unflushed.update(targets)
            return held + targets
        return held + [u for u, n in zip(targets, counts, strict=True) if n == 0]

    def notify_each(self, notices: list[tuple[int, bytes]]) -> None:
        """Best effort, from the publisher thread; unlike ``publish`` a failure
        changes nothing here."""
        if notices:
            self.hand_off(Handoff(notices, notice=True))

    def notify_stored(self, user_id: int) -> None:
        """A message for ``user_id`` was stored offline: have its holder, if any, flush."""
        self.notify_stored_many([user_id])

    def notify_stored_many(self, user_ids: list[int]) -> None:
        if self._publish_each([(user_channel(u), FLUSH) for u in user_ids]) is None:
            self._owe_flush_all = True
            self._unflushed.update(user_ids)
        else:
            self._unflushed.difference_update(user_ids)  # a flush follows every message stored

    def wait_connected(self, timeout: float) -> bool:
        """Whether, within ``timeout`` seconds, the subscriber thread is connected
        and subscribed and the home loop's subscribing connection is up (the
        health check and the ``chat_redis_up`` gauge ask with a timeout of 0)."""
        deadline = time.monotonic() + timeout
        if not self._ready.wait(timeout):
            return False
        home = self._home
        return home is None or home.wait_connected(max(0.0, deadline - time.monotonic()))

    def is_alive(self, server_id: str) -> bool:
        """False only if Redis says for sure that ``server_id`` stopped beating.

        A Redis that restarted less than a TTL ago has lost the keys of live
        servers too, so there an absent key proves nothing; unreachable Redis
        proves nothing either.
        """
        try:
            with self._blocking():
                if self._pub.exists(server_key(server_id)):
                    return True
                uptime = int(self._pub.info("server")["uptime_in_seconds"])
        except RedisError as exc:
            log.warning("cannot tell whether server %s is alive: %s", server_id, exc)
            return True
        return uptime < self._ttl + 1

    def close(self) -> None:
        """Drain the publisher thread (what Redis does not take is stored), stop
        the threads and remove the heartbeat (a clean exit, not a death)."""
        with self._out_lock:
            publishing, self._publishing = self._publishing, False
            if publishing:
                self._outq.put(None)  # after every handoff queued before it
        if publishing and self._publisher_thread is not None:
            self._publisher_thread.join(CLOSE_WAIT)
        self._stop.set()
        self._wake()
        if self._home is not None:
            self._home.close()
        for thread in self._threads:
            thread.join(2.0)
        try:
            self._pub.delete(server_key(self.server_id))
        except RedisError:
            pass
        self._pub.close()
        if self._raw is not None:
            self._raw.close()

    # -- publishing ------------------------------------------------------------

    def _publish(self, channel: str, payload: bytes) -> int:
        """Subscribers reached, or -1 if Redis is unreachable (circuit open or error)."""
        if time.monotonic() < self._circuit_until:
            return -1
        try:
            with self._blocking(), metrics.REDIS_PUBLISH.time():
                return int(self._pub.publish(channel, payload))
        except RedisError as exc:
            if time.monotonic() >= self._circuit_until:
                log.warning("publish to %s failed: %s", channel, exc)
            self._circuit_until = time.monotonic() + CIRCUIT_OPEN
            self._owe_flush_all = True
            return -1

    def _publish_each(self, messages: list[tuple[str, bytes]]) -> list[int] | None:
        """Subscribers reached by each (channel, payload), pipelined; None if Redis failed."""
        if not messages:
            return []
        if len(messages) == 1:
            n = self._publish(*messages[0])
            return None if n < 0 else [n]
        if time.monotonic() < self._circuit_until:
            return None
        try:
            pipe = self._pub.pipeline(transaction=False)
            for channel, payload in messages:
                pipe.publish(channel, payload)
            with self._blocking(), metrics.REDIS_PUBLISH.time():
                return [int(n) for n in pipe.execute()]
        except RedisError as exc:
            if time.monotonic() >= self._circuit_until:
                log.warning("pipelined publish of %d failed: %s", len(messages), exc)
            self._circuit_until = time.monotonic() + CIRCUIT_OPEN
            self._owe_flush_all = True
            return None

    # -- publisher thread --------------------------------------------------------

    def _publisher(self) -> None:
        """Group commit: one pipeline per round, at most one message per recipient."""
        pending: deque[tuple[Handoff, int]] = deque()
        closing = False
        while pending or not closing:
            closing = self._take(pending, block=not pending) or closing
            batch, rest = one_per_user(pending)
            pending = rest
            try:
                self._finish(batch, self._publish_batch(batch))
            except Exception:
                log.exception("bug in the publisher thread")

    def _take(self, pending: deque[tuple[Handoff, int]], block: bool) -> bool:
        """Move what is queued into ``pending`` (waiting for one if ``block``);
        True once the queue's end (close) was reached."""
        while True:
            try:
                handoff = self._outq.get(block)
            except queue.Empty:
                return False
            if handoff is None:
                return True
            pending.extend((handoff, i) for i in range(len(handoff.items)))
            block = False

    def _publish_batch(self, batch: list[tuple[Handoff, int]]) -> list[int]:
        """Subscribers reached by each message, one pipeline; 0 for a user in
        ``_unflushed`` (not sent: it would overtake what was stored) and for
        all of them if Redis failed."""
        counts, sent, messages = self._outgoing(batch)
        if not messages:
            return counts
        reached = (self._publish_raw(messages, self._raw) if self._raw
                   else self._publish_each(messages))
        if reached is None:
            self._failed(batch)
            return counts
        for k, n in zip(sent, reached, strict=True):
            counts[k] = n
        return counts

    def _outgoing(self, batch: list[tuple[Handoff, int]]
                  ) -> tuple[list[int], list[int], list[tuple[str, bytes]]]:
        """A count of 0 for each message, and which of them to send (their indexes,
        their channels and payloads): all but those for users in ``_unflushed``."""
        counts = [0] * len(batch)
        sent: list[int] = []
        messages: list[tuple[str, bytes]] = []
        unflushed = self._unflushed
        for k, (handoff, i) in enumerate(batch):
            user_id, payload = handoff.items[i]
            if user_id in unflushed and not handoff.notice:
                continue
            sent.append(k)
            messages.append((user_channel(user_id), payload))
        return counts, sent, messages

    def _failed(self, batch: list[tuple[Handoff, int]]) -> None:
        """Redis failed with ``batch``: its users stay stored until a flush reaches
        Redis (``_unflushed``).  The caller opened the circuit."""
        self._unflushed.update(handoff.items[i][0] for handoff, i in batch if not handoff.notice)

    def _broke(self, what: str, exc: BaseException) -> None:
        """A publish failed: open the circuit, owe a flush-all, log once per outage."""
        if time.monotonic() >= self._circuit_until:
            log.warning("%s failed: %s", what, exc)
        self._circuit_until = time.monotonic() + CIRCUIT_OPEN
        self._owe_flush_all = True

    def _finish(self, batch: list[tuple[Handoff, int]], counts: list[int]) -> None:
        """Settle what nobody took (stored, before anything later is published),
        then tell each handoff whose items are all settled."""
        missed: list[tuple[Handoff, int, bytes]] = []
        left: dict[int, tuple[Handoff, int]] = {}  # id(handoff) -> (it, items settled here)
        for (handoff, i), n in zip(batch, counts, strict=True):
            if n > 0:
                handoff.reached += 1
            elif not handoff.notice:
                missed.append((handoff, *handoff.items[i]))
            done = left.get(id(handoff))
            left[id(handoff)] = (handoff, done[1] + 1 if done else 1)
        if missed:
            if self._settle is None:
                log.warning("%d message(s) nobody took and nothing stores", len(missed))
            else:
                try:
                    self._settle(missed)
                except Exception as exc:  # the router's own failures are set on the handoff
                    log.exception("bug while storing what the bus could not deliver")
                    for handoff, _, _ in missed:
                        handoff.error = exc
        for handoff, n in left.values():
            handoff.left -= n
            if handoff.left == 0 and handoff.done is not None:
                try:
                    handoff.done(handoff)
                except Exception:
                    log.exception("bug in a handoff's completion")

    def _publish_raw(self, messages: list[tuple[str, bytes]],
                     raw: RawPublisher) -> list[int] | None:
        """``_publish_each`` on a connection of our own."""
        if time.monotonic() < self._circuit_until:
            return None
        try:
            with self._blocking(), metrics.REDIS_PUBLISH.time():
                return raw.publish(messages)
        except (OSError, RedisError) as exc:
            self._broke(f"pipelined publish of {len(messages)}", exc)
            return None

    def _wake(self) -> None:
        if time.monotonic() < self._circuit_until:
            return
        try:
            with self._blocking():
                self._pub.publish(self._wake_channel, b"")
        except RedisError:
            pass  # the subscriber is not connected either; it retries on its own

    # -- heartbeat thread ------------------------------------------------------

    def _beat(self) -> bool:
        try:
            self._pub.set(server_key(self.server_id), self._token, px=int(self._ttl * 1000))
        except RedisError as exc:
            log.debug("heartbeat failed: %s", exc)
            return False
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._every):
            if self._beat() and self._owe_flush_all:
                self._owe_flush_all = False
                unflushed = set(self._unflushed)  # stored before this flush-all
                if self._publish(CLUSTER_CHANNEL, FLUSH_ALL) < 0:
                    self._owe_flush_all = True
                else:
                    self._unflushed -= unflushed
                    log.info("asked the cluster to flush offline messages")

    # -- subscriber thread -----------------------------------------------------

    def _subscriber(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            link: Link | None = None
            try:
                link = self._link()
                self._session(link)
                backoff = BACKOFF_MIN
            except (RedisError, OSError) as exc:
                if self._connected or backoff == BACKOFF_MIN:
                    log.warning("redis subscriber lost: %s; reconnecting", exc)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                with self._lock:
                    self._connected = False
                    self._ready.clear()
                    self._release_waiters()
                if link is not None:
                    link.close()
            self._stop.wait(backoff)

    def _link(self) -> Link:
        """The subscriber's connection: our own where we can (``RawLink``), else redis-py's."""
        if self._raw is not None:
            return RawLink(self._raw.address, self._raw.setup)
        return PubSubLink(self._sub.pubsub())  # type: ignore[no-untyped-call]

    def _session(self, link: Link) -> None:
        """One connection's life: subscribe everything, then pump requests and messages."""
        self._drain_requests(None)
        channels = [CLUSTER_CHANNEL, self._wake_channel, *map(user_channel, self._users)]
        link.request("subscribe", channels)
        pending = set(channels)
        resumed = False
        batch: list[tuple[int, bytes | None]] = []  # user-channel messages, in order
        while not self._stop.is_set():
            self._drain_requests(link)
            for kind, channel, data in link.read(POLL, DELIVER_BATCH):
                user_id = _user_of(channel) if kind == "message" else None
                if user_id is not None:
                    batch.append((user_id, None if data == FLUSH else data))
                    continue
                self._hand_on(batch)  # what came before goes first
                if kind == "subscribe":
                    pending.discard(channel)
                    self._confirm(channel)
                    if not pending and not resumed:
                        resumed = True
                        with self._lock:
                            self._connected = True
                            self._ready.set()
                        log.info("redis subscriber ready, %d local user(s)", len(self._users))
                elif kind == "unsubscribe":
                    self._wake_waiters("unsubscribe", channel)
                elif kind == "message" and channel == CLUSTER_CHANNEL:
                    self._on_cluster(data)
            self._hand_on(batch)

    def _hand_on(self, batch: list[tuple[int, bytes | None]]) -> None:
        """Give the batch read so far to ``deliver_many`` and empty it."""
        if not batch:
            return
        items = batch[:]
        batch.clear()
        try:
            self._deliver_batch(items)
        except Exception:
            log.exception("bug while handing on %d message(s) from the bus", len(items))

    def _deliver_batch(self, items: list[tuple[int, bytes | None]]) -> None:
        """What a subscription read, in order (a payload of None: flush the user)."""
        if self._deliver_many is not None:
            self._deliver_many(items)
            return
        for user_id, payload in items:
            if payload is None:
                self._flush_users([user_id])
            elif self._deliver is not None:
                self._deliver(user_id, payload)

    def _drain_requests(self, link: Link | None) -> None:
        """Apply queued (un)subscribe requests to the desired set, and to Redis if connected."""
        while True:
            try:
                op, user_id = self._requests.get_nowait()
            except queue.Empty:
                return
            if op == "subscribe":
                self._users.add(user_id)
            else:
                self._users.discard(user_id)
            if link is not None:
                link.request(op, [user_channel(user_id)])

    def _confirm(self, channel: str) -> None:
        """Wake the logins waiting for ``channel``; if none, flush its user ourselves.

        A subscription nobody waits for (a login while Redis was away, one
        that gave up waiting, every user of a session after a reconnect) may
        have missed a message that a sender then stored offline.
        """
        woken = self._wake_waiters("subscribe", channel)
        user_id = _user_of(channel)
        if not woken and user_id is not None and user_id in self._users:
            self._flush_users([user_id])

    def _wake_waiters(self, kind: str, channel: str) -> bool:
        """Redis replied ``kind`` for ``channel``: wake who waits; False if nobody did."""
        with self._lock:
            events = self._waiters.pop((kind, channel), [])
        for event in events:
            event.set()
        return bool(events)

    def _release_waiters(self) -> None:
        """Lock held: nobody waits for a connection that is gone (the next one flushes)."""
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._waiters.clear()

    def _on_cluster(self, data: bytes) -> None:
        """A message on ``chat:cluster``: ``flush-all`` flushes every user here."""
        if data != FLUSH_ALL:
            return
        with self._lock:
            held = list(self._held_home)
        try:
            self._flush_users(list(self._users) + held)
        except Exception:
            log.exception("bug while flushing every user for flush-all")

    def _flush_users(self, user_ids: list[int]) -> None:
        if self._flush is not None:
            for user_id in user_ids:
                self._flush(user_id)
