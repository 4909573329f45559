"""Message ids: increasing per node, unique across nodes and threads, never repeated."""

from __future__ import annotations

import threading

import pytest

from chat import mids
from chat.mids import EPOCH_MS, MidGenerator, make_mid, mid_node, mid_time_ms


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def time_ns(self) -> int:
        return self.ms * 1_000_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(EPOCH_MS + 10_000)
    monkeypatch.setattr(mids, "_time_ns", fake.time_ns)
    return fake


def test_the_layout_round_trips() -> None:
    mid = make_mid(EPOCH_MS + 123_456, 1023, 4095)
    assert (mid_time_ms(mid), mid_node(mid)) == (EPOCH_MS + 123_456, 1023)
    assert 0 < make_mid(EPOCH_MS + (1 << 41) - 1, 1023, 4095) < 1 << 63


def test_more_than_a_millisecond_of_sequence_borrows_the_next_millisecond(
        clock: FakeClock) -> None:
    give = MidGenerator(5)
    got = [give() for _ in range(5000)]
    assert got == sorted(set(got))
    assert {mid_node(m) for m in got} == {5}  # never carried into the node bits
    assert mid_time_ms(got[0]) == clock.ms and mid_time_ms(got[-1]) == clock.ms + 1


def test_a_clock_gone_back_does_not_repeat_or_lower_ids(clock: FakeClock) -> None:
    give = MidGenerator(5)
    before = give()
    clock.ms -= 60_000
    assert give() > before


def test_a_restarted_node_starts_above_its_recorded_floor(clock: FakeClock) -> None:
    floor = clock.ms + 5_000  # the last id it gave, before a restart with a slow clock
    assert mid_time_ms(MidGenerator(5, floor_ms=floor)()) == floor + 1
    assert MidGenerator(5, floor_ms=floor).last_ms == floor


def test_threads_and_nodes_never_share_an_id() -> None:
    gens = [MidGenerator(1), MidGenerator(2)]
    got: list[list[int]] = [[] for _ in range(8)]

    def take(i: int) -> None:
        got[i] = [gens[i % 2]() for _ in range(5000)]

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [m for ids in got for m in ids]
    assert len(set(every)) == len(every) == 40_000
    assert all(ids == sorted(ids) for ids in got)  # each thread sees them increase
