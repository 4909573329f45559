"""Acknowledged delivery in the client as pure logic: batching, repeats, receipts."""

from __future__ import annotations

import threading

import pytest

from chat.protocol import Errno, FrameError, Message, MsgId
from client.delivery import AckBatcher, Acknowledger, RecentMids, SentMessages
from client.inbox import Inbox
from client.render import chat_ack_line, receipt_line

pytestmark = pytest.mark.timeout(10)


def chat(mid: int | None, text: str = "hi", **extra: object) -> Message:
    msg: Message = {"msgid": MsgId.ONE_CHAT_MSG, "id": 2, "name": "bob", "to": 1,
                    "msg": text, "time": "T", **extra}
    if mid is not None:
        msg["mid"] = mid
    return msg


# -- the batch: every N messages or after the delay, whichever comes first -----------


def test_a_full_batch_is_acknowledged_at_once_with_the_last_mid() -> None:
    batcher = AckBatcher(every=3, delay=0.1)
    assert batcher.received(50, now=0.0) is None
    assert batcher.received(7, now=0.0) is None  # mids of two senders: not ordered
    assert batcher.received(12, now=0.0) == 12  # the last one received, not the largest
    assert batcher.deadline() is None and batcher.take() is None


def test_the_timer_acknowledges_a_partial_batch() -> None:
    batcher = AckBatcher(every=32, delay=0.1)
    assert batcher.deadline() is None
    batcher.received(5, now=10.0)
    batcher.received(6, now=10.05)
    assert batcher.deadline() == pytest.approx(10.1)  # from the first unconfirmed message
    assert batcher.due(now=10.09) is None
    assert batcher.due(now=10.1) == 6
    assert batcher.deadline() is None and batcher.due(now=99.0) is None


def test_a_new_batch_starts_after_each_acknowledgement() -> None:
    batcher = AckBatcher(every=2, delay=1.0)
    batcher.received(1, now=0.0)
    assert batcher.received(2, now=0.5) == 2
    batcher.received(3, now=5.0)
    assert batcher.deadline() == pytest.approx(6.0)
    assert batcher.received(4, now=5.1) == 4


def test_reset_forgets_the_previous_login() -> None:
    batcher = AckBatcher(every=32, delay=0.1)
    batcher.received(9, now=0.0)
    batcher.reset()
    assert batcher.deadline() is None and batcher.take() is None


# -- repeats ---------------------------------------------------------------------------


def test_repeats_are_recognised_within_the_bound() -> None:
    recent = RecentMids(capacity=3)
    assert [recent.repeat(m) for m in (1, 2, 1, 3, 2)] == [False, False, True, False, True]
    assert recent.repeat(4) is False  # 1 is forgotten now
    assert len(recent) == 3
    assert recent.repeat(1) is False


# -- receipts --------------------------------------------------------------------------


def test_receipt_names_the_message_once() -> None:
    sent = SentMessages()
    sent.sent(41, 7, "see you at noon")
    receipt = {"msgid": MsgId.RECEIPT, "mid": 41, "to": 7}
    assert receipt_line(receipt, sent.take(41)) == "✓✓ 7 received: see you at noon"
    assert receipt_line(receipt, sent.take(41)) == "✓✓ 7 received message #41"


def test_receipt_quotes_a_short_clean_snippet() -> None:
    line = receipt_line({"mid": 1, "to": 7}, (7, "line one\nline two " + "x" * 60))
    assert line == "✓✓ 7 received: line one\\nline two xxxxxxxxxxxxxxxxxxxxx…"
    assert len(line) < 60


def test_sent_messages_are_bounded() -> None:
    sent = SentMessages(capacity=2)
    for mid in (1, 2, 3):
        sent.sent(mid, 7, f"m{mid}")
    assert sent.take(1) is None and sent.take(3) == (7, "m3")
    assert sent.take("3") is None


def test_chat_ack_lines() -> None:
    one = {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 5, "state": "stored", "mid": 3}
    assert chat_ack_line(one, "7") == "sent to 7: ✓ stored"
    group = {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 9, "state": "delivered",
             "live": 2, "stored": 1}
    assert chat_ack_line(group, "group 4") == "sent to group 4: ✓ 2 live, 1 at next login"
    older = {"msgid": MsgId.CHAT_MSG_ACK, "errno": 0, "ref": 9, "state": "delivered"}
    assert chat_ack_line(older, "group 4") == "sent to group 4: ✓ delivered"


# -- the inbox: shown once, every mid counted ------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.shown: list[str] = []
        self.acked: list[int] = []
        self.sent = SentMessages()
        self.inbox = Inbox(self.shown.append, self.acked.append, self.sent)


def test_inbox_shows_a_repeat_once_and_counts_it() -> None:
    r = Recorder()
    for msg in (chat(10, "a"), chat(11, "b", stored=True), chat(10, "a")):
        r.inbox.on_push(msg)
    assert r.shown == ["[T] 2 bob: a", "[offline] [T] 2 bob: b"]
    assert r.acked == [10, 11, 10]


def test_inbox_without_mids_shows_everything_and_acknowledges_nothing() -> None:
    r = Recorder()
    for msg in (chat(None, "a"), chat(None, "a"), chat(True), chat(2**63)):  # type: ignore[arg-type]
        r.inbox.on_push(msg)
    assert len(r.shown) == 4 and r.acked == []


def test_inbox_shows_receipts_errors_and_bad_frames() -> None:
    r = Recorder()
    r.sent.sent(5, 3, "hello")
    r.inbox.on_push({"msgid": MsgId.RECEIPT, "mid": 5, "to": 3})
    r.inbox.on_push({"msgid": MsgId.ERROR_MSG, "errno": 4, "errmsg": "bad", "ref": 17})
    r.inbox.on_push(FrameError(Errno.BAD_REQUEST, "malformed JSON"))
    assert r.shown == ["✓✓ 3 received: hello", "error 4: bad",
                       "error: bad frame from the server: malformed JSON"]
    assert r.acked == []


# -- the acknowledger thread -----------------------------------------------------------


class AckSink:
    def __init__(self) -> None:
        self.mids: list[int] = []
        self.sent = threading.Semaphore(0)

    def __call__(self, mid: int) -> None:
        self.mids.append(mid)
        self.sent.release()


def test_acknowledger_sends_a_partial_batch_when_the_timer_runs_out() -> None:
    sink = AckSink()
    acks = Acknowledger(sink, AckBatcher(every=32, delay=0.05))
    acks.start()
    try:
        for mid in (3, 1, 2):
            acks.received(mid)
        assert sink.sent.acquire(timeout=5)
        assert sink.mids == [2]
    finally:
        acks.stop()
    assert sink.mids == [2]


def test_acknowledger_sends_a_full_batch_at_once_and_flushes_on_demand() -> None:
    sink = AckSink()
    acks = Acknowledger(sink, AckBatcher(every=4, delay=3600))
    acks.start()
    try:
        for mid in range(1, 6):
            acks.received(mid)
        assert sink.mids == [4]  # sent by the caller of the fourth received()
        acks.flush()
        assert sink.mids == [4, 5]
        acks.flush()
        assert sink.mids == [4, 5]
    finally:
        acks.stop()
