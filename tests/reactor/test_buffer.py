"""Pure tests of Buffer: fed whole, in pieces and byte by byte."""

from __future__ import annotations

import random
import socket

import pytest

from reactor import Buffer
from reactor.buffer import _COMPACT_MIN


def test_append_peek_retrieve() -> None:
    buf = Buffer()
    assert len(buf) == 0 and buf.readable_bytes() == 0 and not buf
    buf.append(b"hello ")
    buf.append(bytearray(b"wor"))
    buf.append(memoryview(b"ld"))
    assert len(buf) == 11 and buf
    assert buf.peek() == b"hello world"
    buf.retrieve(6)
    assert buf.peek() == b"world" and buf.readable_bytes() == 5
    assert buf.retrieve_as_bytes(3) == b"wor"
    assert buf.retrieve_all() == b"ld"
    assert len(buf) == 0 and buf.retrieve_all() == b""


def test_retrieve_more_than_readable_empties() -> None:
    buf = Buffer(b"abc")
    buf.retrieve(10)
    assert len(buf) == 0
    assert Buffer(b"xy").retrieve_as_bytes(5) == b"xy"
    with pytest.raises(ValueError):
        buf.retrieve(-1)


def test_find_is_relative_to_read_index() -> None:
    buf = Buffer(b"xx\r\nline1\r\nline2")
    assert buf.find(b"\r\n") == 2
    buf.retrieve(4)
    assert buf.find(b"\r\n") == 5
    assert buf.find(b"\r\n", 6) == -1
    assert buf.find(b"zz") == -1
    assert buf.find(b"line2") == 7


def test_peek_is_a_copy_so_append_still_works() -> None:
    buf = Buffer(b"abc")
    view = buf.peek()
    buf.append(b"d" * 100_000)  # would raise BufferError with a live memoryview
    assert view == b"abc" and len(buf) == 100_003


def _split_lines(chunks: list[bytes]) -> list[bytes]:
    buf, lines = Buffer(), []
    for chunk in chunks:
        buf.append(chunk)
        while (i := buf.find(b"\n")) >= 0:
            lines.append(buf.retrieve_as_bytes(i + 1)[:-1])
    assert len(buf) == 0
    return lines


@pytest.mark.parametrize("piece", [1, 3, 7, 4096, 1 << 20])
def test_line_framing_whole_and_in_pieces(piece: int) -> None:
    rng = random.Random(piece)
    lines = [rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b"_") for _ in range(500)]
    stream = b"".join(line + b"\n" for line in lines)
    chunks = [stream[i : i + piece] for i in range(0, len(stream), piece)]
    assert _split_lines(chunks) == lines


def test_compaction_bounds_dead_prefix() -> None:
    buf = Buffer()
    buf.append(b"a" * (_COMPACT_MIN * 4))
    total = 0
    while len(buf) > 1:
        buf.retrieve(1)
        total += 1
        # The dead prefix never exceeds max(_COMPACT_MIN, live bytes) (+1 step).
        assert buf._read <= max(_COMPACT_MIN, len(buf)) + 1
    assert total == _COMPACT_MIN * 4 - 1
    assert buf.retrieve_all() == b"a"


def test_many_small_retrieves_are_not_quadratic() -> None:
    # 2 MB retrieved 16 bytes at a time: quadratic shifting would move ~128 GB.
    buf = Buffer(bytes(range(256)) * 8192)
    out = bytearray()
    while buf:
        out += buf.retrieve_as_bytes(16)
    assert bytes(out) == bytes(range(256)) * 8192


def test_send_to_and_recv_from_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b:
        buf = Buffer(b"..payload")
        buf.retrieve(2)
        assert buf.send_to(a) == 7 and len(buf) == 0
        inbox = Buffer()
        assert inbox.recv_from(b) == 7
        assert inbox.retrieve_all() == b"payload"
        a.close()
        assert inbox.recv_from(b) == 0  # EOF


def test_a_read_retrieved_whole_is_not_copied() -> None:
    buf = Buffer()
    data = b"one read, retrieved whole\n"
    buf.append(data)
    assert buf.retrieve_all() is data
    buf.append(data)
    buf.append(b"more")  # the kept bytes become a bytearray first
    assert buf.retrieve_all() == data + b"more"
    assert buf.retrieve_all() == b""


@pytest.mark.parametrize("seed", range(20))
def test_random_operations_match_a_plain_bytearray(seed: int) -> None:
    rng = random.Random(seed)
    buf, model = Buffer(), bytearray()
    for _ in range(400):
        op = rng.randrange(6)
        if op <= 2:
            chunk = rng.randbytes(rng.choice([0, 1, 5, 300, 5000]))
            kind = rng.choice([bytes, bytearray, memoryview])
            model += chunk
            assert buf.append(kind(chunk)) == len(model)
        elif op == 3:
            n = rng.randrange(len(model) + 2)
            assert buf.retrieve_as_bytes(n) == model[:n]
            del model[:n]
        elif op == 4:
            n = rng.randrange(len(model) + 2)
            buf.retrieve(n)
            del model[:n]
        else:
            assert buf.retrieve_all() == model
            model.clear()
        assert len(buf) == len(model) and buf.peek() == model
        needle = model[len(model) // 2 : len(model) // 2 + 3]
        if needle:
            assert buf.find(needle) == model.find(needle)
