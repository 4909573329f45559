import threading

from chat.store import Store

TRICKY = [
    '{"msgid":5,"msg":"你好，世界"}', "emoji 😀👍🏽🇨🇳", "quotes ' \" ` and \\ backslashes \\\\",
    "%s %d ? {insert_ignore} NULL", "\x00nul\x01ctl\ttab\nnewline", "", " ",
]


def test_store_fetch_delete_in_order(store: Store) -> None:
    store.store_offline(1, "first")
    store.store_offline_many([(1, f"m{i}") for i in range(999)] + [(2, "other")])
    rows = store.fetch_offline(1)
    assert [m for _, m in rows] == ["first"] + [f"m{i}" for i in range(999)]
    assert [i for i, _ in rows] == sorted(i for i, _ in rows)
    assert store.offline_count(1) == 1000
    last = rows[-1][0]
    store.store_offline(1, "arrived after the fetch")
    assert store.delete_offline(1, last) == 1000
    assert [m for _, m in store.fetch_offline(1)] == ["arrived after the fetch"]
    assert store.fetch_offline(2)[0][1] == "other"  # other users untouched
    assert store.offline_count(2) == 1
    assert store.delete_offline(3, 10**12) == 0
    store.store_offline_many([])


def test_unicode_round_trip(store: Store) -> None:
    for text in TRICKY:
        store.store_offline(7, text)
    assert [m for _, m in store.fetch_offline(7)] == TRICKY


def test_one_mib_messages(store: Store) -> None:
    ascii_mib = "a" * (1 << 20)
    mixed = ("汉字😀'\"\\" * (1 << 20))[: (1 << 20) // 4]  # about 1 MiB of UTF-8
    store.store_offline(8, ascii_mib)
    store.store_offline_many([(8, mixed), (8, ascii_mib)])
    assert [m for _, m in store.fetch_offline(8)] == [ascii_mib, mixed, ascii_mib]


def test_concurrent_writers_keep_every_message(store: Store) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            store.store_offline(9, f"{n}:{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    messages = [m for _, m in store.fetch_offline(9)]
    assert sorted(messages) == sorted(f"{n}:{i}" for n in range(8) for i in range(25))
    for n in range(8):  # each writer's messages come back in its own order
        mine = [m for m in messages if m.startswith(f"{n}:")]
        assert mine == [f"{n}:{i}" for i in range(25)]


def test_store_offline_many_keeps_only_the_newest(store: Store) -> None:
    a = store.register("trim-a", "pw")
    b = store.register("trim-b", "pw")
    assert store.store_offline_many([(a, f"a{i}") for i in range(5)], keep=3) == {a: 2}
    assert [m for _, m in store.fetch_offline(a)] == ["a2", "a3", "a4"]
    assert store.store_offline_many([(a, "a5"), (b, "b0")], keep=3) == {a: 1}
    assert [m for _, m in store.fetch_offline(a)] == ["a3", "a4", "a5"]
    assert store.store_offline_many([(b, "b1")]) == {}
    assert store.offline_count(b) == 2
