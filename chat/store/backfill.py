"""Migration 0002's data step: message ids, sizes and per-user totals of stored messages.

PROTOCOL.md ("Message ids") wants every stored message to carry the ``mid``
it will be delivered with.  Rows stored before there were ids get one here,
oldest row first, from node 0, which no server ever claims: ``(ms << 22) |
(0 << 12) | seq`` with ``ms`` the milliseconds since 2026-01-01T00:00:00Z at
migration time and ``seq`` counting 0..4095 before ``ms`` moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import orjson

from .direct import Db, text_of

log = logging.getLogger("chat.store.migrate")

MID_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the epoch of message ids
_MID_NODE = 0  # the node number reserved for ids given by migrations
_BATCH = 1000  # rows read and rewritten at a time


def migration_mids(now_ms: int) -> Iterator[int]:
    """Message ids for stored messages that have none, in order (node 0)."""
    ms = now_ms - MID_EPOCH_MS
    while True:
        for seq in range(4096):
            yield (ms << 22) | (_MID_NODE << 12) | seq
        ms += 1


def rewrite_stored(text: str, mids: Iterator[int]) -> str | None:
    """The stored message with a ``mid`` and ``to`` (not ``toid``); None if not JSON."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    renamed = msg.get("msgid") == 5 and "toid" in msg
    if "mid" in msg and not renamed:
        return text
    if renamed:
        if "to" in msg:
            del msg["toid"]
        else:
            msg = {("to" if key == "toid" else key): value for key, value in msg.items()}
    if "mid" not in msg:
        msg["mid"] = next(mids)
    return orjson.dumps(msg).decode()


def backfill_0002(db: Db) -> None:
    mids = migration_mids(time.time_ns() // 1_000_000)
    last, dropped = 0, 0
    while rows := db.run("SELECT id, message FROM offlinemessage WHERE id > ?"
                         f" ORDER BY id LIMIT {_BATCH}", (last,)):
        updates, broken = [], []
        for row_id, text in rows:
            new = rewrite_stored(text_of(text), mids)
            if new is None:
                broken.append((row_id,))
            else:
                updates.append((new, len(new.encode()), row_id))
        db.many("UPDATE offlinemessage SET message = ?, size = ? WHERE id = ?", updates)
        # Not a JSON object (say, cut at the original's 500 characters): it can
        # never be delivered, and a login would stumble over it every time.
        db.many("DELETE FROM offlinemessage WHERE id = ?", broken)
        dropped += len(broken)
        last = rows[-1][0]
    if dropped:
        log.warning("dropped %d stored messages that were not JSON objects", dropped)
    db.run("DELETE FROM offlinebox")
    db.run("INSERT INTO offlinebox (userid, messages, bytes)"
           " SELECT userid, COUNT(*), SUM(size) FROM offlinemessage GROUP BY userid")
