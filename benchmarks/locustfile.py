"""Locust users that speak the chat protocol over raw TCP.

    locust -f benchmarks/locustfile.py --headless -u 500 -r 50 -t 60s \\
        --host tcp://127.0.0.1:6000 [--csv PREFIX] [--think-time 1.0]

(or without ``--headless`` for the web UI).  Start the server with the cheap
password hash for load runs: ``CHAT_SCRYPT_LOG2N=8 python -m chat.server``.

Each simulated user opens one connection (`ChatClient`: a plain socket, made
cooperative by locust's gevent monkey-patching, plus one reader greenlet that
decodes frames with the project's `FrameDecoder`), registers a fresh name,
logs in, adds a few friends among the users this process started before it,
and joins its group (users are placed in groups of ``--group-size``; the
first of a group creates it).  Then, with a think time between tasks, it
chats with a friend (weight 10), chats in its group (weight 3), or logs out
and back in (weight 1).

Reported to locust (``events.request``):

- ``tcp`` requests: ``register``, ``login``, ``add_friend``, ``create_group``,
  ``join_group``, ``logout``, ``one_chat``, ``group_chat``; every request
  carries a ``seq`` and its time is request -> the reply with that ``seq``
  (for chats, the server's ``CHAT_MSG_ACK``).  A non-zero ``errno`` or no
  reply in ``--reply-timeout`` seconds is a failure.
- ``deliver`` entries: ``one_chat``, ``group_chat`` for each message pushed
  live to this user, timed from the send instant written at the start of the
  text (wall clock, so locust workers on this machine agree) to its arrival;
  ``offline`` for each message found in a login ACK (its time includes the
  time the user was away).
"""

from __future__ import annotations

import itertools
import random
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult
from locust import User, events, task

from chat.protocol import FrameDecoder, FrameError, Message, MsgId, encode

RUN = uuid.uuid4().hex[:6]  # names stay unique across runs on one database
_user_numbers = itertools.count()
_directory: dict[int, int] = {}  # user number -> user id, of users started by this process
_groups: dict[int, AsyncResult] = {}  # group slot -> AsyncResult of its group id


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--think-time", type=float, default=1.0, include_in_web_ui=True,
                        help="mean seconds between a user's tasks (uniform 0.5x-1.5x)")
    parser.add_argument("--group-size", type=int, default=20, include_in_web_ui=True,
                        help="users per chat group")
    parser.add_argument("--friends", type=int, default=3, help="friends each user adds")
    parser.add_argument("--reply-timeout", type=float, default=10.0,
                        help="seconds to wait for a reply before counting a failure")


class RequestFailed(Exception):
    """The server refused a request (non-zero errno) or did not answer in time."""


class ChatClient:
    """One connection: `request` sends with a ``seq`` and waits for the reply carrying it;
    a reader greenlet resolves replies and reports pushed messages."""

    def __init__(self, host: str, port: int, env: Any, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)  # the reader blocks (cooperatively) until data comes
        self.env = env
        self.timeout = timeout
        self.decoder = FrameDecoder(max_frame=1 << 30)
        self.pending: dict[int, AsyncResult] = {}
        self.seqs = itertools.count(1)
        self.closed = False
        self.reader = gevent.spawn(self._read_loop)

    def _fire(self, kind: str, name: str, ms: float, length: int = 0,
              exc: Exception | None = None) -> None:
        self.env.events.request.fire(request_type=kind, name=name, response_time=ms,
                                     response_length=length, exception=exc, context={})

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                for result in self.pending.values():
                    result.set_exception(ConnectionError("server closed the connection"))
                self.pending.clear()
                return
            for item in self.decoder.feed(data):
                self._dispatch(item, len(data))

    def _dispatch(self, item: Message | FrameError, length: int) -> None:
        if isinstance(item, FrameError):
            self._fire("deliver", "bad_frame", 0, exc=RequestFailed(item.errmsg))
            return
        waiter = self.pending.pop(item.get("seq"), None) if "seq" in item else None
        if waiter is not None:
            waiter.set(item)
        elif item.get("msgid") in (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG):
            name = "one_chat" if item["msgid"] == MsgId.ONE_CHAT_MSG else "group_chat"
            self._fire("deliver", name, _age_ms(item), length)
        else:
            self._fire("deliver", "unexpected", 0, exc=RequestFailed(repr(item)[:200]))

    def request(self, name: str, msg: Message) -> Message | None:
        """Send ``msg`` with a fresh ``seq``; the reply, or None (reported as a failure)."""
        seq = next(self.seqs)
        waiter = AsyncResult()
        self.pending[seq] = waiter
        t0 = time.perf_counter()
        try:
            if self.closed:
                raise ConnectionError("connection closed")
            self.sock.sendall(encode({**msg, "seq": seq}))
            reply: Message = waiter.get(timeout=self.timeout)
            if reply.get("errno"):
                raise RequestFailed(f"errno {reply['errno']}: {reply.get('errmsg')}")
        except (OSError, RequestFailed, gevent.Timeout) as exc:
            self.pending.pop(seq, None)
            self._fire("tcp", name, (time.perf_counter() - t0) * 1000, exc=exc)
            return None
        self._fire("tcp", name, (time.perf_counter() - t0) * 1000, len(encode(reply)))
        return reply

    def close(self) -> None:
        self.closed = True
        self.reader.kill(block=False)
        self.sock.close()


def _age_ms(msg: Message) -> float:
    """Milliseconds since the send instant at the start of the text (0 if there is none)."""
    head = str(msg.get("msg", "")).partition(" ")[0]
    return max(0.0, (time.time_ns() - int(head)) / 1e6) if head.isdigit() else 0.0


def _text(words: str) -> str:
    return f"{time.time_ns()} {words}"


class ChatUser(User):
    """A person using the chat: register, log in, friends, a group, chat, log out and in."""

    host = "tcp://127.0.0.1:6000"

    def wait_time(self) -> float:
        mean = getattr(self.environment.parsed_options, "think_time", 1.0)
        return random.uniform(0.5 * mean, 1.5 * mean)

    def _opt(self, name: str, default: Any) -> Any:
        return getattr(self.environment.parsed_options, name, default)

    def on_start(self) -> None:
        url = urlsplit(self.host if "//" in self.host else f"tcp://{self.host}")
        self.client = ChatClient(url.hostname or "127.0.0.1", url.port or 6000,
                                 self.environment, self._opt("reply_timeout", 10.0))
        self.number = next(_user_numbers)
        self.name = f"lc{RUN}-{self.number}"
        self.password = "pw"
        self.friends: list[int] = []
        self.group_id: int | None = None
        self.logged_in = False
        reg = self.client.request("register", {"msgid": MsgId.REG_MSG, "name": self.name,
                                               "password": self.password})
        self.user_id: int = reg["id"] if reg is not None else 0
        if reg is None or not self._login():
            self.client.close()
            raise RuntimeError(f"{self.name} could not register and log in")
        self._make_friends()
        _directory[self.number] = self.user_id
        self._join_group()

    def _login(self) -> bool:
        ack = self.client.request("login", {"msgid": MsgId.LOGIN_MSG, "id": self.user_id,
                                            "password": self.password})
        if ack is None:
            return False
        self.logged_in = True
        for stored in ack.get("offlinemsg", []):
            self.client._fire("deliver", "offline", _age_ms(stored))
        return True

    def _make_friends(self) -> None:
        known = list(_directory.values())
        for friend in random.sample(known, min(len(known), self._opt("friends", 3))):
            if self.client.request("add_friend", {"msgid": MsgId.ADD_FRIEND_MSG,
                                                  "friendid": friend}) is not None:
                self.friends.append(friend)

    def _join_group(self) -> None:
        slot = self.number // max(1, self._opt("group_size", 20))
        created = _groups.get(slot)
        if created is None:  # the first user of the slot creates the group
            created = _groups[slot] = AsyncResult()
            ack = self.client.request("create_group", {
                "msgid": MsgId.CREATE_GROUP_MSG, "groupname": f"lg{RUN}-{slot}",
                "groupdesc": "locust"})
            created.set(ack["groupid"] if ack else None)
            self.group_id = ack["groupid"] if ack else None
            return
        group_id = created.get(timeout=self._opt("reply_timeout", 10.0))
        if group_id is not None and self.client.request(
                "join_group", {"msgid": MsgId.ADD_GROUP_MSG, "groupid": group_id}) is not None:
            self.group_id = group_id

    @task(10)
    def chat_with_friend(self) -> None:
        if not self.logged_in:
            self._login()
        elif self.friends:
            self.client.request("one_chat", {"msgid": MsgId.ONE_CHAT_MSG,
                                             "to": random.choice(self.friends),
                                             "msg": _text("hello friend")})

    @task(3)
    def chat_in_group(self) -> None:
        if self.logged_in and self.group_id is not None:
            self.client.request("group_chat", {"msgid": MsgId.GROUP_CHAT_MSG,
                                               "groupid": self.group_id,
                                               "msg": _text("hello group")})

    @task(1)
    def log_out_and_in(self) -> None:
        if not self.logged_in:
            return
        self.logged_in = False  # before the request: a user stopped while waiting is out
        if self.client.request("logout", {"msgid": MsgId.LOGINOUT_MSG}) is not None:
            gevent.sleep(random.uniform(0.0, self.wait_time()))
            self._login()

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            if self.logged_in and not client.closed:
                client.request("logout", {"msgid": MsgId.LOGINOUT_MSG})
            client.close()
