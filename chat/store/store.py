"""The chat server's persistent state behind one small, thread-safe API.

Each method is one call to :meth:`ConnectionPool.run`, so each is one
transaction on a connection borrowed for that call only; every method may
raise :class:`StoreUnavailable`.  Queries are written once in qmark style and
translated by the dialect (see ``dialect.py``).  Password hashing runs before
a connection is borrowed or after it is returned, never while holding one,
and inside the pool's ``blocking()`` like the queries.
"""

from __future__ import annotations

from typing import Any

from .errors import GroupNameTaken, NameTaken
from .passwords import hash_password, verify_password
from .pool import ConnectionPool
from .records import Group, GroupMember, User
from .schema import create_statements

Cursor = Any  # a DB-API cursor of either driver

_SET_OFFLINE = "UPDATE user SET state='offline', server=NULL"
_GROUPS_OF = (
    "SELECT g.id, g.groupname, g.groupdesc, u.id, u.name, u.state, m.grouprole"
    " FROM groupuser me"
    " JOIN allgroup g ON g.id = me.groupid"
    " JOIN groupuser m ON m.groupid = me.groupid"
    " JOIN user u ON u.id = m.userid"
    " WHERE me.userid = ? ORDER BY g.id, u.id"
)


class Store:
    """Users, presence, friends, groups and offline messages.  Thread-safe."""

    def __init__(self, pool: ConnectionPool, password_cost: int) -> None:
        self._pool = pool
        self._sql = pool.dialect.sql
        self._password_cost = password_cost

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

    def create_tables(self) -> None:
        def work(cur: Cursor) -> None:
            for statement in create_statements(self._pool.dialect):
                cur.execute(statement)
        self._pool.run(work)

    def close(self) -> None:
        """Close the pooled connections; the store must not be used afterwards."""
        self._pool.close()

    # -- users ---------------------------------------------------------------

    def register(self, name: str, password: str) -> int:
        """Create a user, return its id; raise NameTaken if the name exists."""
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
        rows = self._read("SELECT id, name, state, password FROM user WHERE id = ?",
                          (user_id,))
        if not rows:
            return None
        with self._pool.blocking():
            if not verify_password(password, rows[0][3]):
                return None
        uid, name, state, _ = rows[0]
        return User(int(uid), name, state)

    def get_user(self, user_id: int) -> User | None:
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

    _INSERT_OFFLINE = "INSERT INTO offlinemessage (userid, message) VALUES (?, ?)"

    def store_offline(self, user_id: int, message: str) -> None:
        self._write(self._INSERT_OFFLINE, (user_id, message))

    def store_offline_many(
        self, items: list[tuple[int, str]], keep: int | None = None
    ) -> dict[int, int]:
        """Store several (user id, message) pairs in one transaction.

        With ``keep``, each of those users keeps only its ``keep`` newest
        messages; returns how many of the oldest were dropped, per user.
        """
        if not items:
            return {}

        def work(cur: Cursor) -> dict[int, int]:
            cur.executemany(self._sql(self._INSERT_OFFLINE), items)
            if keep is None:
                return {}
            dropped = {uid: self._trim(cur, uid, keep) for uid in {uid for uid, _ in items}}
            return {uid: n for uid, n in dropped.items() if n}

        return self._pool.run(work)

    def _trim(self, cur: Cursor, user_id: int, keep: int) -> int:
        self._exec(cur, "SELECT id FROM offlinemessage WHERE userid = ?"
                   " ORDER BY id DESC LIMIT 1 OFFSET ?", (user_id, keep))
        row = cur.fetchone()
        if row is None:
            return 0
        return int(self._exec(cur, "DELETE FROM offlinemessage WHERE userid = ? AND id <= ?",
                              (user_id, row[0])).rowcount)

    def fetch_offline(self, user_id: int) -> list[tuple[int, str]]:
        """(row id, message) pairs of the user, oldest first."""
        rows = self._read("SELECT id, message FROM offlinemessage WHERE userid = ?"
                          " ORDER BY id", (user_id,))
        return [(int(i), m) for i, m in rows]

    def delete_offline(self, user_id: int, up_to_id: int) -> int:
        """Delete the user's messages with id <= up_to_id; later arrivals stay."""
        return self._write("DELETE FROM offlinemessage WHERE userid = ? AND id <= ?",
                           (user_id, up_to_id))

    def offline_count(self, user_id: int) -> int:
        rows = self._read("SELECT COUNT(*) FROM offlinemessage WHERE userid = ?", (user_id,))
        return int(rows[0][0])

    # -- health ----------------------------------------------------------------

    def ping(self) -> None:
        """One cheap round trip to the database (health checks); may raise StoreUnavailable."""
        self._read("SELECT 1", ())
