"""Who is online where: the claim a login makes and the release when it ends.

The database holds the truth for the whole cluster (``user.state`` and
``user.server``); a login claims the user with an atomic update that only
succeeds from "offline".  When the update fails the user is online
somewhere, and the claim is refused unless the holder cannot hold it:

* this very process (a stale row left by a mark-offline that failed while
  the database was down; the process knows it does not hold the user);
* nobody any more (the user went offline meanwhile: claim again);
* a process of the cluster whose heartbeat stopped (killed: its users must
  not stay locked out), taken over with a compare-and-set on its id.

A process clears only its own users, at start (what a crash left) and at
shutdown, never those of other processes.

A release waits on Redis (the unsubscribe must be confirmed before the
database says offline) and on the database; it must not hold up a loop, or a
burst of disconnects would stall every connection of that loop.  So
``release`` takes the user off the online map at once and hands the rest to
one releasing thread, in order.  Until that is done the router holds the user
as "releasing": a login of the same user here meanwhile is refused as online
(errno 2; the client retries), so a new subscription is never undone by an
old unsubscribe, nor a new online state by an old offline one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from chat.bus import Bus
from chat.router import Router
from chat.session import Connection
from chat.store import Store, StoreUnavailable

log = logging.getLogger("chat.presence")

RELEASE_WAIT = 3.0  # a login waits this long for a release of the same user here
LEAVE_WAIT = 10.0  # a release waits this long for the last connection's loop (Router.leave)


class Presence:
    def __init__(self, store: Store, bus: Bus, router: Router, server_id: str) -> None:
        self.store = store
        self.bus = bus
        self.router = router
        self.server_id = server_id
        self._lock = threading.Lock()
        self._unreleased: set[int] = set()  # left here, still online in the database
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._releaser = threading.Thread(target=self._run_releases, name="releaser",
                                          daemon=True)
        self._releaser.start()

    def clear_own(self) -> None:
        """At start: users a crash of this server left online are offline."""
        cleared = self.store.reset_server(self.server_id)
        if cleared:
            log.info("cleared %d stale online state(s) of server %s", cleared, self.server_id)

    def claim(self, user_id: int, conn: Connection) -> bool:
        """Mark the user online here and attach ``conn``; False if it is online elsewhere.

        The router's reservation keeps two logins of one user on this server
        from both getting through.
        """
        self.router.store_unstored(user_id)  # a last login's, before this one's backlog
        if not self.router.reserve(user_id):
            # Logged out a moment ago here: the release is quick, so wait for it
            # rather than refuse a client that logs out and in again.
            with self.store.blocking():
                settled = self.router.wait_released(user_id, RELEASE_WAIT)
            if not settled or not self.router.reserve(user_id):
                return False
        try:
            if not self.store.mark_online(user_id, self.server_id) and not self._take_over(user_id):
                return False
            self.router.attach(user_id, conn)
            self.bus.subscribe(user_id)
            with self._lock:
                self._unreleased.discard(user_id)
            return True
        finally:
            self.router.unreserve(user_id)

    def _take_over(self, user_id: int) -> bool:
        holder = self.store.holder(user_id)
        if holder == self.server_id:
            log.info("user %d: taking over a stale online state of this server", user_id)
            return True
        if holder is None:
            return self.store.mark_online(user_id, self.server_id)
        if self.bus.is_alive(holder) or not self.store.take_over(user_id, holder, self.server_id):
            return False
        log.info("user %d: taken over from server %s, which is dead", user_id, holder)
        return True

    def release(self, user_id: int, conn: Connection,
                released: Callable[[], None] | None = None) -> None:
        """The user left ``conn``: offline here at once, in the cluster soon after,
        and then ``released()`` is called, in the releasing thread.

        Safe from any thread; returns without waiting on Redis or the database.
        """
        if not self.router.detach(user_id, conn):
            if released is not None:
                released()
            return

        def job() -> None:
            self._release(user_id)
            if released is not None:
                released()

        self._jobs.put(job)

    def _release(self, user_id: int) -> None:
        """Releasing thread: unsubscribe, then mark offline, then let logins in."""
        try:
            # Before the database says offline: a login elsewhere must find us
            # no longer subscribed, or both would take the user's next message.
            self.bus.unsubscribe(user_id)
            # What came for the user until then, behind what its connection
            # had queued, stored in the order it came, before a login elsewhere.
            if not self.router.leave(user_id, LEAVE_WAIT):
                log.warning("user %d: messages for its ended login not stored within %.0f s",
                            user_id, LEAVE_WAIT)
            self.router.store_unstored(user_id)  # before offline: a login elsewhere reads it
            self.store.mark_offline(user_id, self.server_id)
        except StoreUnavailable as exc:
            # Offline here all the same.  Until ``retry_releases`` succeeds, a
            # login here takes the row over and one elsewhere gets errno 2.
            log.warning("user %d left, but is still marked online in the database: %s",
                        user_id, exc)
            with self._lock:
                self._unreleased.add(user_id)
        finally:
            self.router.released(user_id)

    def _run_releases(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("bug while releasing a user")

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the releases queued so far are done; False if not in time."""
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout)

    def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for the releases queued so far, then stop the thread."""
        self._jobs.put(None)
        self._releaser.join(timeout)

    def retry_releases(self) -> None:
        """Mark offline the users whose release failed, once the database answers.

        Call it from a thread that may block on the database (a loop of the
        pool, as handlers do).  The router's reservation keeps a login of the
        same user here from interleaving with the update.
        """
        with self._lock:
            pending, self._unreleased = self._unreleased, set()
        for user_id in pending:
            if not self.router.reserve(user_id):
                continue  # online here again: the row is right as it is
            try:
                self.router.store_unstored(user_id)
                self.store.mark_offline(user_id, self.server_id)
            except StoreUnavailable:
                with self._lock:
                    self._unreleased.add(user_id)
            finally:
                self.router.unreserve(user_id)
        if pending:
            log.info("retried %d failed release(s), %d left", len(pending),
                     len(self._unreleased))

    def release_all(self) -> None:
        """At shutdown: every user of this process (and only of this process) goes offline."""
        self.drain(1.0)
        # The loops quit soon and may never run what a release still waits
        # for: it goes on without them.
        self.router.close()
        self.bus.unsubscribe_many(self.router.detach_all())
        try:
            self.store.reset_server(self.server_id)
        except StoreUnavailable as exc:
            log.warning("could not mark users offline at shutdown: %s", exc)
