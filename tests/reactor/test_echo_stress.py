"""500 concurrent clients x 100 random-sized messages through a 4-thread echo server.

Clients run in a few threads, each driving its share of non-blocking sockets
from its own selector; each connection keeps one message in flight and
checks that the echo matches it byte for byte.
"""

from __future__ import annotations

import math
import random
import selectors
import socket
import threading
import time

from .conftest import WAIT, ServerFactory

CLIENTS = 500
MESSAGES = 100
CLIENT_THREADS = 4
MAX_SIZE = 256 * 1024
# One random block; message k of client c is a slice of it at a seeded offset,
# so payloads differ without generating hundreds of MB of random bytes.
BLOCK = random.Random(1).randbytes(2 * MAX_SIZE)


def message_sizes(rng: random.Random) -> list[int]:
    """Log-uniform sizes in [1, MAX_SIZE]: mostly small, a few large."""
    top = math.log(MAX_SIZE)
    return [max(1, min(MAX_SIZE, int(math.exp(rng.uniform(0, top))))) for _ in range(MESSAGES)]


class EchoClient:
    def __init__(self, address: tuple[str, int], seed: int) -> None:
        rng = random.Random(seed)
        self.sizes = message_sizes(rng)
        self.offsets = [rng.randrange(MAX_SIZE) for _ in range(MESSAGES)]
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.sock.setblocking(False)
        self.index = 0
        self.sent = 0
        self.received = 0
        self.mismatch = False

    def message(self) -> memoryview:
        off = self.offsets[self.index]
        return memoryview(BLOCK)[off : off + self.sizes[self.index]]

    def on_writable(self) -> bool:
        """Send more of the current message; True once it is all sent."""
        msg = self.message()
        try:
            self.sent += self.sock.send(msg[self.sent :])
        except BlockingIOError:
            pass
        return self.sent == len(msg)

    def on_readable(self) -> bool:
        """Read echoed bytes and check them; True when the whole run is done."""
        msg = self.message()
        data = self.sock.recv(len(msg) - self.received)
        assert data, "server closed the connection"
        if data != msg[self.received : self.received + len(data)]:
            self.mismatch = True
        self.received += len(data)
        if self.received == len(msg):
            self.index += 1
            self.sent = self.received = 0
        return self.index == MESSAGES


def drive(clients: list[EchoClient], errors: list[BaseException]) -> None:
    sel = selectors.DefaultSelector()
    try:
        for c in clients:
            sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        live = len(clients)
        deadline = time.monotonic() + 4 * WAIT
        while live and time.monotonic() < deadline:
            for key, mask in sel.select(1.0):
                live -= step(sel, key.data, mask)
        assert live == 0, f"{live} clients unfinished"
    except BaseException as exc:  # reported to the test thread
        errors.append(exc)
    finally:
        sel.close()


def step(sel: selectors.BaseSelector, c: EchoClient, mask: int) -> int:
    if mask & selectors.EVENT_WRITE and c.on_writable():
        sel.modify(c.sock, selectors.EVENT_READ, c)
    if mask & selectors.EVENT_READ:
        try:
            done = c.on_readable()
        except BlockingIOError:
            return 0
        if done:
            sel.unregister(c.sock)
            c.sock.close()
            return 1
        if c.sent == 0 and c.received == 0:  # next message: write it
            sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    return 0


def test_500_clients_100_messages_each(make_server: ServerFactory) -> None:
    server = make_server(threads=4)
    clients = [EchoClient(server.address, seed) for seed in range(CLIENTS)]
    total = sum(sum(c.sizes) for c in clients)
    assert total < 1_500_000_000  # sanity bound on the data volume
    errors: list[BaseException] = []
    groups = [clients[i::CLIENT_THREADS] for i in range(CLIENT_THREADS)]
    threads = [threading.Thread(target=drive, args=(g, errors)) for g in groups]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(5 * WAIT)
    elapsed = time.monotonic() - started
    assert not errors, errors[0]
    assert all(c.index == MESSAGES and not c.mismatch for c in clients)
    print(f"echoed {total / 1e6:.0f} MB each way in {elapsed:.1f}s")
