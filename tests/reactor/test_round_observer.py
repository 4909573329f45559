"""EventLoop.set_round_observer: called once per batch of ready events, never when unset."""

from __future__ import annotations

import selectors
import socket
import threading

from reactor import EventLoopThread


def test_observer_sees_each_batch_and_stops_when_removed() -> None:
    thread = EventLoopThread("observed")
    loop = thread.start_loop()
    rounds: list[tuple[int, float, float]] = []
    handled = threading.Event()
    a, b = socket.socketpair()
    a.setblocking(False)

    def on_read(mask: int) -> None:
        a.recv(100)
        handled.set()

    loop.run_in_loop(lambda: loop.register(a, selectors.EVENT_READ, on_read))
    loop.set_round_observer(lambda events, lag, busy: rounds.append((events, lag, busy)))
    try:
        b.send(b"x")
        assert handled.wait(5)
        done = threading.Event()
        loop.queue_in_loop(done.set)  # a later round: the first one's observer has run
        assert done.wait(5)
        assert rounds, "no round observed"
        assert all(events >= 1 and lag >= 0 and busy >= 0 for events, lag, busy in rounds)

        loop.set_round_observer(None)
        seen = len(rounds)
        handled.clear()
        b.send(b"y")
        assert handled.wait(5)
        done.clear()
        loop.queue_in_loop(done.set)
        assert done.wait(5)
        assert len(rounds) == seen
    finally:
        loop.run_in_loop(lambda: loop.unregister(a))
        thread.stop(5)
        a.close()
        b.close()
