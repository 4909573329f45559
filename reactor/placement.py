"""Which loop of a pool serves a connection: the reactor's placement policy.

Theory of operation
-------------------
A new connection goes to the pool's next loop, round robin. Later the
application may say whom a connection talks to (``TcpConnection.talks_to``,
the hook for a peer connection); after ``FOLLOW_AFTER`` messages in a row
from one connection to connections of one other loop, :meth:`Placement.hint`
moves one of the two so that one thread serves the conversation and a
message between them needs no hop. Only the end with the higher ``serial``
acts, so two ends never swap loops at once. The mover joins its peer's
loop, or brings the peer to its own, as long as the loop it fills stays
under ``ROOF`` times the average load: conversations gather without piling
every connection onto one thread.

What a connection talks to may also be something a loop serves that is not
a connection and cannot move (``talks_to_loop``: a cluster's bus, whose
messages from other servers one loop reads). After ``FOLLOW_AFTER`` sends
in a row to it, :meth:`Placement.hint_loop` moves the connection to that
loop, with no roof (its docstring says why).

Thread contract: :meth:`Placement.hint` runs in the loop thread of the
connection that sent; each connection's streak is touched only by its
owner's thread, one owner at a time, so the map of streaks needs no lock
(each operation on it is atomic). The loads are racy snapshots, good
enough to keep a loop from taking every conversation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reactor.eventloop import EventLoop, EventLoopThreadPool

if TYPE_CHECKING:
    from reactor.tcpconnection import TcpConnection

__all__ = ["FOLLOW_AFTER", "ROOF", "Placement"]

# Sends in a row from one connection to connections of one other loop before a
# move: enough to tell a conversation from a stray message.
FOLLOW_AFTER = 8
ROOF = 1.25  # how far over the average load a move may fill a loop


class Placement:
    """Places the connections of one pool: round robin at first, then by conversation."""

    def __init__(self, pool: EventLoopThreadPool) -> None:
        self._pool = pool
        # connection -> (the other loop it sends to, sends in a row); only the
        # connections in the middle of a streak have an entry.
        self._streaks: dict[TcpConnection, tuple[EventLoop, int]] = {}
        self._pool_loops: frozenset[EventLoop] | None = None

    def loop_for_new(self) -> EventLoop:
        """The loop that serves a new connection. The pool's base loop thread only."""
        return self._pool.next_loop()

    def hint(self, conn: TcpConnection, peer: TcpConnection) -> None:
        """``conn`` just sent ``peer`` a message. ``conn``'s loop thread only."""
        there = peer.loop
        if there is conn.loop or peer.serial > conn.serial:
            if self._streaks:
                self._streaks.pop(conn, None)
        elif self._streak_ends(conn, there):
            self._gather(conn, peer)

    def hint_loop(self, conn: TcpConnection, loop: EventLoop) -> None:
        """``conn`` just sent something ``loop`` serves. ``conn``'s loop thread only.

        After ``FOLLOW_AFTER`` such sends in a row, ``conn`` moves there,
        whatever that loop's load: what it talks to cannot move, and under
        turns one loop at a time runs anyway, so a loop that gathers every
        connection talking to it costs no parallelism and saves the hand-over
        of the turn between the loops a message would otherwise cross.
        """
        if loop is conn.loop or loop not in self._loops():
            if self._streaks:
                self._streaks.pop(conn, None)
        elif self._streak_ends(conn, loop):
            conn.move_to(loop)

    def _streak_ends(self, conn: TcpConnection, there: EventLoop) -> bool:
        """Count a send from ``conn`` to ``there``; True at ``FOLLOW_AFTER`` in a
        row (and the streak starts over)."""
        streak_loop, streak = self._streaks.get(conn, (None, 0))
        streak = streak + 1 if streak_loop is there else 1
        if streak < FOLLOW_AFTER:
            self._streaks[conn] = (there, streak)
            return False
        self._streaks.pop(conn, None)
        return True

    def _loops(self) -> frozenset[EventLoop]:
        """The pool's loops (fixed once it started, as it has when hints come)."""
        if self._pool_loops is None:
            self._pool_loops = frozenset(self._pool.get_all_loops())
        return self._pool_loops

    def forget(self, conn: TcpConnection) -> None:
        """Drop what is known of a closed connection. Safe from any thread."""
        self._streaks.pop(conn, None)

    def _gather(self, conn: TcpConnection, peer: TcpConnection) -> None:
        here, there = conn.loop, peer.loop
        loads = {loop: loop.registered_count() for loop in self._pool.get_all_loops()}
        roof = sum(loads.values()) / len(loads) * ROOF + 1
        if loads.get(there, 0) < roof:
            conn.move_to(there)
        elif loads.get(here, 0) < roof:
            peer.move_to(here)
