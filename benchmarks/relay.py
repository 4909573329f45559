#!/usr/bin/env python3
"""The bare relay: the floor under what any Python chat server can cost.

One thread and one ``selectors`` loop; no storage, no checks, no limits.
``REG_MSG`` gets the next id, ``LOGIN_MSG`` always succeeds and binds the
socket to the id it names, and a ``ONE_CHAT_MSG`` is written as it came to
the socket of its ``to`` (or ``toid``).  Everything else is dropped.  The
benchmarks drive it and the chat server with the same driver in one run, so
the ratio between the two says what the server's checks, storage and
threads cost over Python's own socket loop.

    python benchmarks/relay.py PORT        (needs orjson)

It reads 64 KiB at a time, as the server does: a larger buffer would cross
glibc's mmap threshold and cost an mmap and a munmap per read.
"""

from __future__ import annotations

import selectors
import socket
import sys

import orjson

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Relay:
    def __init__(self, port: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.listener.setblocking(False)
        self.selector.register(self.listener, READ, None)
        self.users: dict[int, socket.socket] = {}
        self.pending: dict[socket.socket, bytes] = {}  # a partial frame per socket
        self.unsent: dict[socket.socket, bytes] = {}  # what the kernel did not take
        self.last_id = 0

    def run(self) -> None:
        while True:
            for key, mask in self.selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    self.accept()
                    continue
                if mask & WRITE:
                    self.write(sock, b"")
                if mask & READ:
                    self.read(sock)

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending[sock] = b""
        self.selector.register(sock, READ, None)

    def read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
            return
        *frames, self.pending[sock] = (self.pending[sock] + data).split(b"\n")
        for frame in frames:
            if frame.strip():
                self.handle(sock, frame)

    def handle(self, sock: socket.socket, frame: bytes) -> None:
        msg = orjson.loads(frame)
        kind = msg.get("msgid")
        if kind == 5:
            target = self.users.get(msg.get("to", msg.get("toid")))
            if target is not None:
                self.write(target, frame + b"\n")
        elif kind == 1:
            self.users[msg["id"]] = sock
            self.write(sock, orjson.dumps({"msgid": 2, "errno": 0, "id": msg["id"],
                                           "name": "relay"}) + b"\n")
        elif kind == 3:
            self.last_id += 1
            self.write(sock, orjson.dumps({"msgid": 4, "errno": 0, "id": self.last_id}) + b"\n")

    def write(self, sock: socket.socket, data: bytes) -> None:
        if sock not in self.pending:
            return  # dropped meanwhile
        was_waiting = sock in self.unsent
        data = self.unsent.pop(sock, b"") + data
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(sock)
            return
        if sent < len(data):
            if not was_waiting:
                self.selector.modify(sock, READ | WRITE, None)
            self.unsent[sock] = data[sent:]
        elif was_waiting:
            self.selector.modify(sock, READ, None)

    def drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        self.pending.pop(sock, None)
        self.unsent.pop(sock, None)
        for user, held in list(self.users.items()):
            if held is sock:
                del self.users[user]
        sock.close()


if __name__ == "__main__":
    Relay(int(sys.argv[1])).run()
