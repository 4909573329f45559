"""Many concurrent clients: registrations, logins and chat with nothing lost."""

from __future__ import annotations

import threading
import uuid

from chat.protocol import MsgId

CLIENTS = 300
MESSAGES = 20


def test_300_clients_register_log_in_and_chat_in_a_ring(server):
    tag = uuid.uuid4().hex[:8]
    ids: list[int | None] = [None] * CLIENTS
    registered = threading.Barrier(CLIENTS, timeout=60)
    received: list[list[str]] = [[] for _ in range(CLIENTS)]
    acks: list[int] = [0] * CLIENTS
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with server.connect(timeout=30) as s:
                reg = s.register(f"ring-{tag}-{i}", "pw")
                assert reg["errno"] == 0, reg
                ids[i] = reg["id"]
                assert s.login(reg["id"], "pw")["errno"] == 0
                registered.wait()
                peer = ids[(i + 1) % CLIENTS]
                assert peer is not None
                for n in range(MESSAGES):
                    s.send({"msgid": 5, "to": peer, "msg": f"{i}:{n}", "seq": n})
                while len(received[i]) < MESSAGES or acks[i] < MESSAGES:
                    msg = s.recv()
                    if msg["msgid"] == MsgId.ONE_CHAT_MSG:
                        received[i].append(msg["msg"])
                    else:
                        assert msg["msgid"] == MsgId.CHAT_MSG_ACK, msg
                        assert msg["state"] == "delivered"
                        acks[i] += 1
                # Nobody leaves before everyone has everything (or all would be stored).
                registered.wait()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            registered.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors[:3]
    assert len(set(ids)) == CLIENTS
    for i in range(CLIENTS):
        sender = (i - 1) % CLIENTS
        assert received[i] == [f"{sender}:{n}" for n in range(MESSAGES)]
