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
from chat.limits import FailureThrottle, Limits
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
)
from chat.router import Router
from chat.session import Connection, Session
from chat.store import GroupNameTaken, NameTaken, Store, StoreUnavailable

log = logging.getLogger("chat.service")

Handler = Callable[[Connection, Session, Message], None]


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
        self.router = Router(store, bus, self.limits.max_offline)
        self.presence = Presence(store, bus, self.router, server_id)
        self._failed_accounts = FailureThrottle(self.limits.account_failures,
                                                self.limits.login_window)
        self._failed_addresses = FailureThrottle(self.limits.address_failures,
                                                 self.limits.login_window)
        self._handlers: dict[int, Handler] = {
            MsgId.LOGIN_MSG: self.login,
            MsgId.REG_MSG: self.register,
            MsgId.ONE_CHAT_MSG: self.one_chat,
            MsgId.ADD_FRIEND_MSG: self.add_friend,
            MsgId.CREATE_GROUP_MSG: self.create_group,
            MsgId.ADD_GROUP_MSG: self.add_group,
            MsgId.GROUP_CHAT_MSG: self.group_chat,
            MsgId.LOGINOUT_MSG: self.logout,
        }
        self._anonymous = frozenset({MsgId.LOGIN_MSG, MsgId.REG_MSG})

    def start(self) -> None:
        """Clear what a crash of this server left online, then start routing."""
        self.presence.clear_own()
        self.bus.start(self.router.deliver_from_bus, self.router.kick)

    # -- frames in -------------------------------------------------------------

    def on_data(self, conn: Connection, session: Session, data: bytes) -> None:
        """Loop thread of ``conn``: decode and handle every complete frame, in order."""
        for item in session.decoder.feed(data):
            if type(item) is dict:
                self.handle(conn, session, item)
                continue
            assert isinstance(item, FrameError)
            metrics.request_failed(None, item.errno)
            self._reply_error(conn, session, item.errno, item.errmsg, None)
            if item.fatal:
                metrics.CONNECTIONS_DROPPED.labels("frame_too_large").inc()
                log.info("%s: %s, closing", conn.name, item.errmsg,
                         extra={"connection": conn.name, "errno": int(item.errno)})
                conn.force_close() if session.legacy else conn.shutdown()
                return

    def handle(self, conn: Connection, session: Session, msg: Message) -> None:
        msgid = msg.get("msgid")
        handler = self._handlers.get(msgid) if type(msgid) is int else None
        metrics.REQUESTS.inc(msgid if handler is not None else None)
        try:
            if session.bucket is not None:
                if session.bucket.take(session.last_seen):
                    session.refused = 0
                else:
                    self._over_rate(conn, session)
            if handler is None:
                raise RequestFailed(Errno.BAD_REQUEST, f"unknown msgid {msgid!r}")
            if session.user_id is None and msgid not in self._anonymous:
                raise RequestFailed(Errno.NOT_LOGGED_IN, "log in first")
            seq = msg.get("seq")
            if seq is not None and (type(seq) is not int and not isinstance(seq, str)):
                raise RequestFailed(Errno.BAD_REQUEST, "field 'seq' must be an integer or a string")
            handler(conn, session, msg)
        except RequestFailed as exc:
            self._fail(conn, session, msg, exc.errno, exc.errmsg)
        except BadField as exc:
            self._fail(conn, session, msg, Errno.BAD_REQUEST, str(exc))
        except StoreUnavailable as exc:
            log.warning("%s: msgid %s failed, storage unavailable: %s", conn.name, msgid, exc,
                        extra=_context(conn, session, msgid, Errno.SERVER_ERROR))
            self._fail(conn, session, msg, Errno.SERVER_ERROR, "storage unavailable, try again")
        except Exception:
            log.exception("%s: bug while handling msgid %r", conn.name, msgid,
                          extra=_context(conn, session, msgid, Errno.SERVER_ERROR))
            self._fail(conn, session, msg, Errno.SERVER_ERROR, "internal server error")

    def _over_rate(self, conn: Connection, session: Session) -> None:
        """Refuse a request over the rate; a client that keeps on is cut off."""
        session.refused += 1
        if session.refused == 1:
            log.info("%s: over %g requests/s, refusing", conn.name, self.limits.rate,
                     extra=_context(conn, session))
        if session.refused > self.limits.burst:
            if session.refused == self.limits.burst + 1:  # the rest of its read: once
                log.warning("%s: still flooding after %d refusals, closing", conn.name,
                            session.refused, extra=_context(conn, session))
                metrics.CONNECTIONS_DROPPED.labels("flood").inc()
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
            user_id = self.store.register(name, password)
        except NameTaken:
            raise RequestFailed(Errno.INVALID, "this name is already taken") from None
        self._reply(conn, session, msg, {"msgid": MsgId.REG_MSG_ACK, "errno": 0, "id": user_id})

    def login(self, conn: Connection, session: Session, msg: Message) -> None:
        user_id = req_int(msg, "id")
        password = req_str(msg, "password")
        if session.user_id is not None:
            raise RequestFailed(Errno.BAD_REQUEST, "already logged in here, log out first")
        address = _host(conn)
        if self._failed_accounts.blocked(user_id) or self._failed_addresses.blocked(address):
            raise RequestFailed(Errno.INVALID, "too many failed logins, try again later")
        user = self.store.authenticate(user_id, password)
        if user is None:
            self._failed_accounts.failed(user_id)
            self._failed_addresses.failed(address)
            raise RequestFailed(Errno.INVALID, "id or password is invalid!")
        self._failed_accounts.succeeded(user_id)
        if not self.presence.claim(user_id, conn):
            raise RequestFailed(Errno.ALREADY_ONLINE, "this account is using, input another!")
        session.user_id, session.name = user.id, user.name
        session.offline_sent_upto = 0
        try:
            ack, last_offline = self._login_ack(user.id, user.name)
        except StoreUnavailable:
            self._drop_session(conn, session)
            raise
        if last_offline is not None:
            self.router.delete_when_written(conn, session, user.id, last_offline)
        self._reply(conn, session, msg, ack)
        metrics.BACKLOG_DELIVERED.inc(len(ack["offlinemsg"]))

    def _login_ack(self, user_id: int, name: str) -> tuple[Message, int | None]:
        rows = self.store.fetch_offline(user_id)
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
        ack: Message = {
            "msgid": MsgId.LOGIN_MSG_ACK,
            "errno": 0,
            "id": user_id,
            "name": name,
            "offlinemsg": [orjson.loads(text) for _, text in rows],
            "friends": friends,
            "groups": groups,
        }
        return ack, (rows[-1][0] if rows else None)

    def logout(self, conn: Connection, session: Session, msg: Message) -> None:
        self._check_identity(session, msg)
        self._drop_session(conn, session)
        self._reply(conn, session, msg, {"msgid": MsgId.LOGINOUT_MSG_ACK, "errno": 0})

    def on_disconnect(self, conn: Connection, session: Session) -> None:
        """The connection is gone: its user, if any, is offline at once."""
        self._drop_session(conn, session)

    def _drop_session(self, conn: Connection, session: Session) -> None:
        user_id = session.user_id
        if user_id is None:
            return
        session.user_id = session.name = None
        if session.undeleted is not None:
            self.router.delete_sent(session, *session.undeleted)
        self.presence.release(user_id, conn)

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
        if len(text) > self.limits.max_msg_len:
            raise BadField(f"field 'msg' must be at most {self.limits.max_msg_len} characters")
        sent_at = msg.get("time")
        if sent_at is not None and not isinstance(sent_at, str):
            raise BadField("field 'time' must be a string")
        claimed = msg.get("id")
        if claimed is not None and (type(claimed) is not int or claimed != session.user_id):
            self._check_identity(session, msg)  # raises the right error
        if len(msg) == 6 and to_key == "to" and sent_at and claimed is not None and "name" in msg:
            # The usual request has exactly the fields the recipient gets, its
            # id checked above: forwarded with the server's name, not rebuilt.
            msg["name"] = session.name
            payload = orjson.dumps(msg)
        else:
            payload = orjson.dumps({
                "msgid": _ONE_CHAT_MSG, "id": session.user_id, "name": session.name,
                "to": to, "msg": text, "time": sent_at or _now(),
            })
        if self.router.send_live(to, payload, conn):
            state = "delivered"
        elif self.store.get_user(to) is None:
            raise RequestFailed(Errno.NOT_FOUND, f"user {to} does not exist")
        else:
            self.router.store_offline([(to, payload)])
            state = "stored"
        if "seq" in msg:
            self._ack_chat(conn, session, msg, state)

    def group_chat(self, conn: Connection, session: Session, msg: Message) -> None:
        group_id = req_int(msg, "groupid")
        text = req_str(msg, "msg", 0, self.limits.max_msg_len)
        sent_at = opt_str(msg, "time") or _now()
        self._check_identity(session, msg)
        members = self.store.group_member_ids(group_id)
        if members is None:
            raise RequestFailed(Errno.NOT_FOUND, f"group {group_id} does not exist")
        if session.user_id not in members:
            raise RequestFailed(Errno.FORBIDDEN, "you are not a member of this group")
        payload = orjson.dumps({
            "msgid": MsgId.GROUP_CHAT_MSG, "id": session.user_id, "name": session.name,
            "groupid": group_id, "msg": text, "time": sent_at,
        })
        others = (member for member in members if member != session.user_id)
        offline = self.router.send_live_many(others, payload, session.last_seen)
        if offline:
            self.router.store_offline([(member, payload) for member in offline])
        if "seq" in msg:
            self._ack_chat(conn, session, msg, "delivered")

    def _ack_chat(self, conn: Connection, session: Session, msg: Message, state: str) -> None:
        """CHAT_MSG_ACK, for a chat request that carries a ``seq`` (the caller checks)."""
        self._reply(conn, session, msg, {
            "msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": msg["msgid"], "state": state,
        })

    # -- shutdown --------------------------------------------------------------

    def online_count(self) -> int:
        return self.router.count()

    def shutdown(self) -> None:
        """Mark every user of this process offline (only this process's users)."""
        self.presence.release_all()
        self.bus.close()


# Hot-path constants: fetching an enum member costs ~150 ns on Python 3.11.
_ONE_CHAT_MSG = int(MsgId.ONE_CHAT_MSG)


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
