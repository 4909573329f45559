import threading
import time
from collections.abc import Callable

import orjson
import pytest

from chat.mids import MAX_NODE
from chat.store import Store, StoreError, open_store
from chat.store.store import in_sender_order
from tests.store.conftest import FAST_COST
from tests.support import mysqldb


def fetch_all(store: Store, user_id: int) -> list[tuple[int, str]]:
    """Every stored message of the user, a page at a time, as the outbox reads them."""
    rows: list[tuple[int, str]] = []
    while page := store.offline_page(user_id, 100, rows[-1][0] if rows else 0):
        rows += page
    return rows

TRICKY = [
    '{"msgid":5,"msg":"你好，世界"}', "emoji 😀👍🏽🇨🇳", "quotes ' \" ` and \\ backslashes \\\\",
    "%s %d ? {insert_ignore} NULL", "\x00nul\x01ctl\ttab\nnewline", "", " ",
]


def test_store_fetch_delete_in_order(store: Store) -> None:
    store.store_offline(1, "first")
    store.store_offline_many([(1, f"m{i}") for i in range(999)] + [(2, "other")])
    rows = fetch_all(store, 1)
    assert [m for _, m in rows] == ["first"] + [f"m{i}" for i in range(999)]
    assert [i for i, _ in rows] == sorted(i for i, _ in rows)
    assert store.offline_box(1) == (1000, len("first") + sum(len(f"m{i}") for i in range(999)))
    store.store_offline(1, "arrived after the fetch")
    assert store.delete_offline(1, [i for i, _ in rows]) == 1000
    assert [m for _, m in fetch_all(store, 1)] == ["arrived after the fetch"]
    assert store.offline_box(1) == (1, len("arrived after the fetch"))
    assert fetch_all(store, 2)[0][1] == "other"  # other users untouched
    assert store.offline_count(2) == 1
    assert store.delete_offline(3, [rows[0][0]]) == 0
    assert store.delete_offline(2, [rows[0][0]]) == 0  # a row of another user stays
    assert store.offline_count(1) == 1
    store.store_offline_many([])


def test_unicode_round_trip(store: Store) -> None:
    for text in TRICKY:
        store.store_offline(7, text)
    assert [m for _, m in fetch_all(store, 7)] == TRICKY


def test_one_mib_messages(store: Store) -> None:
    ascii_mib = "a" * (1 << 20)
    mixed = ("汉字😀'\"\\" * (1 << 20))[: (1 << 20) // 4]  # about 1 MiB of UTF-8
    store.store_offline(8, ascii_mib)
    store.store_offline_many([(8, mixed), (8, ascii_mib)])
    assert [m for _, m in fetch_all(store, 8)] == [ascii_mib, mixed, ascii_mib]


def test_concurrent_writers_keep_every_message(store: Store) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            store.store_offline(9, f"{n}:{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    messages = [m for _, m in fetch_all(store, 9)]
    assert sorted(messages) == sorted(f"{n}:{i}" for n in range(8) for i in range(25))
    for n in range(8):  # each writer's messages come back in its own order
        mine = [m for m in messages if m.startswith(f"{n}:")]
        assert mine == [f"{n}:{i}" for i in range(25)]


def test_store_offline_many_keeps_only_the_newest(store: Store) -> None:
    a = store.register("trim-a", "pw")
    b = store.register("trim-b", "pw")
    assert store.store_offline_many([(a, f"a{i}") for i in range(5)], keep=3) == {a: 2}
    assert [m for _, m in fetch_all(store, a)] == ["a2", "a3", "a4"]
    assert store.store_offline_many([(a, "a5"), (b, "b0")], keep=3) == {a: 1}
    assert [m for _, m in fetch_all(store, a)] == ["a3", "a4", "a5"]
    assert store.store_offline_many([(b, "b1")]) == {}
    assert store.offline_count(b) == 2


def test_the_byte_cap_drops_the_oldest_until_under_it(store: Store) -> None:
    a = store.register("bytes-a", "pw")
    texts = ["€" * 10, "x" * 40, "y" * 40, "z" * 40]  # 30 bytes, then 40 each
    assert store.store_offline_many([(a, t) for t in texts], keep_bytes=100) == {a: 2}
    assert [m for _, m in fetch_all(store, a)] == texts[2:]
    assert store.offline_box(a) == (2, 80)
    ids, dropped = store.store_offline_rows(a, ["w" * 30, "v" * 30], keep=3, keep_bytes=1000)
    assert dropped == 1 and len(ids) == 2 and ids == sorted(ids)
    assert [m for _, m in fetch_all(store, a)] == texts[3:] + ["w" * 30, "v" * 30]
    assert store.offline_box(a) == (3, 100)


def test_a_page_starts_above_the_row_given(store: Store) -> None:
    ids, _ = store.store_offline_rows(11, [f"p{i}" for i in range(10)])
    assert [m for _, m in store.offline_page(11, 3)] == ["p0", "p1", "p2"]
    assert [m for _, m in store.offline_page(11, 3, ids[4])] == ["p5", "p6", "p7"]
    assert store.offline_page(11, 3, ids[-1]) == []


def test_a_server_keeps_its_node_and_starts_above_its_last_id(store: Store) -> None:
    hour = 3_600_000
    node, floor = store.claim_node("s1", now_ms=1000, dead_after_ms=hour, max_node=MAX_NODE)
    assert (node, floor) == (1, 0)
    assert store.claim_node("s2", 1000, hour, MAX_NODE)[0] == 2
    store.renew_node(1, "s1", 1500)
    store.renew_node(1, "not s1", 9000)  # only the holder records
    store.renew_node(1, "s1", 1200)  # never backwards
    # s1 restarts with its clock gone back: its ids must start above its last one.
    assert store.claim_node("s1", now_ms=900, dead_after_ms=hour, max_node=MAX_NODE) == (1, 1500)


def test_when_every_node_is_taken_the_longest_silent_is_reused(store: Store) -> None:
    assert store.claim_node("a", 1000, 100, max_node=2) == (1, 0)
    assert store.claim_node("b", 2000, 100, max_node=2) == (2, 0)
    store.renew_node(1, "a", 1100)
    store.renew_node(2, "b", 2100)
    assert store.claim_node("c", 3000, 100, max_node=2) == (1, 1100)  # a was silent longest
    with pytest.raises(StoreError):
        store.claim_node("d", 2150, 100, max_node=2)  # b recorded an id 50 ms ago


def _chat(sender: int, mid: int) -> str:
    return orjson.dumps({"msgid": 5, "id": sender, "to": 30, "msg": f"{sender}/{mid}",
                         "mid": mid}).decode()


def test_a_late_message_goes_before_what_its_sender_sent_after_it(store: Store) -> None:
    # Sender 1's 11 and 12 were taken by a server the user was leaving, which
    # stores them after the sender's server stored 13 and 14 (nobody held the
    # user by then); sender 2's messages keep their places.
    store.store_offline_many([(30, _chat(1, 10)), (30, _chat(2, 50)), (30, _chat(1, 13)),
                              (30, _chat(2, 51)), (30, _chat(1, 14))])
    assert store.store_offline_late([(30, _chat(1, 11)), (30, _chat(1, 12))]) == {}
    texts = [orjson.loads(m)["msg"] for _, m in fetch_all(store, 30)]
    assert texts == ["1/10", "2/50", "1/11", "2/51", "1/12", "1/13", "1/14"]
    assert store.offline_box(30) == (7, sum(len(m.encode()) for _, m in fetch_all(store, 30)))


def test_a_late_message_in_order_is_appended_and_the_caps_hold(store: Store) -> None:
    store.store_offline_many([(31, _chat(1, 10)), (31, "not json"), (31, _chat(1, 11))])
    assert store.store_offline_late([(31, _chat(1, 12)), (31, _chat(3, 1))], keep=4) == {31: 1}
    texts = [m for _, m in fetch_all(store, 31)]
    assert texts == ["not json", _chat(1, 11), _chat(1, 12), _chat(3, 1)]


def test_in_sender_order_moves_only_a_senders_own_messages() -> None:
    texts = [_chat(1, 3), _chat(2, 9), "{}", _chat(1, 1), _chat(2, 8), _chat(1, 2)]
    assert in_sender_order(texts) == [_chat(1, 1), _chat(2, 8), "{}", _chat(1, 2),
                                      _chat(2, 9), _chat(1, 3)]


_STORES: dict[str, Callable[[Store, int, str], object]] = {
    "many": lambda store, uid, text: store.store_offline_many([(uid, text)]),
    "late": lambda store, uid, text: store.store_offline_late([(uid, text)]),
}


@pytest.mark.mysql
@pytest.mark.parametrize("how", sorted(_STORES))
def test_a_users_rows_get_ids_in_the_order_their_stores_commit(mysql_url: str, how: str) -> None:
    # Two servers storing for one user at once.  Each store takes the user's
    # box row before it inserts, so the ids follow the commits; the late
    # store's reordering relies on it (an earlier id never commits after it).
    open_store(mysql_url, password_cost=FAST_COST).close()
    mysqldb.truncate_tables(mysql_url)
    store = open_store(mysql_url, password_cost=FAST_COST)
    other, watch = mysqldb.connect(mysql_url), mysqldb.connect(mysql_url)
    try:
        cur = other.cursor()
        cur.execute("BEGIN")
        cur.execute("INSERT INTO offlinebox (userid, messages, bytes) VALUES (40, 1, 5)"
                    " ON DUPLICATE KEY UPDATE messages = messages + 1, bytes = bytes + 5")
        storing = threading.Thread(target=_STORES[how], args=(store, 40, "second"))
        storing.start()
        _await_a_lock_wait(watch)  # the store waits for the other server's box row
        cur.execute("INSERT INTO offlinemessage (userid, message, size) VALUES (40, 'first', 5)")
        cur.execute("COMMIT")
        storing.join(10)
        assert not storing.is_alive()
        assert [m for _, m in fetch_all(store, 40)] == ["first", "second"]
        assert store.offline_box(40) == (2, 11)
    finally:
        other.close()
        watch.close()
        store.close()


def _await_a_lock_wait(conn: object, timeout: float = 10.0) -> None:
    cur = conn.cursor()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur.execute("SELECT COUNT(*) FROM information_schema.innodb_trx"
                    " WHERE trx_state = 'LOCK WAIT'")
        if cur.fetchone()[0]:
            return
        # InnoDB tells of a lock wait only when asked, from a cache it renews
        # only when it was last read over 0.1 s ago.
        time.sleep(0.2)
    raise AssertionError("the store did not wait for the box row")
