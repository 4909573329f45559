"""The chat server's persistent state behind one small, thread-safe API.

Each method is one call to :meth:`ConnectionPool.run`, so each is one
transaction on a connection borrowed for that call only; every method may
raise :class:`StoreUnavailable`.  Queries are written once in qmark style and
translated by the dialect (see ``dialect.py``).  Password hashing runs before
a connection is borrowed or after it is returned, never while holding one,
and inside the pool's ``blocking()`` like the queries.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson

from chat.names import lookup_form

from .errors import GroupNameTaken, NameTaken, StoreError
from .passwords import hash_password, verify_password
from .pool import Blocking, ConnectionPool
from .records import Group, GroupMember, User

Cursor = Any  # a DB-API cursor of either driver

# Ids a client may name: 1..2^63-1.  Any other id names nobody, and SQLite
# cannot even bind 2^63 and up (OverflowError), so it never reaches a query.
_ID_MAX = (1 << 63) - 1


def _known_range(value: int) -> bool:
    return 0 < value <= _ID_MAX


_SET_OFFLINE = "UPDATE user SET state='offline', server=NULL"
_GROUPS_OF = (
    "SELECT g.id, g.groupname, g.groupdesc, u.id, u.name, u.state, m.grouprole"
    " FROM groupuser me"
    " JOIN allgroup g ON g.id = me.groupid"
    " JOIN groupuser m ON m.groupid = me.groupid"
    " JOIN user u ON u.id = m.userid"
    " WHERE me.userid = ? ORDER BY g.id, u.id"
)


# How many of a user's newest stored messages ``store_offline_late`` puts in
# order with the late ones: the few a sender's server stored while the
# leaving server's unsubscribe was on its way, with room to spare.
LATE_TAIL = 128


def in_sender_order(texts: list[str]) -> list[str]:
    """Stored messages with each sender's in ``mid`` order, in the places that
    sender's messages hold; other senders' messages, and any without an
    integer ``id`` and ``mid``, stay where they are."""
    held: dict[int, list[tuple[int, int]]] = {}  # sender: (place, mid) of each
    for place, text in enumerate(texts):
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if type(msg) is dict:
            sender, mid = msg.get("id"), msg.get("mid")
            if type(sender) is int and type(mid) is int:
                held.setdefault(sender, []).append((place, mid))
    ordered = list(texts)
    for places in held.values():
        for (place, _), (source, _) in zip(places, sorted(places, key=lambda pm: pm[1]),
                                           strict=True):
            ordered[place] = texts[source]
    return ordered


class Store:
    """Users, presence, friends, groups and offline messages.  Thread-safe."""

    def __init__(self, pool: ConnectionPool, password_cost: int) -> None:
        self._pool = pool
        self._sql = pool.dialect.sql
        self._password_cost = password_cost
        self._dummy: str | None = None  # a hash of the configured cost, for no account

    @property
    def blocking(self) -> Blocking:
        """The context manager every wait of the store runs inside (see pool.py)."""
        return self._pool.blocking

    def _exec(self, cur: Cursor, query: str, params: tuple[Any, ...] = ()) -> Cursor:
        cur.execute(self._sql(query), params)
        return cur

    def _read(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def work(cur: Cursor) -> list[tuple[Any, ...]]:
            return list(self._exec(cur, query, params).fetchall())
        return self._pool.run(work, read_only=True)

    def _write(self, query: str, params: tuple[Any, ...]) -> int:
        """Run one statement; return the number of rows it changed."""
        return self._pool.run(lambda cur: int(self._exec(cur, query, params).rowcount))

    def close(self) -> None:
        """Close the pooled connections; the store must not be used afterwards."""
        self._pool.close()

    # -- users ---------------------------------------------------------------

    def register(self, name: str, password: str) -> int:
        """Create a user, return its id; raise NameTaken if the name exists.

        Names are stored in NFC (chat/names.py), the form every lookup uses.
        """
        name = unicodedata.normalize("NFC", name)
        with self._pool.blocking():
            stored = hash_password(password, self._password_cost)

        def work(cur: Cursor) -> int:
            try:
                self._exec(cur, "INSERT INTO user (name, password) VALUES (?, ?)",
                           (name, stored))
            except self._pool.integrity_error as exc:
                raise NameTaken(name) from exc
            return int(cur.lastrowid)
        return self._pool.run(work)

    def authenticate(self, user_id: int, password: str) -> User | None:
        """The user if the password matches, else None (also for no such user)."""
        rows: list[tuple[Any, ...]] = []
        if _known_range(user_id):
            rows = self._read("SELECT id, name, state, password FROM user WHERE id = ?",
                              (user_id,))
        return self._check_password(rows, password)

    def authenticate_by_name(self, name: str, password: str) -> User | None:
        """Like `authenticate`, for the user with this name (compared in NFC)."""
        rows: list[tuple[Any, ...]] = []
        stored_form = lookup_form(name)
        if stored_form is not None:
            rows = self._read("SELECT id, name, state, password FROM user WHERE name = ?",
                              (stored_form,))
        return self._check_password(rows, password)

    def _check_password(self, rows: list[tuple[Any, ...]], password: str) -> User | None:
        """The one place a login's password is checked, whatever named the account.

        ``rows`` holds the account's (id, name, state, password) row, or
        nothing.  For no account a dummy hash of the configured cost is
        checked all the same, so a login to an unknown account costs the same
        scrypt as a wrong password and its timing does not tell which ids exist.
        """
        stored = rows[0][3] if rows else self._dummy_hash()
        with self._pool.blocking():
            matches = verify_password(password, stored)
        if not rows or not matches:
            return None
        uid, name, state, _ = rows[0]
        return User(int(uid), name, state)

    def _dummy_hash(self) -> str:
        # Made once, at the first login to nobody; two threads racing here
        # both make a valid one, and either may stay.
        if self._dummy is None:
            with self._pool.blocking():
                self._dummy = hash_password("not a password", self._password_cost)
        return self._dummy

    def get_user(self, user_id: int) -> User | None:
        if not _known_range(user_id):
            return None
        rows = self._read("SELECT id, name, state FROM user WHERE id = ?", (user_id,))
        return User(int(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    # -- presence --------------------------------------------------------------

    def mark_online(self, user_id: int, server_id: str) -> bool:
        """Atomically offline -> online on ``server_id``; False if already online."""
        changed = self._write(
            "UPDATE user SET state='online', server=? WHERE id=? AND state='offline'",
            (server_id, user_id))
        return changed == 1

    def holder(self, user_id: int) -> str | None:
        """The server the user is marked online on, or None."""
        rows = self._read("SELECT server FROM user WHERE id=? AND state='online'", (user_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def mark_offline(self, user_id: int, server_id: str) -> None:
        """Set the user offline, but only if ``server_id`` holds it online."""
        self._write(f"{_SET_OFFLINE} WHERE id=? AND server=?", (user_id, server_id))

    def take_over(self, user_id: int, dead_server: str, server_id: str) -> bool:
        """Move the user from (crashed) ``dead_server`` to ``server_id``; False if it moved."""
        changed = self._write(
            "UPDATE user SET state='online', server=? WHERE id=? AND state='online'"
            " AND server=?", (server_id, user_id, dead_server))
        return changed == 1

    def reset_server(self, server_id: str) -> int:
        """Set offline every user ``server_id`` holds; return how many."""
        return self._write(f"{_SET_OFFLINE} WHERE server=?", (server_id,))

    def users_on_server(self, server_id: str) -> list[int]:
        rows = self._read("SELECT id FROM user WHERE server=? ORDER BY id", (server_id,))
        return [int(r[0]) for r in rows]

    # -- friends ---------------------------------------------------------------

    def add_friend(self, user_id: int, friend_id: int) -> None:
        """Make the two users friends of each other; adding again is a no-op."""
        query = "{insert_ignore} INTO friend (userid, friendid) VALUES (?, ?)"

        def work(cur: Cursor) -> None:
            cur.executemany(self._sql(query), [(user_id, friend_id), (friend_id, user_id)])
        self._pool.run(work)

    def friends_of(self, user_id: int) -> list[User]:
        rows = self._read(
            "SELECT u.id, u.name, u.state FROM friend f JOIN user u ON u.id = f.friendid"
            " WHERE f.userid = ? ORDER BY u.id", (user_id,))
        return [User(int(i), n, s) for i, n, s in rows]

    # -- groups ----------------------------------------------------------------

    def create_group(self, creator_id: int, name: str, desc: str) -> int:
        """Create a group with its creator as member; raise GroupNameTaken."""
        def work(cur: Cursor) -> int:
            try:
                self._exec(cur, "INSERT INTO allgroup (groupname, groupdesc) VALUES (?, ?)",
                           (name, desc))
            except self._pool.integrity_error as exc:
                raise GroupNameTaken(name) from exc
            group_id = int(cur.lastrowid)
            self._exec(cur, "INSERT INTO groupuser (groupid, userid, grouprole)"
                            " VALUES (?, ?, 'creator')", (group_id, creator_id))
            return group_id
        return self._pool.run(work)

    def join_group(self, group_id: int, user_id: int) -> bool:
        """Join as 'normal'; False if no such group.  Joining again changes nothing."""
        if not _known_range(group_id):
            return False
        def work(cur: Cursor) -> bool:
            self._exec(cur, "{insert_ignore} INTO groupuser (groupid, userid, grouprole)"
                            " SELECT id, ?, 'normal' FROM allgroup WHERE id = ?",
                       (user_id, group_id))
            if cur.rowcount == 1:
                return True
            return bool(self._exec(cur, "SELECT 1 FROM allgroup WHERE id = ?",
                                   (group_id,)).fetchall())
        return self._pool.run(work)

    def group_member_ids(self, group_id: int) -> list[int] | None:
        """Member ids in id order, or None if no such group.  One indexed query."""
        if not _known_range(group_id):
            return None
        rows = self._read(
            "SELECT g.id, m.userid FROM allgroup g"
            " LEFT JOIN groupuser m ON m.groupid = g.id"
            " WHERE g.id = ? ORDER BY m.userid", (group_id,))
        if not rows:
            return None
        return [int(r[1]) for r in rows if r[1] is not None]

    def groups_of(self, user_id: int) -> list[Group]:
        """The user's groups with all members, by group id then member id; one query."""
        groups: list[Group] = []
        members: list[GroupMember] = []
        current: tuple[int, str, str] | None = None
        for gid, gname, gdesc, uid, uname, state, role in self._read(_GROUPS_OF, (user_id,)):
            if current is None or current[0] != gid:
                if current is not None:
                    groups.append(Group(*current, tuple(members)))
                current, members = (int(gid), gname, gdesc), []
            members.append(GroupMember(int(uid), uname, state, role))
        if current is not None:
            groups.append(Group(*current, tuple(members)))
        return groups

    # -- offline messages ------------------------------------------------------
    #
    # ``offlinebox`` keeps each user's count and total size of stored messages
    # in step with ``offlinemessage``, in the same transactions, so the caps
    # cost one row and never a scan of a backlog that may be 100,000 long.
    # A transaction that stores for a user adds to the user's box row first,
    # users in id order: that locks the row (MySQL; SQLite serializes every
    # writer), so one user's stores take their row ids one transaction after
    # the other, and ``store_offline_late`` sees every row stored before it.

    _INSERT_OFFLINE = "INSERT INTO offlinemessage (userid, message, size) VALUES (?, ?, ?)"

    def store_offline(self, user_id: int, message: str) -> int:
        """Store one message for ``user_id``; return its row id.  No cap."""
        return self.store_offline_rows(user_id, [message])[0][0]

    def store_offline_many(
        self, items: list[tuple[int, str]], keep: int | None = None,
        keep_bytes: int | None = None,
    ) -> dict[int, int]:
        """Store several (user id, message) pairs in one transaction.

        Each of those users then keeps at most ``keep`` messages and
        ``keep_bytes`` bytes, the oldest dropped first; returns how many were
        dropped, per user that lost any.
        """
        if not items:
            return {}
        rows = [(uid, text, len(text.encode())) for uid, text in items]

        added: dict[int, list[int]] = {}
        for uid, _, size in rows:
            count_size = added.setdefault(uid, [0, 0])
            count_size[0] += 1
            count_size[1] += size

        def work(cur: Cursor) -> dict[int, int]:
            for uid in sorted(added):
                self._add_to_box(cur, uid, *added[uid])
            cur.executemany(self._sql(self._INSERT_OFFLINE), rows)
            dropped = {uid: self._cap(cur, uid, keep, keep_bytes) for uid in added}
            return {uid: n for uid, n in dropped.items() if n}

        return self._pool.run(work)

    def store_offline_late(
        self, items: list[tuple[int, str]], keep: int | None = None,
        keep_bytes: int | None = None,
    ) -> dict[int, int]:
        """``store_offline_many`` for messages that may come after later ones of
        their senders were stored: each user's last ``LATE_TAIL`` stored messages
        and these are put in each sender's order.

        For a server that took messages for a user who was leaving it (Redis
        sent them before its unsubscribe took effect), while the senders'
        servers, finding nobody subscribed, stored what the senders sent
        next.  Nobody delivers those rows meanwhile: the user's next login
        waits for this server's release, which waits for these stores.
        """
        if not items:
            return {}
        per_user: dict[int, list[str]] = {}
        for uid, text in items:
            per_user.setdefault(uid, []).append(text)

        def work(cur: Cursor) -> dict[int, int]:
            for uid in sorted(per_user):
                texts = per_user[uid]
                self._add_to_box(cur, uid, len(texts), sum(len(t.encode()) for t in texts))
            dropped = {}
            for uid, texts in per_user.items():
                tail = self._exec(
                    cur, "SELECT id, message FROM offlinemessage WHERE userid = ?"
                    " ORDER BY id DESC LIMIT ?", (uid, LATE_TAIL)).fetchall()[::-1]
                ordered = in_sender_order([text for _, text in tail] + texts)
                for (row_id, was), text in zip(tail, ordered, strict=False):
                    if text != was:
                        self._exec(cur, "UPDATE offlinemessage SET message = ?, size = ?"
                                        " WHERE id = ?", (text, len(text.encode()), row_id))
                for text in ordered[len(tail):]:
                    self._exec(cur, self._INSERT_OFFLINE, (uid, text, len(text.encode())))
                dropped[uid] = self._cap(cur, uid, keep, keep_bytes)
            return {uid: n for uid, n in dropped.items() if n}

        return self._pool.run(work)

    def store_offline_rows(
        self, user_id: int, messages: list[str], keep: int | None = None,
        keep_bytes: int | None = None,
    ) -> tuple[list[int], int]:
        """Store ``messages`` for one user in order; return their row ids and how
        many of the oldest the caps then dropped (possibly some of these)."""
        sizes = [len(text.encode()) for text in messages]

        def work(cur: Cursor) -> tuple[list[int], int]:
            self._add_to_box(cur, user_id, len(messages), sum(sizes))
            ids = []
            for text, size in zip(messages, sizes, strict=True):
                self._exec(cur, self._INSERT_OFFLINE, (user_id, text, size))
                ids.append(int(cur.lastrowid))
            return ids, self._cap(cur, user_id, keep, keep_bytes)

        return self._pool.run(work)

    def _add_to_box(self, cur: Cursor, user_id: int, count: int, size: int) -> None:
        """Count ``count`` messages of ``size`` bytes more for the user, which
        locks its box row until the transaction ends."""
        upsert = self._pool.dialect.upsert_adding("offlinebox", "userid", ("messages", "bytes"))
        self._exec(cur, upsert, (user_id, count, size))

    def _cap(self, cur: Cursor, user_id: int, keep: int | None, keep_bytes: int | None) -> int:
        """Drop the user's oldest messages over the caps; return how many went."""
        if keep is None and keep_bytes is None:
            return 0
        lock = self._pool.dialect.lock_rows
        messages, total = self._exec(
            cur, f"SELECT messages, bytes FROM offlinebox WHERE userid = ?{lock}",
            (user_id,)).fetchone()
        over_count = messages - keep if keep is not None else 0
        over_bytes = total - keep_bytes if keep_bytes is not None else 0
        if over_count <= 0 and over_bytes <= 0:
            return 0
        return self._drop_oldest(cur, user_id, over_count, over_bytes)

    def _drop_oldest(self, cur: Cursor, user_id: int, over_count: int, over_bytes: int) -> int:
        """Delete the user's oldest messages until ``over_count`` messages and
        ``over_bytes`` bytes are gone; return how many went."""
        victims: list[int] = []
        freed = 0
        while len(victims) < over_count or freed < over_bytes:
            page = self._exec(
                cur, "SELECT id, size FROM offlinemessage WHERE userid = ? AND id > ?"
                " ORDER BY id LIMIT ?", (user_id, victims[-1] if victims else 0, 256)).fetchall()
            if not page:
                break
            for row_id, size in page:
                if len(victims) >= over_count and freed >= over_bytes:
                    break
                victims.append(int(row_id))
                freed += int(size)
        return self._delete_ids(cur, user_id, victims)

    def _delete_ids(self, cur: Cursor, user_id: int, ids: list[int]) -> int:
        """Delete these rows of the user and take them off its box; return how many."""
        deleted = 0
        lock = self._pool.dialect.lock_rows
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found = self._exec(
                cur, f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM offlinemessage"
                f" WHERE userid = ? AND id IN ({marks}){lock}", (user_id, *chunk)).fetchone()
            count, size = int(found[0]), int(found[1])
            if not count:
                continue
            self._exec(cur, f"DELETE FROM offlinemessage WHERE userid = ? AND id IN ({marks})",
                       (user_id, *chunk))
            self._exec(cur, "UPDATE offlinebox SET messages = messages - ?, bytes = bytes - ?"
                            " WHERE userid = ?", (count, size, user_id))
            deleted += count
        return deleted

    def offline_page(self, user_id: int, limit: int, after: int = 0) -> list[tuple[int, str]]:
        """The user's ``limit`` oldest stored (row id, message) pairs with a row id
        above ``after``, oldest first."""
        rows = self._read("SELECT id, message FROM offlinemessage WHERE userid = ? AND id > ?"
                          " ORDER BY id LIMIT ?", (user_id, after, limit))
        return [(int(i), m) for i, m in rows]

    def delete_offline(self, user_id: int, ids: list[int]) -> int:
        """Delete these stored messages of the user (others, and later ones, stay)."""
        if not ids:
            return 0
        return self._pool.run(lambda cur: self._delete_ids(cur, user_id, ids))

    def offline_box(self, user_id: int) -> tuple[int, int]:
        """How many messages are stored for the user, and their total size in bytes."""
        rows = self._read("SELECT messages, bytes FROM offlinebox WHERE userid = ?", (user_id,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def offline_count(self, user_id: int) -> int:
        return self.offline_box(user_id)[0]

    # -- message id nodes ------------------------------------------------------

    def claim_node(self, server_id: str, now_ms: int, dead_after_ms: int, max_node: int
                   ) -> tuple[int, int]:
        """The message-id node of ``server_id`` and the time its ids must start above.

        A server keeps its node across restarts; a new one takes the lowest
        free number, or else the one not recorded for the longest time, if
        that is over ``dead_after_ms`` ago.
        """
        def work(cur: Cursor) -> tuple[int, int]:
            lock = self._pool.dialect.lock_rows
            rows = self._exec(cur, f"SELECT node, server, lease FROM midnode ORDER BY node{lock}"
                              ).fetchall()
            mine = [(int(n), int(last)) for n, server, last in rows if server == server_id]
            taken = {int(n) for n, _, _ in rows}
            free = [n for n in range(1, max_node + 1) if n not in taken]
            if mine:
                node, floor = mine[0]
            elif free:
                node, floor = free[0], 0
                self._exec(cur, "INSERT INTO midnode (node, server, lease) VALUES (?, ?, 0)",
                           (node, server_id))
            else:
                node, floor = min(((int(n), int(last)) for n, _, last in rows),
                                  key=lambda r: r[1])
                if floor > now_ms - dead_after_ms:
                    raise StoreError("every message-id node belongs to a live server")
                self._exec(cur, "UPDATE midnode SET server = ? WHERE node = ?",
                           (server_id, node))
            self._exec(cur, "UPDATE midnode SET lease = ? WHERE node = ?",
                       (max(now_ms, floor), node))  # a claim is a sign of life too
            return node, floor

        for _ in range(5):  # two servers took the same free number: the loser looks again
            try:
                return self._pool.run(work)
            except self._pool.integrity_error:
                continue
        raise StoreError("could not claim a message-id node")

    def renew_node(self, node: int, server_id: str, last_ms: int) -> None:
        """Record that ``node`` (held by ``server_id``) gave ids up to time ``last_ms``."""
        self._write("UPDATE midnode SET lease = ? WHERE node = ? AND server = ? AND lease < ?",
                    (last_ms, node, server_id, last_ms))

    # -- health ----------------------------------------------------------------

    def ping(self) -> None:
        """One cheap round trip to the database (health checks); may raise StoreUnavailable."""
        self._read("SELECT 1", ())
