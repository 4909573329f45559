"""The cluster's names in Redis (docs/cluster.md has the whole contract)."""

from __future__ import annotations

PREFIX = "chat:"
CLUSTER_CHANNEL = PREFIX + "cluster"
FLUSH = b"flush"
FLUSH_ALL = b"flush-all"
_USER = PREFIX + "user:"


def user_channel(user_id: int) -> str:
    return f"{_USER}{user_id}"


def server_key(server_id: str) -> str:
    return f"{PREFIX}server:{server_id}"


def user_of(channel: str) -> int | None:
    """The user whose channel ``channel`` is, else None."""
    if channel.startswith(_USER):
        try:
            return int(channel[len(_USER):])
        except ValueError:
            return None
    return None
