"""A later message of one sender gets a larger mid, also when the sender moves from a
server that was restarted to another one (PROTOCOL.md, "Message ids ...").

Found by the soak (benchmarks/soak.py, ``mids_not_increasing``): a server restarted
with its ``--server-id`` starts its ids above its old lease, up to a minute ahead of
the clock, so the other server's ids are smaller for that long."""

from __future__ import annotations

from pathlib import Path

from chat.mids import mid_time_ms, now_ms
from tests.support.server import ServerProcess


def test_a_sender_moving_off_a_restarted_server_still_gets_larger_mids(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    first = ServerProcess(db, extra=["--server-id", "restarted"]).start()
    first.kill()  # as a crash does: the lease it took stays in the database
    a = ServerProcess(db, extra=["--server-id", "restarted"]).start()
    b = ServerProcess(db, extra=["--server-id", "other"]).start()
    try:
        with a.connect() as s:
            alice = s.register("alice", "pw")["id"]
            bob = s.register("bob", "pw")["id"]
            assert s.login(alice, "pw")["errno"] == 0
            on_a = s.chat(bob, "first", seq=1)["mid"]
            assert s.logout()["errno"] == 0
        with b.connect() as s:
            assert s.login(alice, "pw")["errno"] == 0
            on_b = s.chat(bob, "second", seq=2)["mid"]
        ahead_ms = mid_time_ms(on_a) - now_ms()
        assert on_b > on_a, f"the restarted server's ids run {ahead_ms} ms ahead of the clock"
    finally:
        a.kill()
        b.kill()
