"""The soak's verdict (benchmarks/soak_checks.py) on made-up ledgers: it must fail
on a lost, reordered, duplicated or renumbered message, and accept a repeat that
came after a new login with the same mid."""

from __future__ import annotations

from benchmarks.soak_checks import Ledger, Received, Sent, SessionSpan, check

ALICE, BOB = 1, 2


def ledger_of(received: list[tuple[int, int, int]], sent: int = 3) -> Ledger:
    """Alice sent ``sent`` messages to Bob (mid 100 + counter, acknowledged
    ``delivered``); Bob read ``(counter, mid, login)`` in this order."""
    ledger = Ledger()
    for counter in range(1, sent + 1):
        ledger.sent[(ALICE, counter)] = Sent(ALICE, counter, "one", (BOB,), t_send=counter,
                                             t_reply=counter, outcome="acked",
                                             state="delivered", mid=100 + counter)
    ledger.sessions[BOB] = [SessionSpan(0.0, 1.5, "client-reset"), SessionSpan(1.6)]
    seen: set[int] = set()
    for counter, mid, login in received:
        ledger.received[BOB].append(Received(ALICE, counter, 1.0, "live", mid, login,
                                             repeat=mid in seen))
        seen.add(mid)
    return ledger


def test_every_message_once_in_order_is_ok() -> None:
    r = check(ledger_of([(1, 101, 1), (2, 102, 1), (3, 103, 1)]))
    assert r["ok"] and r["delivered"] == r["expected_deliveries"] == 3


def test_a_repeat_after_a_new_login_with_the_same_mid_is_ok() -> None:
    r = check(ledger_of([(1, 101, 1), (2, 102, 1), (2, 102, 2), (3, 103, 2)]))
    assert r["ok"] and r["repeats_across_logins"] == 1


def test_a_lost_message_fails() -> None:
    r = check(ledger_of([(1, 101, 1), (3, 103, 1)]))
    assert not r["ok"] and r["lost"] == 1 and r["examples"]["lost"][0]["counter"] == 2


def test_a_reordered_message_fails() -> None:
    r = check(ledger_of([(1, 101, 1), (3, 103, 1), (2, 102, 1)]))
    assert not r["ok"] and r["order_violations"] == 1


def test_a_repeat_within_one_login_fails() -> None:
    r = check(ledger_of([(1, 101, 1), (2, 102, 1), (2, 102, 1), (3, 103, 1)]))
    assert not r["ok"] and r["duplicated_within_login"] == 1


def test_a_repeat_with_another_mid_fails() -> None:
    r = check(ledger_of([(1, 101, 1), (2, 102, 1), (2, 999, 2), (3, 103, 2)]))
    assert not r["ok"] and r["mid_mismatches"] == 1


def test_only_a_live_message_to_a_login_killed_with_its_server_is_counted_apart() -> None:
    ledger = ledger_of([(1, 101, 1)], sent=2)
    ledger.sessions[BOB] = [SessionSpan(0.0, 2.1, "server-closed"), SessionSpan(3.0)]
    ledger.faults.append({"t": 2.05, "kind": "kill-server"})
    r = check(ledger)
    assert r["ok"] and r["in_flight_at_kill"] == 1 and r["lost"] == 0
    ledger.sent[(ALICE, 2)].state = "stored"  # a stored one survives any kill
    assert check(ledger)["lost"] == 1


def test_a_message_redis_gave_the_killed_server_a_moment_after_the_kill_is_in_flight() -> None:
    ledger = ledger_of([(1, 101, 1)], sent=2)
    ledger.sessions[BOB] = [SessionSpan(0.0, 2.0, "server-closed"), SessionSpan(3.0)]
    ledger.faults.append({"t": 2.0, "kind": "kill-server"})
    late = ledger.sent[(ALICE, 2)]
    late.t_send = late.t_reply = 2.004  # after Bob's client saw its server die
    assert check(ledger)["in_flight_at_kill"] == 1
    late.t_send = late.t_reply = 2.9  # Redis had long seen the subscription go
    assert check(ledger)["lost"] == 1


def stored_late_during_a_database_outage(how: str) -> Ledger:
    """Bob read 1, 3, then 2; 2 was sent while MariaDB was stopped and came ``how``."""
    ledger = ledger_of([(1, 101, 1), (3, 103, 1), (2, 102, 1)])
    late = ledger.received[BOB][2]
    ledger.received[BOB][2] = Received(late.sender, late.counter, late.t, how, late.mid,
                                       late.login, repeat=late.repeat)
    ledger.faults += [{"kind": "stop-mysql", "t": 1.5}, {"kind": "mysql-restarted", "t": 2.5}]
    return ledger


def test_a_message_kept_in_memory_in_a_database_outage_and_stored_late_is_counted_apart(
        ) -> None:
    r = check(stored_late_during_a_database_outage("stored"))
    assert r["ok"] and r["order_violations"] == 0 and r["order_violations_storage_outage"] == 1


def test_a_live_message_late_in_a_database_outage_still_fails() -> None:
    r = check(stored_late_during_a_database_outage("live"))
    assert not r["ok"] and r["order_violations"] == 1
