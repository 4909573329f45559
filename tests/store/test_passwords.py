import time

from chat.store.passwords import DEFAULT_LOG2N, hash_password, verify_password


def test_default_cost_round_trip_and_timing() -> None:
    start = time.perf_counter()
    stored = hash_password("correct horse")
    elapsed = time.perf_counter() - start
    assert stored.startswith(f"scrypt${DEFAULT_LOG2N}$8$1$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert elapsed < 2.0  # about 45 ms on the development machine


def test_salted_hashes_differ() -> None:
    a, b = hash_password("pw", 4), hash_password("pw", 4)
    assert a != b and verify_password("pw", a) and verify_password("pw", b)


def test_unicode_and_odd_passwords() -> None:
    for pw in ("密码🔑", "a\\b'\"c", " ", "x" * 128, "\udcff"):
        stored = hash_password(pw, 4)
        assert verify_password(pw, stored)
        assert not verify_password(pw + "!", stored)


def test_malformed_stored_values_do_not_verify() -> None:
    good = hash_password("pw", 4)
    for bad in ("", "pw", "scrypt$4$8$1$$", "bcrypt" + good[6:], good.replace("$4$", "$99$"),
                good[:-4] + "!!!!", "scrypt$x$8$1$AA==$AA=="):
        assert not verify_password("pw", bad)
