"""A live server fed random, truncated, nested, huge and mistyped frames.

Afterwards it must still serve every flow, and its threads and open files
must be back to what they were: nothing leaked per bad connection.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time

import orjson
import pytest

from chat.protocol import MsgId
from tests.support.server import ServerProcess

CONNECTIONS = 80
FRAMES_PER_CONNECTION = 150


@pytest.fixture
def fuzzed_server(tmp_path):
    proc = ServerProcess(f"sqlite:///{tmp_path / 'chat.db'}", threads=2,
                         extra=["--max-frame", "4096"]).start()
    yield proc
    proc.kill()


def proc_counts(pid: int) -> tuple[int, int]:
    """Threads and open sockets of the process.

    Database files are left out: the pool opens connections lazily up to its
    size, which is growth, not a leak.
    """
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    fd_dir = f"/proc/{pid}/fd"
    sockets = 0
    for fd in os.listdir(fd_dir):
        try:
            sockets += os.readlink(f"{fd_dir}/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass
    return threads, sockets


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    return [
        lambda: None, lambda: rng.choice([True, False]), lambda: rng.randint(-2**70, 2**70),
        lambda: rng.random() * 1e300, lambda: "".join(chr(rng.randrange(0x20, 0x3000))
                                                      for _ in range(rng.randrange(20))),
        lambda: rng.choice(["", "1", "5", "a:b"]),
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {rng.choice(["msgid", "id", "to", "msg", "seq", "x"]): random_value(rng, depth + 1)
                 for _ in range(rng.randrange(4))},
        lambda: {"nested": random_value(rng, depth + 1)},
    ][kind]()


def random_frame(rng: random.Random) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64))) + b"\n"
    if choice == 1:  # truncated: a valid frame cut short, then a terminator
        whole = orjson.dumps({"msgid": rng.randrange(17), "msg": "x" * 10})
        return whole[: rng.randrange(len(whole))] + rng.choice([b"\n", b"\0"])
    if choice == 2:  # deeply nested
        depth = rng.randrange(1, 600)
        return b"[" * depth + b"]" * depth + b"\n"
    if choice == 3:  # huge: over --max-frame, closes the connection
        return b'{"msgid":5,"msg":"' + b"h" * 5000 + b'"}\n'
    msg = {"msgid": rng.choice([rng.randrange(-1, 20), "5", None, 1.0, True]),
           **{k: random_value(rng) for k in rng.sample(
               ["id", "to", "toid", "msg", "name", "password", "groupid", "friendid",
                "groupname", "groupdesc", "seq", "time"], rng.randrange(5))}}
    # The standard library writes what orjson refuses (integers over 64 bits).
    return json.dumps(msg).encode() + rng.choice(
        [b"\n", b"\n", b"\0", b"\r\n"])


def hammer(port: int, seed: int, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            if rng.random() < 0.5:  # some fuzz logged in, to reach the handlers
                reg = {"msgid": 3, "name": f"fuzz{seed}", "password": "pw"}
                sock.sendall(orjson.dumps(reg) + b"\n")
                reply = orjson.loads(sock.makefile("rb").readline())
                sock.sendall(orjson.dumps({"msgid": 1, "id": reply["id"],
                                           "password": "pw"}) + b"\n")
            for _ in range(FRAMES_PER_CONNECTION):
                data = random_frame(rng)
                for i in range(0, len(data), rng.randrange(1, 200)):
                    sock.sendall(data[i : i + 200])
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            while sock.recv(65536):
                pass
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed an oversized-frame connection while we wrote
    except BaseException as exc:
        errors.append(exc)


def test_fuzzed_server_keeps_serving_and_leaks_nothing(fuzzed_server):
    pid = fuzzed_server.proc.pid
    before = proc_counts(pid)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=hammer, args=(fuzzed_server.port, seed, errors))
               for seed in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert fuzzed_server.proc.poll() is None, "the server died"
    assert "Traceback" not in fuzzed_server.log_text()

    # Every flow still works.
    with fuzzed_server.connect() as a, fuzzed_server.connect() as b:
        ida = a.register("after-a", "pw")["id"]
        idb = b.register("after-b", "pw")["id"]
        assert a.login(ida, "pw")["errno"] == 0 and b.login(idb, "pw")["errno"] == 0
        assert a.add_friend(idb)["errno"] == 0
        gid = a.create_group("after-fuzz", "")["groupid"]
        assert b.join_group(gid)["errno"] == 0
        assert a.chat(idb, "still alive", seq=1)["state"] == "delivered"
        assert b.expect(MsgId.ONE_CHAT_MSG)["msg"] == "still alive"
        a.group_chat(gid, "group too", seq=2)
        assert b.expect(MsgId.GROUP_CHAT_MSG)["msg"] == "group too"

    deadline = time.monotonic() + 10
    while proc_counts(pid) != before and time.monotonic() < deadline:
        time.sleep(0.05)  # closes are processed asynchronously by the loops
    assert proc_counts(pid) == before
