"""The chat business: a dispatch table from msgid to handler.

Handlers run in the loop thread of the connection that sent the request and
see its `Session` (``conn.context``).  How requests are served in order, one
reply each, is `chat.requests.RequestPipeline`'s; the account handlers
(register, login, logout) are `chat.accounts.AccountHandlers`'; this module
has the rest (friends, groups, chat) and wires them up.  Delivery to users,
the online map and its lock live in `chat.router.Router`.
"""

from __future__ import annotations

import logging
import time

import orjson

from chat import metrics
from chat.accounts import AccountHandlers
from chat.bus import Bus, Handoff
from chat.limits import AddressBuckets, FailureThrottle, Limits
from chat.logbook import WarningSummary
from chat.mids import DEAD_AFTER_MS, MAX_NODE, MIGRATION_NODE, MidGenerator, now_ms
from chat.outbox import Entry
from chat.presence import Presence
from chat.protocol import (
    BadField,
    Errno,
    Message,
    MsgId,
    opt_str,
    req_int,
    req_str,
)
from chat.requests import Handler, RequestFailed
from chat.router import Router
from chat.session import Connection, Session
from chat.store import GroupNameTaken, Store, StoreUnavailable
from chat.workers import Outcome, WorkerPool

log = logging.getLogger("chat.service")

class ChatService(AccountHandlers):
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
        self.bus.start(self.router.deliver_from_bus, self.router.kick,
                       self.router.deliver_many, self.router.settle)

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
        elif self.router.later:  # another server's, or nobody's: answered once settled
            self._hand_off(conn, session, msg, Handoff([(to, payload)], check=True), mid)
            return
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
        if offline and self.router.later:  # answered once the bus settled them
            self._hand_off(conn, session, msg, Handoff([(m, payload) for m in offline]), mid,
                           len(others) - len(offline))
            return
        if offline:
            self.router.store_offline([(member, payload) for member in offline])
        if "seq" in msg:
            self._reply(conn, session, msg, {
                "msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": msg["msgid"],
                "state": "delivered", "mid": mid, "live": len(others) - len(offline),
                "stored": len(offline),
            })

    # -- chat through a bus that publishes later (the cluster) ----------------------

    def _hand_off(self, conn: Connection, session: Session, msg: Message, handoff: Handoff,
                  mid: int, live_here: int | None = None) -> None:
        """Give messages for users not here to the bus and suspend the connection
        until the bus settled them: then the reply goes out (``"delivered"`` or
        ``"stored"``; a group's live and stored counts) and the connection's
        later frames are served, in order, as after a password hash.

        ``live_here``: a group message's members reached on this server (None:
        one-to-one).  A loop never waits on Redis; per-sender order holds since
        the sender's next message is handed off only after this one settled.
        """
        def landed(outcome: Outcome) -> None:  # the connection's loop
            settled: Handoff = outcome.value
            if settled.reached:
                metrics.DELIVERED.inc("bus", settled.reached)
                # Before the sender's next message: one here now gets it back through Redis.
                self.router.returning([uid for uid, _ in settled.items], session.user_id or 0,
                                      mid)
            if settled.error is not None:
                raise settled.error
            if settled.unknown:
                to = settled.items[0][0]
                raise RequestFailed(Errno.NOT_FOUND, f"user {to} does not exist")
            if "seq" not in msg:
                return
            if live_here is None:
                reply: Message = {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": msg["msgid"],
                                  "state": "delivered" if settled.reached else "stored",
                                  "mid": mid}
            else:
                reply = {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": msg["msgid"],
                         "state": "delivered", "mid": mid,
                         "live": live_here + settled.reached, "stored": settled.stored}
            self._reply(conn, session, msg, reply)

        handing = True  # read by done() when it runs: a closure sees the rebinding below

        def done(settled: Handoff) -> None:  # the bus's thread, or this loop's
            if handing or not conn.owned_here():
                session.post(lambda: self._offloaded(conn, session, msg, Outcome(settled),
                                                     landed))
            else:  # settled by this loop's round: no hop through the mailbox
                self._offloaded(conn, session, msg, Outcome(settled), landed)

        handoff.done = done
        session.suspended = True  # before the handoff: a closed bus settles it at once
        self.router.hand_off(handoff, conn)
        handing = False  # settled from now on means after this handler returned

    # -- shutdown --------------------------------------------------------------

    def online_count(self) -> int:
        return self.router.count()

    def shutdown(self) -> None:
        """Mark every user of this process offline (only this process's users)."""
        self.presence.release_all()
        self.bus.close()
        self.workers.stop(timeout=0)  # daemon threads: the process is ending


# Hot-path constants: fetching an enum member costs ~150 ns on Python 3.11.
_ONE_CHAT_MSG = int(MsgId.ONE_CHAT_MSG)
MAX_TIME_LEN = 64  # the sender's "time" text, forwarded and stored as it is


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
