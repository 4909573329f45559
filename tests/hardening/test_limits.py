"""Each configurable limit: reached, answered with a clear error, others unharmed."""

from __future__ import annotations

import re
import socket
import time

import pytest

from chat.protocol import Dialect, Errno, MsgId
from tests.hardening.conftest import logged_in


def test_message_text_length(limited_server):
    srv = limited_server("--max-msg-len", "10")
    alice, bob = logged_in(srv, "alice"), logged_in(srv, "bob")
    assert alice.chat(bob.user_id, "x" * 10, seq=1)["state"] == "delivered"
    err = alice.chat(bob.user_id, "x" * 11, seq=2)
    assert err["errno"] == Errno.BAD_REQUEST and "10 characters" in err["errmsg"]
    gid = alice.create_group("g", "")["groupid"]
    assert alice.group_chat(gid, "y" * 11, seq=3)["errno"] == Errno.BAD_REQUEST
    assert bob.expect(MsgId.ONE_CHAT_MSG)["msg"] == "x" * 10
    assert bob.closed_by_server(timeout=0.3) is False and bob.pushed == []


def test_offline_messages_per_user_keep_the_newest(limited_server):
    srv = limited_server("--max-offline", "5")
    alice = logged_in(srv, "alice")
    with srv.connect() as s:
        bob = s.register("bob", "pw")["id"]
    for i in range(8):
        alice.chat(bob, f"m{i}")
    assert alice.chat(bob, "m8", seq=1)["state"] == "stored"
    with srv.connect() as s:
        ack = s.login(bob, "pw")
    assert [m["msg"] for m in ack["offlinemsg"]] == [f"m{i}" for i in range(4, 9)]
    assert srv.wait_for_log(r"dropped the \d+ oldest")


def test_request_rate_refuses_a_flood_and_spares_others(limited_server):
    srv = limited_server("--rate", "20", "--burst", "50")
    flooder, calm, friend = (logged_in(srv, n) for n in ("flooder", "calm", "friend"))
    for i in range(90):  # fewer refusals than the burst: refused, not cut off
        flooder.send({"msgid": MsgId.ONE_CHAT_MSG, "to": friend.user_id, "msg": "spam",
                      "seq": i})
    replies = [flooder.recv() for _ in range(90)]
    refused = [r for r in replies if r["msgid"] == MsgId.ERROR_MSG]
    assert 20 <= len(refused) < 50
    assert all(r["errno"] == Errno.SERVER_ERROR for r in refused)
    assert "too many requests" in refused[0]["errmsg"]
    # Another user's requests are all served meanwhile.
    for i in range(30):
        assert calm.chat(friend.user_id, f"calm {i}", seq=i)["state"] == "delivered"


def test_a_connection_that_keeps_flooding_is_closed(limited_server):
    srv = limited_server("--rate", "5", "--burst", "10")
    flooder = logged_in(srv, "flooder")
    with srv.connect() as other:
        other.register("other", "pw")
    for i in range(200):
        try:
            flooder.send({"msgid": MsgId.ADD_GROUP_MSG, "groupid": 1, "seq": i})
        except OSError:
            break
    assert flooder.closed_by_server(timeout=5)
    assert logged_in(srv, "after").chat(1, "hi", seq=1)["errno"] == 0


def test_failed_logins_are_throttled_per_account(limited_server):
    srv = limited_server("--account-failures", "3")
    with srv.connect() as s:
        victim = s.register("victim", "right")["id"]
        other = s.register("other", "right")["id"]
        for _ in range(3):
            assert s.login(victim, "wrong")["errmsg"] == "wrong user id, name or password"
        blocked = s.login(victim, "right")
        assert blocked["errno"] == Errno.INVALID and "too many" in blocked["errmsg"]
        assert s.login(other, "right")["errno"] == 0


def test_failed_logins_are_throttled_per_address(limited_server):
    srv = limited_server("--address-failures", "4", "--account-failures", "100")
    with srv.connect() as s:
        ids = [s.register(f"user{i}", "right")["id"] for i in range(5)]
        for uid in ids[:4]:
            assert s.login(uid, "wrong")["errno"] == Errno.INVALID
        assert "too many" in s.login(ids[4], "right")["errmsg"]


def test_login_throttle_forgets_after_the_window(limited_server):
    srv = limited_server("--account-failures", "2", "--login-window", "0.5")
    with srv.connect() as s:
        uid = s.register("slow", "right")["id"]
        s.login(uid, "wrong")
        s.login(uid, "wrong")
        assert "too many" in s.login(uid, "right")["errmsg"]
        time.sleep(0.6)  # the window itself is what is tested
        assert s.login(uid, "right")["errno"] == 0


def test_max_connections_refuses_new_ones_and_keeps_the_old(limited_server):
    srv = limited_server("--max-connections", "3")
    alice, bob = logged_in(srv, "alice"), logged_in(srv, "bob")
    third = srv.connect()
    third.register("third", "pw")
    extra = srv.connect()
    err = extra.recv()
    assert err == {"msgid": 15, "errno": Errno.SERVER_ERROR, "errmsg": err["errmsg"], "ref": None}
    assert "full" in err["errmsg"]
    assert extra.closed_by_server(timeout=5)
    assert alice.chat(bob.user_id, "still here", seq=1)["state"] == "delivered"
    third.close()
    # A freed place is taken again (the server notices the close asynchronously).
    deadline = time.monotonic() + 5
    while True:
        again = srv.connect()
        try:
            if again.register("fourth", "pw")["msgid"] == MsgId.REG_MSG_ACK:
                break
        except (ConnectionError, AssertionError):
            pass
        assert time.monotonic() < deadline
        again.close()


def test_connection_that_never_logs_in_is_closed(limited_server):
    srv = limited_server("--login-timeout", "0.3")
    s = srv.connect()
    started = time.monotonic()
    err = s.recv(timeout=5)
    assert err["errno"] == Errno.NOT_LOGGED_IN and "log in within" in err["errmsg"]
    assert s.closed_by_server(timeout=5)
    assert time.monotonic() - started >= 0.3
    logged = logged_in(srv, "quick")  # a user who logs in in time stays
    assert logged.closed_by_server(timeout=0.6) is False


def test_silent_connection_is_closed_and_its_user_marked_offline(limited_server):
    srv = limited_server("--idle-timeout", "0.5")
    silent = logged_in(srv, "silent")
    uid = silent.user_id
    err = silent.recv(timeout=5)
    assert err["errno"] == Errno.BAD_REQUEST and "keep-alive" in err["errmsg"]
    assert silent.closed_by_server(timeout=5)
    with srv.connect() as s:
        assert s.login(uid, "pw")["errno"] == 0


def test_silent_legacy_connection_is_closed_without_a_frame(limited_server):
    # The legacy dialect has no ERROR_MSG, so its idle close says nothing.
    srv = limited_server("--idle-timeout", "0.5")
    silent = srv.connect(dialect=Dialect.LEGACY)
    uid = silent.register("silent-legacy", "pw")["id"]
    assert silent.login(uid, "pw")["errno"] == 0
    assert not silent.inbox
    silent.sock.settimeout(5)
    rest = b""
    while chunk := silent.sock.recv(4096):  # raw: any frame at all, in either dialect
        rest += chunk
    assert rest == b""
    with srv.connect() as s:
        assert s.login(uid, "pw")["errno"] == 0


def test_keep_alive_lines_hold_an_idle_connection_open(limited_server):
    srv = limited_server("--idle-timeout", "0.6")
    alive = logged_in(srv, "alive")
    for _ in range(8):  # 1.6 s in all, well past the timeout
        alive.send_raw(b"\n")
        assert alive.closed_by_server(timeout=0.2) is False
    assert alive.pushed == []
    alive.send_raw(b"\r\n")
    assert alive.register("x", "pw")["errno"] == 0


@pytest.mark.parametrize("dialect", [Dialect.MODERN, Dialect.LEGACY])
def test_a_slow_consumer_is_not_dropped_and_gets_everything_once_it_reads(
        limited_server, dialect):
    srv = limited_server("--high-water-mark", "65536", "--slow-grace", "0.5",
                         "--rate", "1e6", "--burst", "100000")
    sender = logged_in(srv, "sender")
    slow = srv.connect(dialect=dialect)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no autotuning
    uid = slow.register("slow", "pw")["id"]
    assert slow.login(uid, "pw")["errno"] == 0
    sent = [f"{i:05d} " + "z" * 1000 for i in range(8000)]  # beyond the kernel buffers
    for i, text in enumerate(sent):
        sender.send({"msgid": MsgId.ONE_CHAT_MSG, "to": uid, "msg": text})
        if i % 500 == 499:  # the sender is never slowed down by the slow reader
            assert sender.chat(uid, "sync", seq=i)["errno"] == 0
    # Over the high-water mark for longer than the grace, were it queued in memory.
    assert sender.chat(uid, "end", seq="end")["errno"] == 0
    got = []
    while "end" not in got:
        got.append(slow.expect((MsgId.ONE_CHAT_MSG,), timeout=10)["msg"])
    assert [m for m in got if m not in ("sync", "end")] == sent  # all, in order, once
    assert "dropping it" not in srv.log_text()


def test_a_login_ack_over_the_high_water_mark_is_delivered(limited_server):
    srv = limited_server("--high-water-mark", "65536", "--slow-grace", "0.5")
    sender = logged_in(srv, "sender")
    with srv.connect() as s:
        uid = s.register("away", "pw")["id"]
    texts = [f"{i} " + "q" * 2000 for i in range(300)]  # about 600 KB of login ack
    for text in texts:
        sender.chat(uid, text)
    assert sender.chat(uid, "last", seq=1)["state"] == "stored"
    with srv.connect() as s:
        assert [m["msg"] for m in s.backlog(s.login(uid, "pw"))] == [*texts, "last"]
        assert s.closed_by_server(timeout=1) is False


def test_a_refused_connection_that_lingers_is_closed(limited_server):
    srv = limited_server("--max-connections", "1", "--login-timeout", "2")
    keeper = logged_in(srv, "keeper")
    lingerer = srv.connect()
    assert "full" in lingerer.recv()["errmsg"]
    # It read its error and the server's EOF but keeps its end open: once the
    # server closes its end too, writing to it gets a reset.
    deadline = time.monotonic() + 15
    while True:
        try:
            lingerer.sock.sendall(b"\n")
            lingerer.sock.settimeout(0.5)
            if lingerer.sock.recv(1) == b"":
                time.sleep(0.2)  # half-closed only: not yet
        except (ConnectionResetError, BrokenPipeError):
            break
        except TimeoutError:
            pass
        assert time.monotonic() < deadline, "the refused connection was never closed"
    assert keeper.register("still-served", "pw")["errno"] == 0


def test_a_trickle_of_a_never_finished_frame_does_not_hold_a_connection_open(limited_server):
    srv = limited_server("--idle-timeout", "1")
    dodger = logged_in(srv, "dodger")
    trickle = b'{"msgid":5,"to":1,"msg":"' + b"z" * 200
    closed = False
    for byte in trickle:  # one byte every 0.2 s: 40 s in all, far past the timeout
        try:
            dodger.send_raw(bytes([byte]))
        except OSError:
            closed = True
            break
        if dodger.closed_by_server(timeout=0.2):
            closed = True
            break
    assert closed
    assert dodger.pushed and dodger.pushed[0]["errno"] == Errno.BAD_REQUEST
    assert "keep-alive" in dodger.pushed[0]["errmsg"]


def test_a_flooding_connection_writes_a_bounded_number_of_log_lines(limited_server):
    srv = limited_server("--rate", "5", "--burst", "10")
    flooder = logged_in(srv, "flooder")
    before = len(srv.lines)
    frame = b'{"msgid":8,"groupid":1}\n'
    try:
        for _ in range(20):  # 3,000 requests, most of them behind the decision to close
            flooder.send_raw(frame * 150)
    except OSError:
        pass
    assert flooder.closed_by_server(timeout=10)
    with srv.connect() as probe:  # the server is past the flood once this is answered
        assert probe.register("probe", "pw")["errno"] == 0
    flood_lines = srv.lines[before:]
    assert len(flood_lines) <= 3, flood_lines
    assert sum("still flooding" in line for line in flood_lines) == 1


def test_offline_cap_warnings_are_summarised(limited_server):
    srv = limited_server("--max-offline", "2", "--log-interval", "2")
    alice = logged_in(srv, "alice")
    with srv.connect() as s:
        bob = s.register("bob", "pw")["id"]
    for i in range(60):
        alice.chat(bob, f"m{i}")
    assert alice.chat(bob, "last", seq=1)["state"] == "stored"
    srv.wait_for_log(r"dropped \d+ oldest offline messages for 1 user", timeout=15)

    def counted() -> tuple[int, list[str]]:
        lines = [line for line in srv.lines if "offline" in line and "dropped" in line]
        return sum(int(re.search(r"dropped (the )?(\d+)", ln)[2]) for ln in lines), lines

    deadline = time.monotonic() + 10
    while counted()[0] < 59 and time.monotonic() < deadline:
        time.sleep(0.2)  # the summary is written by a timer: nothing else to wait on
    # Whatever the split into intervals, every drop is counted, in a few lines.
    total, lines = counted()
    assert total == 59, lines
    assert len(lines) <= 4, lines
