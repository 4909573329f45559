"""Accounts: register, login (with its outbox and paged backlog), logout.

A mixin of `ChatService`: the handlers of the requests that make and end a
login, and what a connection's end does to its user.  Password hashing runs
on the service's worker pool (``_offload``), never on a loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property

import orjson

from chat import metrics
from chat.limits import AddressBuckets, FailureThrottle
from chat.names import BadName, check_name
from chat.outbox import PUSH_LIMIT, Caps, Entry, KeepUnstored, Outbox, Receipts, StoreLive
from chat.presence import Presence
from chat.protocol import BadField, Errno, Message, MsgId, opt_int, opt_str, req_int, req_str
from chat.requests import RequestFailed, RequestPipeline, host_of
from chat.router import Router
from chat.session import Connection, Session
from chat.store import NameTaken, Store, StoreUnavailable, User
from chat.workers import Outcome


class AccountHandlers(RequestPipeline):
    store: Store
    router: Router
    presence: Presence
    _failed_logins: FailureThrottle
    _failed_addresses: FailureThrottle
    _registrations: AddressBuckets

    # -- account ---------------------------------------------------------------

    def register(self, conn: Connection, session: Session, msg: Message) -> None:
        name = req_str(msg, "name", 1, 50)
        password = req_str(msg, "password", 1, 128)
        try:
            name = check_name(name)
        except BadName as exc:
            raise RequestFailed(Errno.INVALID, str(exc)) from None
        if not self._registrations.take(session.peer_host or host_of(conn)):
            raise RequestFailed(Errno.SERVER_ERROR,
                                "too many registrations from your address, try again later")

        def work() -> int | None:  # a worker thread: the hash, then the insert
            try:
                return self.store.register(name, password)
            except NameTaken:
                return None

        def then(outcome: Outcome) -> None:
            user_id = outcome.result()
            if user_id is None:
                raise RequestFailed(Errno.INVALID, "this name is already taken")
            self._reply(conn, session, msg,
                        {"msgid": MsgId.REG_MSG_ACK, "errno": 0, "id": user_id})
        self._offload(conn, session, msg, work, then)

    def login(self, conn: Connection, session: Session, msg: Message) -> None:
        account = _login_account(msg)
        password = req_str(msg, "password")
        if session.user_id is not None:
            raise RequestFailed(Errno.BAD_REQUEST, "already logged in here, log out first")
        address = session.peer_host or host_of(conn)
        attempt = (account, address)
        if self._failed_logins.blocked(attempt) or self._failed_addresses.blocked(address):
            raise RequestFailed(Errno.INVALID, "too many failed logins, try again later")
        if isinstance(account, int):
            def work() -> User | None:
                return self.store.authenticate(account, password)
        else:
            def work() -> User | None:
                return self.store.authenticate_by_name(account, password)
        self._offload(conn, session, msg, work,
                      lambda outcome: self._authenticated(conn, session, msg, attempt,
                                                          outcome.result()))

    def _authenticated(self, conn: Connection, session: Session, msg: Message,
                       attempt: tuple[int | str, str], user: User | None) -> None:
        """Loop thread: the rest of a login, once the password was checked."""
        address = attempt[1]
        if user is None:
            self._failed_logins.failed(attempt)
            self._failed_addresses.failed(address)
            raise RequestFailed(Errno.INVALID, "wrong user id, name or password")
        self._failed_logins.succeeded(attempt)
        acking = msg.get("ack") is True and not session.legacy
        outbox = self._outbox(conn, session, user.id, acking)
        session.outbox = outbox  # before the claim: live messages may follow at once
        claimed = False
        try:
            claimed = self.presence.claim(user.id, conn)
        finally:
            if not claimed:
                session.outbox = None
        if not claimed:
            raise RequestFailed(Errno.ALREADY_ONLINE,
                                "this account is already logged in, on this or another device")
        session.user_id, session.name = user.id, user.name
        try:
            ack, stored = self._login_ack(outbox, user.id, user.name)
        except StoreUnavailable:
            self._drop_session(conn, session)
            raise
        if not acking:  # what the ack carries is confirmed once it is written
            conn.set_write_complete_callback(outbox.on_written)
        self._reply(conn, session, msg, ack)
        metrics.BACKLOG_DELIVERED.inc(len(ack["offlinemsg"]))
        outbox.start_backlog(stored)

    def _outbox(self, conn: Connection, session: Session, user_id: int, acking: bool) -> Outbox:
        caps, store_live, receipts, keep_unstored = self._outbox_shared
        return Outbox(user_id, acking, session.terminator, conn.send, conn.queued_bytes,
                      self.store, store_live, receipts, caps, keep_unstored)

    @cached_property
    def _outbox_shared(self) -> tuple[Caps, StoreLive, Receipts, KeepUnstored]:
        """What every login's outbox shares, made once (a bound method or a Caps
        made per login would cost every logged-in user its own copy)."""
        limits = self.limits
        # Under half the high-water mark: the outbox alone never makes a client
        # look like a slow reader (guards.py); what does not fit waits in storage.
        caps = Caps(window=limits.ack_window, keep=limits.max_offline,
                    keep_bytes=limits.max_offline_bytes,
                    push_limit=min(PUSH_LIMIT, limits.high_water_mark // 2))
        router = self.router
        return caps, router.store_offline, router.send_receipts, router.keep_unstored

    def _login_ack(self, outbox: Outbox, user_id: int, name: str) -> tuple[Message, int]:
        """The login ack, and how many stored messages are left to page out after it.

        A login without acknowledgements gets the oldest stored messages in
        the ack (at most ``login_batch`` of them, and about a frame's worth of
        bytes); an acknowledged one gets them all as frames of their own.
        """
        stored, _ = self.store.offline_box(user_id)
        first: list[Entry] = []
        if not outbox.acking and stored:
            budget = self.limits.max_frame
            for row, text in self.store.offline_page(user_id, self.limits.login_batch):
                budget -= len(text)
                if first and budget < 0:
                    break
                first.append(Entry.from_stored(row, text))
        friends = [
            {"id": f.id, "name": f.name, "state": f.state} for f in self.store.friends_of(user_id)
        ]
        groups = [
            {
                "id": g.id,
                "groupname": g.name,
                "groupdesc": g.desc,
                "users": [
                    {"id": m.id, "name": m.name, "state": m.state, "role": m.role}
                    for m in g.members
                ],
            }
            for g in self.store.groups_of(user_id)
        ]
        outbox.adopt_sent(first)
        ack: Message = {
            "msgid": MsgId.LOGIN_MSG_ACK,
            "errno": 0,
            "id": user_id,
            "name": name,
            "offlinemsg": [orjson.loads(entry.payload) for entry in first],
            "pending": max(stored - len(first), 0),
            "friends": friends,
            "groups": groups,
        }
        return ack, stored - len(first)

    def logout(self, conn: Connection, session: Session, msg: Message) -> None:
        """The ack waits for the release (off the loop), so that once a client has
        it, the cluster sees the user offline; later frames wait with it."""
        self._check_identity(session, msg)

        def acked(_: Outcome) -> None:
            self._reply(conn, session, msg, {"msgid": MsgId.LOGINOUT_MSG_ACK, "errno": 0})

        def released() -> None:  # the releasing thread
            session.post(lambda: self._offloaded(conn, session, msg, Outcome(), acked))

        session.suspended = True
        self._drop_session(conn, session, released)

    def on_disconnect(self, conn: Connection, session: Session) -> None:
        """The connection is gone: its user, if any, is offline at once."""
        if session.closing_since is None:  # a login still at a worker must not claim it
            session.closing_since = time.monotonic()
        self._drop_session(conn, session)

    def _drop_session(self, conn: Connection, session: Session,
                      released: Callable[[], None] | None = None) -> None:
        """The login of ``session`` ends; ``released`` is called (from any thread)
        once the cluster sees the user offline."""
        user_id = session.user_id
        if user_id is None:
            if released is not None:
                released()
            return
        session.user_id = session.name = None
        outbox = session.outbox
        if outbox is not None:
            gone = not conn.connected
            if gone or outbox.acking:
                conn.set_write_complete_callback(None)
            outbox.close(gone)  # before the release: a new login must find it stored
        self.presence.release(user_id, conn, released)

    def delivery_ack(self, conn: Connection, session: Session, msg: Message) -> None:
        mid = req_int(msg, "mid")
        outbox = session.outbox
        if outbox is None or not outbox.acking:
            raise RequestFailed(Errno.BAD_REQUEST, "log in with \"ack\": true to acknowledge")
        outbox.ack(mid)


def _login_account(msg: Message) -> int | str:
    """The account a login names: its id (an int) or its name (a str), never both."""
    user_id = opt_int(msg, "id")
    name = opt_str(msg, "name")
    if user_id is not None and name is not None:
        raise BadField("give either 'id' or 'name', not both")
    if user_id is not None:
        return user_id
    if name is None:
        raise BadField("field 'id' (an integer) or 'name' (a string) is required")
    return name
