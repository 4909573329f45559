"""Soak: mixed chat load on a two-server cluster while servers and clients fail.

    python benchmarks/soak.py --seconds 120 [--users 30] [--nginx] [--json out.json]

Everything runs on 127.0.0.1 in a temporary directory and is thrown away at
the end: a private ``mariadbd`` and a private ``redis-server`` on free ports
(never the shared ones), two ``python -m chat.server`` processes with fixed
ports and ``--server-id``s (so a killed one restarts as itself), and with
``--nginx`` an nginx in front.  Each user is a thread with its own blocking
connection, logged in with acknowledged delivery (``"ack": true``): it chats
one-to-one and in groups, every request with a ``seq``; it acknowledges what
it reads as a real client does (every ``--ack-every`` messages or 100 ms)
and drops a repeat by ``mid``; now and then it logs out and in again, drops
its connection, or resets it (SO_LINGER 0) before reading, in the middle of
a read or after reading and before acknowledging, and comes back.  On a
schedule the soak SIGKILLs one chat server and restarts it (same port, same
id), kills and restarts Redis, and stops and restarts MariaDB.  Clients
whose server died reconnect and log in again (retrying errno 2 until the
dead server's heartbeat expires or the server notices a reset, errno 9
while the database is down).

At the end every user logs out and in once more, so what was stored for it
arrives, and the soak checks (``soak_checks.py``, docs/soak.md) that every
message acknowledged to its sender reached its recipient's application, in
order per sender, with repeats only across logins and always with the same
``mid``; the only ones counted apart were in flight in the memory of a
server killed with -9.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if _path not in sys.path:
        sys.path.insert(0, _path)

from driver.servers import add_session_option, machine_info, write_summary  # noqa: E402
from soak_checks import (  # noqa: E402
    LOGIN_PATIENCE,
    Ledger,
    Received,
    Sent,
    SessionSpan,
    check,
    format_report,
    log_summary,
    parse_text,
    text_of,
)

from chat.protocol import FrameDecoder, FrameError, Message, MsgId, encode  # noqa: E402
from tests.support.mariadb_server import MariaDBServer, free_port  # noqa: E402
from tests.support.mysqldb import connect as mysql_connect  # noqa: E402
from tests.support.nginx import NginxProcess  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

PASSWORD = "soak-pw"
# Generous limits: the soak's own load must never be refused for its rate.
SERVER_LIMITS = [
    "--rate", "100000", "--burst", "100000", "--account-failures", "100000",
    "--address-failures", "100000", "--login-timeout", "3600", "--idle-timeout", "3600",
]
ACK_TIMEOUT = 10.0
ACK_DELAY = 0.1  # a client acknowledges at the latest this long after reading a message
CHAT = (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG)
CLIENT_FAULTS = ("before-reading", "mid-read", "after-reading")
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class ConnectionDied(Exception):
    """The connection is gone (or its server stopped answering)."""

    reason = "server-closed"


class ReplyTimeout(ConnectionDied):
    reason = "reply-timeout"


# -- the cluster under test ---------------------------------------------------------


class Cluster:
    """Private MariaDB and Redis, two chat servers with fixed ports and ids, maybe nginx."""

    def __init__(self, threads: int, use_nginx: bool, new_session: bool = True) -> None:
        self.db = MariaDBServer()
        self.redis = RedisServer()
        self.ports = [free_port(), free_port()]
        self.ids = [f"soak-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
        self.threads = threads
        self.use_nginx = use_nginx
        self.new_session = new_session  # each chat server in a session of its own, as deployed
        self.servers: list[ServerProcess | None] = [None, None]
        self.logs: list[str] = []
        self.nginx: NginxProcess | None = None
        self.down: set[str] = set()  # "server0", "redis", "mysql" while down

    @property
    def db_url(self) -> str:
        return self.db.url + "chat"

    def start(self) -> None:
        self.db.start()
        self.redis.start()
        for i in range(2):
            self.start_server(i)
        if self.use_nginx:
            self.nginx = NginxProcess([("127.0.0.1", p) for p in self.ports]).start()

    def start_server(self, i: int) -> None:
        extra = ["--redis", self.redis.url, "--server-id", self.ids[i], *SERVER_LIMITS]
        self.servers[i] = ServerProcess(self.db_url, threads=self.threads, extra=extra,
                                        port=self.ports[i],
                                        new_session=self.new_session).start(timeout=30)

    def kill_server(self, i: int) -> None:
        server = self.servers[i]
        if server is not None:
            server.kill()
            self.logs.append(server.log_text())
        self.servers[i] = None

    def targets(self) -> list[int]:
        if self.nginx is not None:
            return [self.nginx.port]
        return list(self.ports)

    def offline_rows(self) -> int:
        con = mysql_connect(self.db_url)
        try:
            cur = con.cursor()
            cur.execute("SELECT COUNT(*) FROM offlinemessage")
            return int(cur.fetchone()[0])
        finally:
            con.close()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.cleanup()
        for i, server in enumerate(self.servers):
            if server is not None:
                try:
                    server.terminate(signal.SIGTERM, timeout=10)
                except Exception:
                    server.kill()
                self.logs.append(server.log_text())
            self.servers[i] = None
        self.redis.cleanup()
        self.db.cleanup()


# -- one user -------------------------------------------------------------------------


class User(threading.Thread):
    """One user on its own blocking connection: chat, acknowledge, fail, come back."""

    def __init__(self, soak: Soak, index: int, user_id: int) -> None:
        super().__init__(name=f"user{index}", daemon=True)
        self.soak = soak
        self.ledger = soak.ledger
        self.index = index
        self.user_id = user_id
        self.rng = random.Random(soak.seed * 1000 + index)
        self.sock: socket.socket | None = None
        self.decoder = FrameDecoder(max_frame=1 << 30)
        self.logged_in = False
        self.span: SessionSpan | None = None
        self.counter = 0
        self.replies: dict[Any, Message] = {}
        self.seq = 0
        self.error: str | None = None
        self.login_no = 0  # login acks read so far: repeats are allowed only across them
        self.seen_mids: set[int] = set()  # what the application has had: repeats dropped
        self.unacked_mid: int | None = None  # the last chat message read, not acknowledged
        self.unacked_count = 0
        self.unacked_since = 0.0
        self.hold_acks = False  # reading without acknowledging (a fault on its way)

    # -- plumbing --------------------------------------------------------------

    def connect(self) -> None:
        while True:
            for port in self.rng.sample(self.soak.cluster.targets(),
                                        len(self.soak.cluster.targets())):
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
                except OSError:
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = sock
                self.decoder = FrameDecoder(max_frame=1 << 30)
                return
            if self.soak.hard_stop.is_set():
                raise ConnectionDied("stopping")
            time.sleep(0.1)

    def close(self, reason: str, reset: bool = False) -> None:
        """Close the connection: with ``reset``, by a RST, as a crashed client's kernel does."""
        if self.sock is not None:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            self.sock.close()
            self.sock = None
        self.replies.clear()
        self.end_span(reason)

    def end_span(self, reason: str) -> None:
        if self.span is not None:
            self.span.end, self.span.reason = self.ledger.now(), reason
            self.span = None
        self.logged_in = False
        # What was read and not acknowledged comes again at the next login.
        self.unacked_mid, self.unacked_count = None, 0

    def send(self, msg: Message) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(encode(msg))
        except OSError as exc:
            raise ConnectionDied(str(exc)) from None

    def pump(self, timeout: float, until_reply: bool = False) -> None:
        """Read, record and acknowledge what arrives for up to ``timeout`` seconds.

        With ``until_reply``, return as soon as a reply has come in.
        """
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            wait = deadline - time.monotonic()
            if self.unacked_count and not self.hold_acks:
                wait = min(wait, self.unacked_since + ACK_DELAY - time.monotonic())
            self.sock.settimeout(max(0.001, wait))
            try:
                data: bytes | None = self.sock.recv(65536)  # under glibc's mmap threshold
            except TimeoutError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                raise ConnectionDied("server closed the connection")
            if data:
                self.take(data)
            self.maybe_ack()
            if time.monotonic() >= deadline or (until_reply and self.replies):
                return

    def take(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                raise RuntimeError(f"user {self.index}: bad frame {item}")
            self.on_frame(item)

    def on_frame(self, msg: Message) -> None:
        msgid = msg.get("msgid")
        if msgid in CHAT:
            self.on_chat(msg, "stored" if msg.get("stored") is True else "live")
            return
        if msgid == MsgId.RECEIPT:
            with self.ledger.lock:
                self.ledger.receipts += 1
            return
        if msgid == MsgId.LOGIN_MSG_ACK and msg.get("errno") == 0:
            # Here, not after the request returns: frames read in the same
            # chunk after the ack belong to this login.
            self.login_no += 1
            for item in msg.get("offlinemsg", []):
                self.on_chat(item, "offline")
        if "seq" in msg:
            self.replies[msg["seq"]] = msg

    def on_chat(self, msg: Message, how: str) -> None:
        """A chat message read: to the application unless its mid was seen; to acknowledge."""
        mid = msg.get("mid")
        mid = mid if type(mid) is int else None
        repeat = mid is not None and mid in self.seen_mids
        if mid is not None:
            self.seen_mids.add(mid)
            if not self.unacked_count:
                self.unacked_since = time.monotonic()
            self.unacked_mid, self.unacked_count = mid, self.unacked_count + 1
        key = parse_text(str(msg.get("msg", "")))
        with self.ledger.lock:
            if key is None or key[0] != msg.get("id"):
                self.ledger.foreign += 1
                return
            self.ledger.received[self.user_id].append(Received(
                key[0], key[1], self.ledger.now(), how, mid, self.login_no, repeat))

    def maybe_ack(self, force: bool = False) -> None:
        """Acknowledge what was read: every ``--ack-every`` messages or ACK_DELAY after one."""
        if self.hold_acks or not self.unacked_count or self.sock is None:
            return
        if not force and self.unacked_count < self.soak.args.ack_every and \
                time.monotonic() - self.unacked_since < ACK_DELAY:
            return
        self.send({"msgid": MsgId.DELIVERY_ACK, "mid": self.unacked_mid})
        self.unacked_mid, self.unacked_count = None, 0
        with self.ledger.lock:
            self.ledger.acks_sent += 1

    def request(self, msg: Message) -> Message:
        self.seq += 1
        seq = msg["seq"] = f"{self.index}-{self.seq}"
        self.send(msg)
        deadline = time.monotonic() + ACK_TIMEOUT
        while seq not in self.replies:
            if time.monotonic() > deadline:
                raise ReplyTimeout(f"no reply to {msg.get('msgid')} in {ACK_TIMEOUT}s")
            self.pump(deadline - time.monotonic(), until_reply=True)
        return self.replies.pop(seq)

    # -- business --------------------------------------------------------------

    def login_request(self) -> Message:
        return {"msgid": MsgId.LOGIN_MSG, "id": self.user_id, "password": PASSWORD,
                "ack": True}

    def login(self) -> None:
        """Connect if needed and log in, retrying errno 2 and 9; reconnect on any death."""
        started = time.monotonic()
        stuck = False
        while not self.soak.hard_stop.is_set():
            try:
                if self.sock is None:
                    self.connect()
                ack = self.request(self.login_request())
            except ConnectionDied as exc:
                self.close(exc.reason)
                time.sleep(0.05)
                continue
            errno = ack.get("errno")
            if errno == 0:
                self.logged_in = True
                self.span = SessionSpan(self.ledger.now())
                with self.ledger.lock:
                    self.ledger.sessions[self.user_id].append(self.span)
                    self.ledger.login_waits.append(time.monotonic() - started)
                return
            if errno not in (2, 9):
                raise RuntimeError(f"user {self.index}: login refused {ack}")
            with self.ledger.lock:
                self.ledger.login_retries[errno] += 1
            if not stuck and time.monotonic() - started > LOGIN_PATIENCE:
                stuck = True
                with self.ledger.lock:
                    self.ledger.stuck_logins += 1
            time.sleep(0.2)
            if errno == 2 and self.rng.random() < 0.5:
                self.close("client-close")  # maybe another server takes it sooner

    def chat_once(self) -> None:
        soak = self.soak
        group = self.rng.random() < soak.group_share and soak.groups_of[self.user_id]
        self.counter += 1
        if group:
            gid = self.rng.choice(soak.groups_of[self.user_id])
            recipients = tuple(u for u in soak.members[gid] if u != self.user_id)
            msg: Message = {"msgid": MsgId.GROUP_CHAT_MSG, "groupid": gid}
            kind = "group"
        else:
            to = self.rng.choice([u for u in soak.user_ids if u != self.user_id])
            recipients = (to,)
            msg = {"msgid": MsgId.ONE_CHAT_MSG, "to": to}
            kind = "one"
        msg["msg"] = text_of(self.user_id, self.counter)
        record = Sent(self.user_id, self.counter, kind, recipients, self.ledger.now())
        with self.ledger.lock:
            self.ledger.sent[(self.user_id, self.counter)] = record
        try:
            reply = self.request(msg)
        except ConnectionDied:
            record.outcome = "unknown"
            raise
        record.t_reply = self.ledger.now()
        record.errno = reply.get("errno")
        if reply.get("msgid") == MsgId.CHAT_MSG_ACK and reply.get("errno") == 0:
            record.outcome, record.state, record.mid = "acked", reply.get("state"), reply.get("mid")
        else:
            record.outcome = "refused"

    def logout(self) -> None:
        ack = self.request({"msgid": MsgId.LOGINOUT_MSG})
        if ack.get("errno") != 0:
            raise RuntimeError(f"user {self.index}: logout refused {ack}")
        self.end_span("logout")

    def client_fault(self) -> None:
        """Reset the connection at a bad moment (docs/soak.md), then come back."""
        kind = self.rng.choice(CLIENT_FAULTS)
        with self.ledger.lock:
            self.ledger.client_faults[kind] += 1
        if kind == "before-reading":
            self.close("client-reset", reset=True)
            self.connect()
            self.send(self.login_request())
        elif kind == "mid-read":
            if self.rng.random() < 0.5:  # at a login, while the backlog comes out
                self.close("client-reset", reset=True)
                self.connect()
                self.send(self.login_request())
            time.sleep(self.rng.uniform(0.02, 0.3))  # bytes pile up unread
            self.read_part(self.rng.randint(1, 4096))
        else:
            self.hold_acks = True
            try:
                self.pump(self.rng.uniform(0.05, 0.3))
            finally:
                self.hold_acks = False
        self.close("client-reset", reset=True)
        time.sleep(self.rng.uniform(0.0, 0.2))
        self.login()

    def read_part(self, size: int) -> None:
        """One read of at most ``size`` bytes: the whole frames in it reach the application."""
        assert self.sock is not None
        self.sock.settimeout(1.0)
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            raise ConnectionDied("server closed the connection")
        self.take(data)

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported, and fails the run
            self.error = f"{type(exc).__name__}: {exc}"
            self.soak.hard_stop.set()

    def _run(self) -> None:
        soak = self.soak
        shares = soak.args
        self.login()
        while not soak.stop_sending.is_set():
            try:
                if not self.logged_in:
                    self.login()
                r = self.rng.random()
                if r < shares.logout_share:
                    self.logout()
                    self.pump(self.rng.uniform(0.1, 1.0))
                elif r < shares.logout_share + shares.reconnect_share:
                    self.close("client-close")
                    time.sleep(self.rng.uniform(0.05, 0.5))
                elif r < shares.logout_share + shares.reconnect_share + shares.reset_share:
                    self.client_fault()
                else:
                    self.chat_once()
                    self.pump(self.rng.expovariate(soak.rate))
            except ConnectionDied as exc:
                self.close(exc.reason)
        # Quiet period: keep reading what is still on its way.
        self.idle_until(soak.drain)
        # Final drain: log out and in again, so every stored message comes out.
        while True:
            try:
                if self.logged_in:
                    self.logout()
                    self.pump(0.3)
                self.login()
                break
            except ConnectionDied as exc:
                self.close(exc.reason)
        self.idle_until(soak.hard_stop)

    def idle_until(self, event: threading.Event) -> None:
        while not event.is_set():
            try:
                if self.sock is None or not self.logged_in:
                    self.login()
                self.pump(0.2)
            except ConnectionDied as exc:
                self.close(exc.reason)
        try:
            self.maybe_ack(force=True)  # nothing read is left unacknowledged
        except ConnectionDied as exc:
            self.close(exc.reason)


# -- the run --------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seed = args.seed
        self.rate = args.rate
        self.group_share = args.group_share
        self.ledger = Ledger()
        self.cluster = Cluster(args.threads, args.nginx, not args.same_session)
        self.stop_sending = threading.Event()
        self.drain = threading.Event()
        self.hard_stop = threading.Event()
        self.user_ids: list[int] = []
        self.members: dict[int, list[int]] = {}
        self.groups_of: dict[int, list[int]] = defaultdict(list)
        self.users: list[User] = []

    # -- setup -----------------------------------------------------------------

    def setup(self) -> None:
        from client.session import ChatSession

        server = self.cluster.servers[0]
        assert server is not None
        rng = random.Random(self.seed)
        tag = uuid.uuid4().hex[:6]
        with ChatSession("127.0.0.1", server.port, timeout=30) as s:
            for i in range(self.args.users):
                reg = s.register(f"soak{tag}_{i}", PASSWORD)
                assert reg["errno"] == 0, reg
                self.user_ids.append(reg["id"])
        # Groups of a handful of members each; everybody is in at least one.
        n_groups = max(1, self.args.users // 6)
        owners = self.user_ids[:n_groups]
        for g, owner in enumerate(owners):
            with ChatSession("127.0.0.1", server.port, timeout=30) as s:
                assert s.login(owner, PASSWORD)["errno"] == 0
                gid = s.create_group(f"soak{tag}_g{g}", "soak")["groupid"]
                self.members[gid] = [owner]
                self.groups_of[owner].append(gid)
                assert s.logout()["errno"] == 0
        gids = list(self.members)
        for uid in self.user_ids:
            wanted = {gids[self.user_ids.index(uid) % len(gids)],
                      rng.choice(gids)} - set(self.groups_of[uid])
            if not wanted:
                continue
            with ChatSession("127.0.0.1", server.port, timeout=30) as s:
                assert s.login(uid, PASSWORD)["errno"] == 0
                for gid in sorted(wanted):
                    assert s.join_group(gid)["errno"] == 0
                    self.members[gid].append(uid)
                    self.groups_of[uid].append(gid)
                assert s.logout()["errno"] == 0

    # -- faults ----------------------------------------------------------------

    def schedule(self, seconds: float) -> list[tuple[float, str]]:
        """Fault times: kill a server, restart Redis, restart MySQL, spread over the run."""
        rounds = max(1, round(seconds / 40))
        kinds = []
        for r in range(rounds):
            kinds += [f"kill-server{r % 2}", "restart-redis", "restart-mysql"]
        step = seconds * 0.8 / len(kinds)
        return [(seconds * 0.1 + i * step, kind) for i, kind in enumerate(kinds)]

    def inject(self, kind: str) -> None:
        c, ledger = self.cluster, self.ledger
        if kind.startswith("kill-server"):
            i = int(kind[-1])
            ledger.fault("kill-server", server=i)
            c.kill_server(i)
            time.sleep(self.args.down)
            c.start_server(i)
            ledger.fault("server-restarted", server=i)
        elif kind == "restart-redis":
            ledger.fault("kill-redis")
            c.redis.kill()
            time.sleep(self.args.down)
            c.redis.start()
            ledger.fault("redis-restarted")
        elif kind == "restart-mysql":
            ledger.fault("stop-mysql")
            c.db.stop()
            ledger.fault("mysql-stopped")
            time.sleep(self.args.down)
            c.db.start()
            ledger.fault("mysql-restarted")

    # -- the whole run -----------------------------------------------------------

    def run(self) -> dict[str, Any]:
        info = machine_info()
        self.cluster.start()
        try:
            self.setup()
            self.ledger.t0 = time.monotonic()
            self.users = [User(self, i, uid) for i, uid in enumerate(self.user_ids)]
            for u in self.users:
                u.start()
            plan = self.schedule(self.args.seconds)
            for at, kind in plan:
                self._sleep_until(at)
                if self.hard_stop.is_set():
                    break
                self.inject(kind)
            self._sleep_until(self.args.seconds)
            self.stop_sending.set()
            self.ledger.fault("stop-sending")
            time.sleep(self.args.quiet)
            self.drain.set()
            self.ledger.fault("final-logins")
            self._wait_final_logins(timeout=90)
            time.sleep(self.args.quiet)
            self.hard_stop.set()
            for u in self.users:
                u.join(15)
            for u in self.users:
                u.close("end")
            time.sleep(0.5)
            leftover = self.cluster.offline_rows()
        finally:
            self.hard_stop.set()
            self.cluster.stop()
        report = check(self.ledger)
        report["offline_rows_left"] = leftover
        report["machine"] = info
        report["config"] = {k: getattr(self.args, k) for k in (
            "seconds", "users", "rate", "threads", "nginx", "down", "seed", "same_session",
            "reset_share", "ack_every")}
        report["faults"] = self.ledger.faults
        report["user_errors"] = [u.error for u in self.users if u.error]
        report["server_log_warnings"] = log_summary(self.cluster.logs)
        return report

    def _sleep_until(self, at: float) -> None:
        while self.ledger.now() < at and not self.hard_stop.is_set():
            time.sleep(min(0.1, at - self.ledger.now()))

    def _wait_final_logins(self, timeout: float) -> None:
        """Until every user has logged in again after the drain started."""
        start = self.ledger.now()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.hard_stop.is_set():
            with self.ledger.lock:
                done = sum(1 for u in self.user_ids
                           if self.ledger.sessions[u] and self.ledger.sessions[u][-1].start
                           >= start and self.ledger.sessions[u][-1].end is None)
            if done == len(self.user_ids):
                return
            time.sleep(0.1)

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="load phase length")
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--rate", type=float, default=8.0, help="chat messages/s per user")
    p.add_argument("--group-share", type=float, default=0.25)
    p.add_argument("--logout-share", type=float, default=0.01)
    p.add_argument("--reconnect-share", type=float, default=0.005)
    p.add_argument("--reset-share", type=float, default=0.01,
                   help="share of a user's turns that reset its connection at a bad moment")
    p.add_argument("--ack-every", type=int, default=16,
                   help="a client acknowledges every N messages (or 100 ms after one)")
    p.add_argument("--threads", type=int, default=2, help="sub-reactors per chat server")
    p.add_argument("--down", type=float, default=1.5, help="seconds each fault lasts")
    p.add_argument("--quiet", type=float, default=3.0, help="seconds to settle at the end")
    p.add_argument("--nginx", action="store_true", help="clients connect through nginx")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the report here")
    add_session_option(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Soak(args).run()
    print(format_report(report))
    write_summary(args.json, report)
    return 0 if report["ok"] and not report["user_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
