import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chat.names import lookup_form
from chat.store import NameTaken, Store, User, open_store
from chat.store.passwords import verify_password

from .conftest import FAST_COST


def test_register_authenticate_get_user(store: Store) -> None:
    a = store.register("alice", "secret")
    b = store.register("bob", "hunter2")
    assert a != b
    assert store.authenticate(a, "secret") == User(a, "alice", "offline")
    assert store.authenticate(a, "hunter2") is None
    assert store.authenticate(999_999, "secret") is None
    assert store.get_user(b) == User(b, "bob", "offline")
    assert store.get_user(999_999) is None


def test_authenticate_by_name(store: Store) -> None:
    a = store.register("erin", "secret")
    store.register("Erin", "other")
    assert store.authenticate_by_name("erin", "secret") == User(a, "erin", "offline")
    assert store.authenticate_by_name("erin", "other") is None  # Erin's password
    assert store.authenticate_by_name("ERIN", "secret") is None  # names compare exactly
    assert store.authenticate_by_name("nobody", "secret") is None


def test_names_are_unique_and_case_sensitive(store: Store) -> None:
    store.register("carol", "x")
    with pytest.raises(NameTaken):
        store.register("carol", "y")
    store.register("Carol", "y")  # utf8mb4_bin / SQLite BINARY: exact comparison


def test_password_is_stored_hashed(store: Store, store_url: str) -> None:
    uid = store.register("dave", "plain-text-pw")
    stored = _stored_password(store, uid)
    assert stored != "plain-text-pw" and "plain-text-pw" not in stored
    assert stored.startswith("scrypt$") and verify_password("plain-text-pw", stored)


def _stored_password(store: Store, uid: int) -> str:
    def work(cur: object) -> str:
        cur.execute(store._sql("SELECT password FROM user WHERE id = ?"), (uid,))  # type: ignore[attr-defined]
        return str(cur.fetchone()[0])  # type: ignore[attr-defined]
    return store._pool.run(work)


@pytest.mark.parametrize("name", [
    "x'); DROP TABLE user; --", "' OR '1'='1", "Robert\"; DELETE FROM friend; #",
    "a\\b\\'c", "%s %d ? :1 {insert_ignore}", "李雷😀", "tab\tnew\nline",
])
def test_names_with_sql_and_unicode_are_stored_literally(store: Store, name: str) -> None:
    uid = store.register(name, name)
    user = store.get_user(uid)
    assert user is not None and user.name == name
    assert store.authenticate(uid, name) == user
    # A name no account can have any more (chat/names.py) is not even looked up:
    # such an account (stored before the rules) logs in by its id.
    by_name = store.authenticate_by_name(name, name)
    assert by_name == (user if lookup_form(name) == name else None)
    store.register("other", "x")  # the user table is still there and usable
    gid = store.create_group(uid, name, name)
    assert [g.name for g in store.groups_of(uid)] == [name]
    assert store.group_member_ids(gid) == [uid]


def test_concurrent_registrations(store: Store) -> None:
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            got = [store.register(f"user-{n}-{i}", "pw") for i in range(8)]
            with lock:
                ids.extend(got)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert len(ids) == 128 and len(set(ids)) == 128


def test_concurrent_same_name_one_wins(store: Store) -> None:
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(store.register("same", "pw"))
        except NameTaken as exc:
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, NameTaken) for r in results) == 7


class CountingBlocking:
    """A ``blocking`` hook that counts the sections it was entered for."""

    def __init__(self) -> None:
        self.entered = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        self.entered += 1
        yield


def test_queries_and_password_hashes_run_inside_the_blocking_hook(store_url: str) -> None:
    hook = CountingBlocking()
    store = open_store(store_url, blocking=hook, password_cost=FAST_COST)
    try:
        before = hook.entered
        user_id = store.register("hooked", "pw")
        assert hook.entered == before + 2  # the hash, then the insert
        assert store.authenticate(user_id, "pw") is not None
        assert hook.entered == before + 4  # the select, then the check of the hash
    finally:
        store.close()


def test_a_login_to_nobody_costs_the_same_hash_as_a_wrong_password(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import chat.store.store as store_module

    checked: list[str] = []

    def counting_verify(password: str, stored: str) -> bool:
        checked.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(store_module, "verify_password", counting_verify)
    uid = store.register("erin", "right")
    assert store.authenticate(uid, "wrong") is None
    for nobody in (999_999, 0, -5, 2**63):
        assert store.authenticate(nobody, "wrong") is None
    assert len(checked) == 5
    own_cost = checked[0].split("$")[1:4]
    assert all(stored.split("$")[1:4] == own_cost == [str(FAST_COST), "8", "1"]
               for stored in checked)
    assert len(set(checked[1:])) == 1 and checked[1] != checked[0]  # one dummy, made once
