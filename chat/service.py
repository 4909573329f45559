"""The chat business: a dispatch table from msgid to handler.

Handlers run in the loop thread of the connection that sent the request and
see its `Session` (``conn.context``).  Delivery to users, the online map and
its lock live in `chat.router.Router`.  Replies are checked in the order
PROTOCOL.md gives: frame, msgid known, logged in, fields, identity, business
rules; a connection over its request rate is refused before all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

from chat import metrics
from chat.bus import Bus
from chat.limits import AddressBuckets, FailureThrottle, Limits
from chat.logbook import WarningSummary
from chat.mids import DEAD_AFTER_MS, MAX_NODE, MIGRATION_NODE, MidGenerator, now_ms
from chat.names import BadName, check_name
from chat.outbox import PUSH_LIMIT, Caps, Entry, Outbox
from chat.presence import Presence
from chat.protocol import (
    ACKED_REQUESTS,
    LEGACY_SUPPRESSED,
    BadField,
    Errno,
    FrameError,
    Message,
    MsgId,
    error_reply,
    opt_int,
    opt_str,
    req_int,
    req_str,
    to_legacy_login_ack,
    valid_seq,
)
from chat.router import Router
from chat.session import Connection, Session
from chat.store import GroupNameTaken, NameTaken, Store, StoreUnavailable, User
from chat.workers import Outcome, WorkerPool

log = logging.getLogger("chat.service")

Handler = Callable[[Connection, Session, Message], None]
Item = Message | FrameError


class RequestFailed(Exception):
    """A request the business rules refuse; becomes the reply's errno/errmsg."""

    def __init__(self, errno: Errno, errmsg: str) -> None:
        super().__init__(errmsg)
        self.errno = errno
        self.errmsg = errmsg


class ChatService:
    def __init__(
        self, store: Store, bus: Bus, server_id: str, limits: Limits | None = None
    ) -> None:
        self.store = store
        self.bus = bus
        self.server_id = server_id
        self.limits = limits or Limits()
        # Warnings a client can repeat at will are summarised (chat/logbook.py).
        self.warnings = WarningSummary(logging.getLogger("chat"), self.limits.log_interval)
        self.router = Router(store, bus, self.limits.max_offline, self.limits.max_offline_bytes,
                             self.warnings)
        self.mids = MidGenerator(MIGRATION_NODE)  # until start() claims this server's node
        self._max_msg_len = self.limits.max_msg_len  # read on every chat message
        self._max_frame = self.limits.max_frame
        self._mids_recorded = 0
        self.presence = Presence(store, bus, self.router, server_id)
        # Keyed by (account, address): a stranger's failures never lock the owner out.
        self._failed_logins = FailureThrottle(self.limits.account_failures,
                                              self.limits.login_window)
        self._failed_addresses = FailureThrottle(self.limits.address_failures,
                                                 self.limits.login_window)
        self._registrations = AddressBuckets(self.limits.register_rate,
                                             self.limits.register_burst)
        # Password hashes run here, never on a loop thread (see _offload).
        self.workers = WorkerPool(self.limits.hash_workers, self.limits.hash_queue, "hash")
        self._handlers: dict[int, Handler] = {
            MsgId.LOGIN_MSG: self.login,
            MsgId.REG_MSG: self.register,
            MsgId.ONE_CHAT_MSG: self.one_chat,
            MsgId.ADD_FRIEND_MSG: self.add_friend,
            MsgId.CREATE_GROUP_MSG: self.create_group,
            MsgId.ADD_GROUP_MSG: self.add_group,
            MsgId.GROUP_CHAT_MSG: self.group_chat,
            MsgId.LOGINOUT_MSG: self.logout,
            MsgId.DELIVERY_ACK: self.delivery_ack,
        }
        self._anonymous = frozenset({MsgId.LOGIN_MSG, MsgId.REG_MSG})

    def start(self) -> None:
        """Claim a message-id node, clear what a crash of this server left online,
        then start routing."""
        node, floor = self.store.claim_node(self.server_id, now_ms(), DEAD_AFTER_MS, MAX_NODE)
        self.mids = MidGenerator(node, floor)
        self.presence.clear_own()
        self.bus.start(self.router.deliver_from_bus, self.router.kick)

    def record_mids(self) -> None:
        """Record the time of this server's last message id (chat/mids.py says why).

        A database call: from a thread that may block (a loop of the pool).
        """
        last = self.mids.last_ms
        if last == self._mids_recorded:
            return
        try:
            self.store.renew_node(self.mids.node, self.server_id, last)
            self._mids_recorded = last
        except StoreUnavailable as exc:
            log.debug("time of the last message id not recorded: %s", exc)

    # -- frames in -------------------------------------------------------------

    def on_data(self, conn: Connection, session: Session, data: bytes) -> None:
        """Loop thread of ``conn``: decode and handle every complete frame, in order.

        While a request of the connection waits for a worker (``suspended``),
        what arrives is held, undecoded, and served once that request is done.
        """
        if session.suspended:
            self._hold(conn, session, data)
        else:
            self._serve(conn, session, session.decoder.feed(data))

    def _serve(self, conn: Connection, session: Session, items: list[Item]) -> None:
        for i, item in enumerate(items):
            if type(item) is dict:
                try:
                    self.handle(conn, session, item)
                except Exception:
                    self._bug(conn, session, item)
                if session.closing_since is not None:
                    return  # condemned: the rest of its input is not served
                if session.suspended:
                    session.waiting = items[i + 1:]
                    return
                continue
            assert isinstance(item, FrameError)
            metrics.request_failed(None, item.errno)
            self._reply_error(conn, session, item.errno, item.errmsg, None)
            if item.fatal:
                session.closing_since = time.monotonic()
                self.warnings.warn("fatal-frame", "{events} more connections closed for a "
                                   "bad frame in the last {seconds} s", conn.name, 1,
                                   "%s: %s, closing", conn.name, item.errmsg,
                                   level=logging.INFO)
                metrics.CONNECTIONS_DROPPED.labels("frame_too_large").inc()
                conn.force_close() if session.legacy else conn.shutdown()
                return

    def handle(self, conn: Connection, session: Session, msg: Message) -> None:
        """Loop thread of ``conn``: one request, answered; raises only on a bug."""
        msgid = msg.get("msgid")
        handler = self._handlers.get(msgid) if type(msgid) is int else None
        # A seq that cannot be echoed is dropped before any reply could carry it.
        bad_seq = "seq" in msg and not valid_seq(msg["seq"])
        if bad_seq:
            del msg["seq"]
        metrics.REQUESTS.inc(msgid if handler is not None else None)
        try:
            if session.bucket is not None:
                if session.bucket.take(session.read_at):
                    session.refused = 0
                else:
                    self._over_rate(conn, session)
            if handler is None:
                raise RequestFailed(Errno.BAD_REQUEST, f"unknown msgid {msgid!r}")
            if session.user_id is None and msgid not in self._anonymous:
                raise RequestFailed(Errno.NOT_LOGGED_IN, "log in first")
            if bad_seq:
                raise BadField("field 'seq' must be an integer in -2^63..2^63-1 "
                               "or a string of at most 64 characters")
            handler(conn, session, msg)
        except _REFUSALS as exc:
            self._refuse(conn, session, msg, exc)

    def _refuse(self, conn: Connection, session: Session, msg: Message,
                exc: RequestFailed | BadField | StoreUnavailable) -> None:
        """The reply to a request the rules, its fields or the storage refused."""
        if isinstance(exc, RequestFailed):
            self._fail(conn, session, msg, exc.errno, exc.errmsg)
        elif isinstance(exc, BadField):
            self._fail(conn, session, msg, Errno.BAD_REQUEST, str(exc))
        else:
            self.warnings.warn("storage", "{events} more requests failed, storage "
                               "unavailable, in the last {seconds} s", None, 1,
                               "%s: msgid %s failed, storage unavailable: %s",
                               conn.name, msg.get("msgid"), exc,
                               extra=_context(conn, session, msg.get("msgid"),
                                              Errno.SERVER_ERROR))
            self._fail(conn, session, msg, Errno.SERVER_ERROR, "storage unavailable, try again")

    def _hold(self, conn: Connection, session: Session, data: bytes) -> None:
        session.held += data
        if len(session.held) > HELD_FRAMES * self.limits.max_frame:
            session.closing_since = time.monotonic()
            self.warnings.warn("held", "{events} more connections closed for sending too "
                               "much during a login in the last {seconds} s", None, 1,
                               "%s: %d bytes sent while its login or registration waited, "
                               "closing", conn.name, len(session.held))
            conn.force_close()

    def _offload(self, conn: Connection, session: Session, msg: Message,
                 work: Callable[[], object], then: Callable[[Outcome], None]) -> None:
        """Run ``work`` on a worker, then ``then(outcome)`` in the connection's loop.

        The connection's later frames wait meanwhile (``suspended``), so a chat
        request right behind a login is served after the login.  A full
        queue refuses the request at once.
        """
        def done(outcome: Outcome) -> None:  # a worker thread
            session.post(lambda: self._offloaded(conn, session, msg, outcome, then))

        session.suspended = True  # before submit: with no worker threads it is done at once
        if not self.workers.submit(work, done):
            session.suspended = False
            raise RequestFailed(Errno.SERVER_ERROR, "server busy, try again")

    def _offloaded(self, conn: Connection, session: Session, msg: Message,
                   outcome: Outcome, then: Callable[[Outcome], None]) -> None:
        """Loop thread: finish the offloaded request, then serve what waited behind it."""
        if session.closing_since is not None:
            return  # gone meanwhile: nobody to answer, nothing to log in
        try:
            then(outcome)
        except _REFUSALS as exc:
            self._refuse(conn, session, msg, exc)
        except Exception:
            self._bug(conn, session, msg)
        session.suspended = False
        waiting, session.waiting = session.waiting, []
        held, session.held = bytes(session.held), bytearray()
        self._serve(conn, session, waiting)
        if held and session.closing_since is None:
            self.on_data(conn, session, held)

    def _bug(self, conn: Connection, session: Session, msg: Message) -> None:
        """A request ended in an exception: log it once, answer errno 9, go on.

        The reply is built from the request's msgid and (already checked) seq
        only, so whatever else in the request broke the handler cannot break it.
        """
        msgid = msg.get("msgid")
        log.exception("%s: bug while handling msgid %r", conn.name, msgid,
                      extra=_context(conn, session, msgid, Errno.SERVER_ERROR))
        minimal: Message = {"msgid": msgid if type(msgid) is int else None}
        if "seq" in msg and valid_seq(msg["seq"]):
            minimal["seq"] = msg["seq"]
        try:
            self._fail(conn, session, minimal, Errno.SERVER_ERROR, "internal server error")
        except Exception:
            log.exception("%s: could not even answer errno 9", conn.name)

    def _over_rate(self, conn: Connection, session: Session) -> None:
        """Refuse a request over the rate; a client that keeps on is cut off."""
        session.refused += 1
        if session.refused == 1 and "rate" not in session.noted:
            session.noted.add("rate")
            self.warnings.warn("rate", "{events} more connections went over the request "
                               "rate in the last {seconds} s", conn.name, 1,
                               "%s: over %g requests/s, refusing", conn.name,
                               self.limits.rate, level=logging.INFO)
        if session.refused > self.limits.burst:
            # Condemned: on_data serves nothing more of it, the sweep ends it
            # if the client does not close after reading its refusals.
            session.closing_since = time.monotonic()
            metrics.CONNECTIONS_DROPPED.labels("flood").inc()
            self.warnings.warn("flood", "{events} more flooding connections closed in "
                               "the last {seconds} s", conn.name, 1,
                               "%s: still flooding after %d refusals, closing", conn.name,
                               session.refused)
            conn.shutdown()
        raise RequestFailed(Errno.SERVER_ERROR, "too many requests, slow down")

    # -- replies out -----------------------------------------------------------

    def _reply(self, conn: Connection, session: Session, request: Message, reply: Message) -> None:
        if session.legacy:
            if reply["msgid"] in LEGACY_SUPPRESSED:
                return
            if reply["msgid"] == MsgId.LOGIN_MSG_ACK:
                reply = to_legacy_login_ack(reply)
        if "seq" in request:
            reply["seq"] = request["seq"]
        conn.send(orjson.dumps(reply) + session.terminator)

    def _fail(
        self, conn: Connection, session: Session, request: Message, errno: Errno, errmsg: str
    ) -> None:
        msgid = request.get("msgid")
        metrics.request_failed(msgid, errno)
        ack = ACKED_REQUESTS.get(msgid) if type(msgid) is int else None
        if ack is None:
            self._reply_error(conn, session, errno, errmsg, request)
        else:
            self._reply(conn, session, request, {"msgid": ack, "errno": errno, "errmsg": errmsg})

    def _reply_error(
        self, conn: Connection, session: Session, errno: Errno, errmsg: str,
        request: Message | None,
    ) -> None:
        if not session.legacy:
            conn.send(orjson.dumps(error_reply(errno, errmsg, request)) + b"\n")

    def _check_identity(self, session: Session, msg: Message) -> None:
        claimed = opt_int(msg, "id")
        if claimed is not None and claimed != session.user_id:
            raise RequestFailed(Errno.FORBIDDEN, "id is not the logged-in user")

    # -- account ---------------------------------------------------------------

    def register(self, conn: Connection, session: Session, msg: Message) -> None:
        name = req_str(msg, "name", 1, 50)
        password = req_str(msg, "password", 1, 128)
        try:
            name = check_name(name)
        except BadName as exc:
            raise RequestFailed(Errno.INVALID, str(exc)) from None
        if not self._registrations.take(session.peer_host or _host(conn)):
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
        address = session.peer_host or _host(conn)
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
        limits = self.limits
        # Under half the high-water mark: the outbox alone never makes a client
        # look like a slow reader (guards.py); what does not fit waits in storage.
        caps = Caps(window=limits.ack_window, keep=limits.max_offline,
                    keep_bytes=limits.max_offline_bytes,
                    push_limit=min(PUSH_LIMIT, limits.high_water_mark // 2))
        return Outbox(user_id, acking, session.terminator, conn.send, conn.queued_bytes,
                      self.store, self.router.store_offline, self.router.send_receipts, caps,
                      self.router.keep_unstored)

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

    # -- friends and groups ----------------------------------------------------

    def add_friend(self, conn: Connection, session: Session, msg: Message) -> None:
        friend_id = req_int(msg, "friendid")
        self._check_identity(session, msg)
        assert session.user_id is not None
        if friend_id == session.user_id:
            raise RequestFailed(Errno.BAD_REQUEST, "you cannot befriend yourself")
        friend = self.store.get_user(friend_id)
        if friend is None:
            raise RequestFailed(Errno.NOT_FOUND, f"user {friend_id} does not exist")
        self.store.add_friend(session.user_id, friend_id)
        reply = {"id": friend.id, "name": friend.name, "state": friend.state}
        self._reply(conn, session, msg,
                    {"msgid": MsgId.ADD_FRIEND_MSG_ACK, "errno": 0, "friend": reply})

    def create_group(self, conn: Connection, session: Session, msg: Message) -> None:
        name = req_str(msg, "groupname", 1, 50)
        desc = req_str(msg, "groupdesc", 0, 200)
        self._check_identity(session, msg)
        assert session.user_id is not None
        try:
            group_id = self.store.create_group(session.user_id, name, desc)
        except GroupNameTaken:
            raise RequestFailed(Errno.CONFLICT, "this group name is already taken") from None
        self._reply(conn, session, msg,
                    {"msgid": MsgId.CREATE_GROUP_MSG_ACK, "errno": 0, "groupid": group_id})

    def add_group(self, conn: Connection, session: Session, msg: Message) -> None:
        group_id = req_int(msg, "groupid")
        self._check_identity(session, msg)
        assert session.user_id is not None
        if not self.store.join_group(group_id, session.user_id):
            raise RequestFailed(Errno.NOT_FOUND, f"group {group_id} does not exist")
        self._reply(conn, session, msg,
                    {"msgid": MsgId.ADD_GROUP_MSG_ACK, "errno": 0, "groupid": group_id})

    # -- chat ------------------------------------------------------------------

    def one_chat(self, conn: Connection, session: Session, msg: Message) -> None:
        # The hot path of the server: the checks of req_int/req_str/opt_str/
        # _check_identity inlined, same order, same errors.
        to_key = "to" if "to" in msg else "toid"
        to = msg.get(to_key)
        if type(to) is not int:
            raise BadField(f"field {to_key!r} must be an integer")
        text = msg.get("msg")
        if not isinstance(text, str):
            raise BadField("field 'msg' must be a string")
        if len(text) > self._max_msg_len:
            raise BadField(f"field 'msg' must be at most {self._max_msg_len} characters")
        sent_at = msg.get("time")
        if sent_at is not None and (not isinstance(sent_at, str) or len(sent_at) > MAX_TIME_LEN):
            raise BadField(f"field 'time' must be a string of at most {MAX_TIME_LEN} characters")
        claimed = msg.get("id")
        if claimed is not None and (type(claimed) is not int or claimed != session.user_id):
            self._check_identity(session, msg)  # raises the right error
        mid = self.mids()
        if len(msg) == 6 and to_key == "to" and sent_at and claimed is not None and "name" in msg:
            # The usual request has exactly the fields the recipient gets, its
            # id checked above: forwarded with the server's name, not rebuilt.
            msg["name"] = session.name
            msg["mid"] = mid
            payload = orjson.dumps(msg)
            del msg["mid"]
        else:
            payload = orjson.dumps({
                "msgid": _ONE_CHAT_MSG, "id": session.user_id, "name": session.name,
                "to": to, "msg": text, "time": sent_at or _now(), "mid": mid,
            })
        if len(payload) > self._max_frame:
            raise BadField(f"the message is over {self._max_frame} bytes as forwarded")
        entry = Entry(mid, session.user_id, _ONE_CHAT_MSG, payload)  # type: ignore[arg-type]
        if self.router.send_live(to, entry, conn):
            state = "delivered"
        elif self.store.get_user(to) is None:
            raise RequestFailed(Errno.NOT_FOUND, f"user {to} does not exist")
        else:
            self.router.store_offline([(to, payload)])
            state = "stored"
        if "seq" in msg:
            self._reply(conn, session, msg, {
                "msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": msg["msgid"], "state": state,
                "mid": mid,
            })

    def group_chat(self, conn: Connection, session: Session, msg: Message) -> None:
        group_id = req_int(msg, "groupid")
        text = req_str(msg, "msg", 0, self.limits.max_msg_len)
        sent_at = opt_str(msg, "time", MAX_TIME_LEN) or _now()
        self._check_identity(session, msg)
        members = self.store.group_member_ids(group_id)
        if members is None:
            raise RequestFailed(Errno.NOT_FOUND, f"group {group_id} does not exist")
        if session.user_id not in members:
            raise RequestFailed(Errno.FORBIDDEN, "you are not a member of this group")
        mid = self.mids()
        payload = orjson.dumps({
            "msgid": MsgId.GROUP_CHAT_MSG, "id": session.user_id, "name": session.name,
            "groupid": group_id, "msg": text, "time": sent_at, "mid": mid,
        })
        if len(payload) > self.limits.max_frame:
            raise BadField(f"the message is over {self.limits.max_frame} bytes as forwarded")
        others = [member for member in members if member != session.user_id]
        entry = Entry(mid, session.user_id, MsgId.GROUP_CHAT_MSG, payload)
        offline = self.router.send_live_many(others, entry, session.read_at)
        if offline:
            self.router.store_offline([(member, payload) for member in offline])
        if "seq" in msg:
            self._reply(conn, session, msg, {
                "msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": msg["msgid"],
                "state": "delivered", "mid": mid, "live": len(others) - len(offline),
                "stored": len(offline),
            })

    # -- shutdown --------------------------------------------------------------

    def online_count(self) -> int:
        return self.router.count()

    def shutdown(self) -> None:
        """Mark every user of this process offline (only this process's users)."""
        self.presence.release_all()
        self.bus.close()
        self.workers.stop(timeout=0)  # daemon threads: the process is ending


_REFUSALS = (RequestFailed, BadField, StoreUnavailable)
# What a connection may send while its login or registration waits for a
# worker, in frames of the largest size; more closes it (memory stays bounded).
HELD_FRAMES = 4

# Hot-path constants: fetching an enum member costs ~150 ns on Python 3.11.
_ONE_CHAT_MSG = int(MsgId.ONE_CHAT_MSG)
MAX_TIME_LEN = 64  # the sender's "time" text, forwarded and stored as it is


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


def _context(conn: Connection, session: Session, msgid: object = None,
             errno: Errno | None = None) -> dict[str, object]:
    """The ``extra=`` of a log line about a request (see chat/logs.py)."""
    return {"connection": conn.name, "user": session.user_id,
            "msgid": msgid if type(msgid) is int else None,
            "errno": int(errno) if errno is not None else None}


def _host(conn: Connection) -> str:
    address = conn.peer_address
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
