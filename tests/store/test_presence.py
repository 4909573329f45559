import threading

from chat.store import Store


def test_mark_online_offline(store: Store) -> None:
    uid = store.register("erin", "pw")
    assert store.mark_online(uid, "s1") is True
    assert store.get_user(uid).state == "online"  # type: ignore[union-attr]
    assert store.mark_online(uid, "s1") is False  # already online: errno 2
    assert store.mark_online(uid, "s2") is False
    store.mark_offline(uid, "s2")  # not held by s2: nothing happens
    assert store.get_user(uid).state == "online"  # type: ignore[union-attr]
    store.mark_offline(uid, "s1")
    assert store.get_user(uid).state == "offline"  # type: ignore[union-attr]
    assert store.users_on_server("s1") == []
    assert store.mark_online(uid, "s2") is True
    assert store.users_on_server("s2") == [uid]
    assert store.mark_online(999_999, "s1") is False


def test_take_over_moves_a_user_only_from_the_named_server(store: Store) -> None:
    uid = store.register("frank", "pw")
    assert store.mark_online(uid, "crashed")
    assert store.take_over(uid, "crashed", "s2")
    assert store.users_on_server("crashed") == [] and store.users_on_server("s2") == [uid]
    assert not store.take_over(uid, "crashed", "s3")  # it moved already: no second winner
    assert store.holder(uid) == "s2"
    store.mark_offline(uid, "s2")
    assert not store.take_over(uid, "s2", "s3")  # offline users are claimed, not taken over


def test_reset_server_clears_only_its_users(store: Store) -> None:
    on1 = [store.register(f"a{i}", "pw") for i in range(3)]
    on2 = [store.register(f"b{i}", "pw") for i in range(2)]
    idle = store.register("idle", "pw")
    for uid in on1:
        assert store.mark_online(uid, "s1")
    for uid in on2:
        assert store.mark_online(uid, "s2")
    assert store.users_on_server("s1") == on1
    assert store.reset_server("s1") == 3
    assert store.reset_server("s1") == 0
    assert [store.get_user(u).state for u in on1] == ["offline"] * 3  # type: ignore[union-attr]
    assert store.users_on_server("s2") == on2
    assert store.get_user(on2[0]).state == "online"  # type: ignore[union-attr]
    assert store.get_user(idle).state == "offline"  # type: ignore[union-attr]


def test_concurrent_mark_online_exactly_one_wins(store: Store) -> None:
    for round_ in range(5):
        uid = store.register(f"racer{round_}", "pw")
        barrier = threading.Barrier(2)
        results: dict[str, bool] = {}

        def worker(server: str, uid: int, barrier: threading.Barrier,
                   results: dict[str, bool]) -> None:
            barrier.wait()
            results[server] = store.mark_online(uid, server)

        threads = [threading.Thread(target=worker, args=(s, uid, barrier, results))
                   for s in ("s1", "s2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(results.values()) == [False, True]
        winner = next(s for s, won in results.items() if won)
        assert uid in store.users_on_server(winner)
        store.reset_server(winner)
