"""Soak: mixed chat load on a two-server cluster while faults are injected.

    python benchmarks/soak.py --seconds 120 [--users 30] [--nginx] [--json out.json]

Everything runs on 127.0.0.1 in a temporary directory and is thrown away at
the end: a private ``mariadbd`` and a private ``redis-server`` on free ports
(never the shared ones), two ``python -m chat.server`` processes with fixed
ports and ``--server-id``s (so a killed one restarts as itself), and with
``--nginx`` an nginx in front.  Each user is a thread with its own blocking
connection: it chats one-to-one and in groups, every request with a ``seq``,
now and then logs out and in again or drops its connection and reconnects.
On a schedule the soak SIGKILLs one chat server and restarts it (same port,
same id), kills and restarts Redis, and stops and restarts MariaDB.  Clients
whose server died reconnect and log in again (retrying errno 2 until the dead
server's heartbeat expires, errno 9 while the database is down).

At the end every user logs out and in once more, so what was stored for it
arrives in its login ack, and the soak checks (see docs/soak.md):

- every message acknowledged with errno 0 reached each recipient, live or
  offline, exactly once; the missing ones are "in flight at a kill" when
  the recipient's connection died with its server around that moment, and
  "lost" otherwise;
- per sender and recipient the messages arrived in the order sent;
- refused messages (errno != 0) do not count; messages whose sender's
  connection died before the ack are "unknown" and reported on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # run as a script: the driver package and the repository
    if _path not in sys.path:
        sys.path.insert(0, _path)

from driver.servers import add_session_option, machine_info  # noqa: E402

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
IN_FLIGHT_KILL_WINDOW = 3.0  # a connection closed this long after a kill died with it
CLOSE_NOTICED = 0.5  # longest a server may still send to a connection its client closed
LOGIN_PATIENCE = 60.0  # a login still refused after this long is reported as stuck
ACK_TIMEOUT = 10.0
REDIS_SETTLE = 5.0  # after a Redis restart: reconnect backoff, heartbeat, margin


class ConnectionDied(Exception):
    """The connection is gone (or its server stopped answering)."""

    reason = "server-closed"


class ReplyTimeout(ConnectionDied):
    reason = "reply-timeout"


# -- the record of everything sent and received -------------------------------------


@dataclass
class Sent:
    sender: int
    counter: int
    kind: str  # "one" or "group"
    recipients: tuple[int, ...]
    t_send: float
    t_reply: float | None = None
    outcome: str = "pending"  # acked, refused, unknown
    state: str | None = None  # the ack's "state"
    errno: int | None = None


@dataclass
class SessionSpan:
    start: float
    end: float | None = None
    reason: str = ""  # logout, client-close, server-closed


@dataclass
class Ledger:
    t0: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[tuple[int, int], Sent] = field(default_factory=dict)
    # recipient -> [(sender, counter, t, how)] in the order the recipient read them
    received: dict[int, list[tuple[int, int, float, str]]] = field(
        default_factory=lambda: defaultdict(list))
    sessions: dict[int, list[SessionSpan]] = field(default_factory=lambda: defaultdict(list))
    faults: list[dict[str, Any]] = field(default_factory=list)
    foreign: int = 0  # chat frames whose text is not one of ours
    login_waits: list[float] = field(default_factory=list)
    login_retries: Counter[int] = field(default_factory=Counter)  # errno -> retries
    stuck_logins: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, kind: str, **info: Any) -> None:
        with self.lock:
            self.faults.append({"t": round(self.now(), 2), "kind": kind, **info})


def text_of(sender: int, counter: int) -> str:
    return f"soak {sender} {counter} {uuid.uuid4().hex[:8]}"


def parse_text(text: str) -> tuple[int, int] | None:
    parts = text.split()
    if len(parts) != 4 or parts[0] != "soak":
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


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
    """One user on its own blocking connection: chat, log out and in, survive faults."""

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

    def close(self, reason: str) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.end_span(reason)

    def end_span(self, reason: str) -> None:
        if self.span is not None:
            self.span.end, self.span.reason = self.ledger.now(), reason
            self.span = None
        self.logged_in = False

    def send(self, msg: Message) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(encode(msg))
        except OSError as exc:
            raise ConnectionDied(str(exc)) from None

    def pump(self, timeout: float, until_reply: bool = False) -> None:
        """Read and record what arrives for up to ``timeout`` seconds (at least one read).

        With ``until_reply``, return as soon as a reply has come in.
        """
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)  # under glibc's mmap threshold
            except TimeoutError:
                return
            except OSError:
                data = b""
            if not data:
                raise ConnectionDied("server closed the connection")
            for item in self.decoder.feed(data):
                if isinstance(item, FrameError):
                    raise RuntimeError(f"user {self.index}: bad frame {item}")
                self.on_frame(item)
            if time.monotonic() >= deadline or (until_reply and self.replies):
                return

    def on_frame(self, msg: Message) -> None:
        msgid = msg.get("msgid")
        if msgid in (MsgId.ONE_CHAT_MSG, MsgId.GROUP_CHAT_MSG):
            self.record(msg, "live")
            return
        if msgid == MsgId.LOGIN_MSG_ACK and msg.get("errno") == 0:
            # Here, not after the request returns: frames read in the same chunk
            # after the ack came after its offline messages.
            for item in msg.get("offlinemsg", []):
                self.record(item, "offline")
        if "seq" in msg:
            self.replies[msg["seq"]] = msg

    def record(self, msg: Message, how: str) -> None:
        key = parse_text(str(msg.get("msg", "")))
        with self.ledger.lock:
            if key is None or key[0] != msg.get("id"):
                self.ledger.foreign += 1
                return
            self.ledger.received[self.user_id].append((key[0], key[1], self.ledger.now(), how))

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

    def login(self) -> None:
        """Connect if needed and log in, retrying errno 2 and 9; reconnect on any death."""
        started = time.monotonic()
        stuck = False
        while not self.soak.hard_stop.is_set():
            try:
                if self.sock is None:
                    self.connect()
                ack = self.request({"msgid": MsgId.LOGIN_MSG, "id": self.user_id,
                                    "password": PASSWORD})
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
            record.outcome, record.state = "acked", reply.get("state")
        else:
            record.outcome = "refused"

    def logout(self) -> None:
        ack = self.request({"msgid": MsgId.LOGINOUT_MSG})
        if ack.get("errno") != 0:
            raise RuntimeError(f"user {self.index}: logout refused {ack}")
        self.end_span("logout")

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported, and fails the run
            self.error = f"{type(exc).__name__}: {exc}"
            self.soak.hard_stop.set()

    def _run(self) -> None:
        soak = self.soak
        self.login()
        while not soak.stop_sending.is_set():
            try:
                if not self.logged_in:
                    self.login()
                r = self.rng.random()
                if r < soak.logout_share:
                    self.logout()
                    self.pump(self.rng.uniform(0.1, 1.0))
                elif r < soak.logout_share + soak.reconnect_share:
                    self.close("client-close")
                    time.sleep(self.rng.uniform(0.05, 0.5))
                else:
                    self.chat_once()
                    self.pump(self.rng.expovariate(soak.rate))
            except ConnectionDied as exc:
                self.close(exc.reason)
        # Quiet period: keep reading what is still on its way.
        self.idle_until(soak.drain)
        # Final drain: log out and in again, so every stored message comes in the ack.
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


# -- the run --------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seed = args.seed
        self.rate = args.rate
        self.group_share = args.group_share
        self.logout_share = args.logout_share
        self.reconnect_share = args.reconnect_share
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
        report = self.check()
        report["offline_rows_left"] = leftover
        report["machine"] = info
        report["config"] = {k: getattr(self.args, k) for k in (
            "seconds", "users", "rate", "threads", "nginx", "down", "seed", "same_session")}
        report["faults"] = self.ledger.faults
        report["user_errors"] = [u.error for u in self.users if u.error]
        report["server_log_warnings"] = _log_summary(self.cluster.logs)
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

    # -- the verdict -------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        ledger = self.ledger
        kills = [f["t"] for f in ledger.faults if f["kind"] == "kill-server"]
        got: dict[tuple[int, int, int], int] = Counter()  # (recipient, sender, counter)
        for recipient, items in ledger.received.items():
            for sender, counter, _, _ in items:
                got[(recipient, sender, counter)] += 1
        outcomes = Counter(s.outcome for s in ledger.sent.values())
        states = Counter(s.state for s in ledger.sent.values() if s.outcome == "acked")
        expected = delivered = 0
        lost: list[dict[str, Any]] = []
        in_flight: list[dict[str, Any]] = []
        client_gone: list[dict[str, Any]] = []
        duplicates: list[dict[str, Any]] = []
        unknown = Counter()
        for key, s in ledger.sent.items():
            for r in s.recipients:
                n = got.get((r, *key), 0)
                if s.outcome == "unknown":
                    unknown["delivered" if n else "not_delivered"] += 1
                if s.outcome != "acked":
                    continue
                expected += 1
                entry = {"sender": s.sender, "counter": s.counter, "recipient": r,
                         "kind": s.kind, "state": s.state, "t_send": round(s.t_send, 3),
                         "t_ack": round(s.t_reply or 0, 3)}
                if n == 0:
                    dead = self._dead_span(r, s, kills)
                    if dead is not None:
                        entry["recipient_connection_closed"] = round(dead[1].end or 0, 3)
                        (in_flight if dead[0] == "kill" else client_gone).append(entry)
                    else:
                        entry["recipient_sessions"] = [
                            (round(x.start, 2), x.end and round(x.end, 2), x.reason)
                            for x in ledger.sessions[r]]
                        lost.append(entry)
                else:
                    delivered += 1
                    if n > 1:
                        duplicates.append({**entry, "times": n})
        order_all = self._order_violations()
        outages = self._redis_outages()
        order_outage = [o for o in order_all
                        if any(a <= o["late_sent"][0] <= b for a, b in outages)]
        order = [o for o in order_all if o not in order_outage]
        waits = sorted(ledger.login_waits)
        return {
            "ok": not lost and not duplicates and not order,
            "sent": len(ledger.sent),
            "outcomes": dict(outcomes),
            "ack_states": {str(k): v for k, v in states.items()},
            "expected_deliveries": expected,
            "delivered": delivered,
            "lost": len(lost),
            "in_flight_at_kill": len(in_flight),
            "in_flight_at_client_close": len(client_gone),
            "duplicated": len(duplicates),
            "order_violations": len(order),
            "order_violations_redis_outage": len(order_outage),
            "unknown_deliveries": dict(unknown),
            "refused_by_errno": dict(Counter(
                str(s.errno) for s in ledger.sent.values() if s.outcome == "refused")),
            "received_live": sum(1 for items in ledger.received.values()
                                 for *_, how in items if how == "live"),
            "received_offline": sum(1 for items in ledger.received.values()
                                    for *_, how in items if how == "offline"),
            "foreign_frames": ledger.foreign,
            "logins": len(waits),
            "login_retries_by_errno": {str(k): v for k, v in ledger.login_retries.items()},
            "login_wait_max_s": round(waits[-1], 2) if waits else 0.0,
            "stuck_logins": ledger.stuck_logins,
            "examples": {"lost": lost[:10], "in_flight_at_kill": in_flight[:10],
                         "in_flight_at_client_close": client_gone[:10],
                         "duplicated": duplicates[:10], "order": order[:10],
                         "order_redis_outage": order_outage[:10]},
        }

    def _dead_span(self, recipient: int, s: Sent,
                   kills: list[float]) -> tuple[str, SessionSpan] | None:
        """The recipient's connection that the message was in flight to when it died.

        The server wrote the message to the recipient's connection (or to
        Redis for it) between the request and its ack; that connection was
        then closed, by a server kill ("kill") or by the client itself, which
        dropped its connection without reading what was on its way
        ("client").
        """
        t_ack = s.t_reply if s.t_reply is not None else s.t_send
        # Sent while Redis was down, it may have been stored and written only
        # when the recipient's server flushed, as late as the outage's end.
        outage_end = next((b for a, b in self._redis_outages() if a <= s.t_send <= b), None)
        for span in self.ledger.sessions[recipient]:
            if span.end is None:
                continue
            written = t_ack if outage_end is None else max(t_ack, min(span.end, outage_end))
            # The server sees a client's close a moment after the client made
            # it; what it sends to the connection meanwhile is lost all the same.
            late = CLOSE_NOTICED if span.reason == "client-close" else 0.0
            if not (span.start <= written and s.t_send <= span.end + late):
                continue
            if span.end - written > IN_FLIGHT_KILL_WINDOW:
                continue
            if span.reason == "server-closed" and any(
                    0 <= span.end - k <= IN_FLIGHT_KILL_WINDOW for k in kills):
                return "kill", span
            if span.reason in ("client-close", "reply-timeout") and span.end - written <= 1.0:
                return "client", span
        return None

    def _redis_outages(self) -> list[tuple[float, float]]:
        """Windows whose stored messages may be flushed after newer live ones.

        From the kill until the restarted Redis is surely seen by every server
        (subscriber backoff at most 2 s, heartbeat 1.5 s) plus a margin.
        """
        out, start = [], None
        for f in self.ledger.faults:
            if f["kind"] == "kill-redis":
                start = f["t"]
            elif f["kind"] == "redis-restarted" and start is not None:
                out.append((start, f["t"] + REDIS_SETTLE))
                start = None
        return out

    def _sessions_near(self, user: int, t: float) -> list[tuple[Any, ...]]:
        return [(round(x.start, 2), x.end and round(x.end, 2), x.reason)
                for x in self.ledger.sessions[user]
                if x.start - 5 <= t <= (x.end or 1e9) + 5]

    def _order_violations(self) -> list[dict[str, Any]]:
        acked = {k for k, s in self.ledger.sent.items() if s.outcome == "acked"}
        out = []
        for recipient, items in self.ledger.received.items():
            last: dict[int, int] = {}
            seen: set[tuple[int, int]] = set()
            for sender, counter, t, how in items:
                if (sender, counter) not in acked or (sender, counter) in seen:
                    continue
                seen.add((sender, counter))
                if counter < last.get(sender, 0):
                    late, early = self.ledger.sent[(sender, counter)], self.ledger.sent[
                        (sender, last[sender])]
                    out.append({
                        "sender": sender, "recipient": recipient, "counter": counter,
                        "after": last[sender], "t": round(t, 3), "how": how,
                        "late_sent": (round(late.t_send, 3), late.kind, late.state),
                        "early_sent": (round(early.t_send, 3), early.kind, early.state),
                        "recipient_sessions": self._sessions_near(recipient, late.t_send),
                        "sender_sessions": self._sessions_near(sender, late.t_send)})
                last[sender] = max(last.get(sender, 0), counter)
        return out


def _log_summary(logs: list[str]) -> dict[str, int]:
    """How often the servers logged the lines that matter for delivery."""
    patterns = {
        "message_lost_storage_unavailable": "lost, storage unavailable",
        "offline_not_deleted_yet": "not deleted yet",
        "still_marked_online": "still marked online",
        "subscription_not_confirmed": "not confirmed in time",
        "bug": "bug while",
        "traceback": "Traceback",
    }
    text = "".join(logs)
    return {name: text.count(p) for name, p in patterns.items()}


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"soak: {r['config']['seconds']} s, {r['config']['users']} users, "
        f"{'nginx' if r['config']['nginx'] else 'direct'}; faults: "
        + ", ".join(f"{f['kind']}@{f['t']}" for f in r["faults"]),
        f"messages sent {r['sent']}: {r['outcomes']}; ack states {r['ack_states']}; "
        f"refused by errno {r['refused_by_errno']}",
        f"acknowledged deliveries expected {r['expected_deliveries']}: delivered "
        f"{r['delivered']} (live {r['received_live']}, offline {r['received_offline']} "
        f"frames received in all)",
        f"  lost {r['lost']}, in flight at a kill {r['in_flight_at_kill']}, in flight when the "
        f"client dropped its connection {r['in_flight_at_client_close']}, duplicated "
        f"{r['duplicated']}, order violations {r['order_violations']} (+ "
        f"{r['order_violations_redis_outage']} of messages stored during a Redis outage, "
        "a known limit)",
        f"  sent without an ack (sender's connection died): per recipient "
        f"{r['unknown_deliveries']}",
        f"logins {r['logins']}, retries by errno {r['login_retries_by_errno']}, longest "
        f"login wait {r['login_wait_max_s']} s, stuck (> {LOGIN_PATIENCE:g} s) "
        f"{r['stuck_logins']}",
        f"offline rows left in the database: {r['offline_rows_left']}; server log: "
        f"{r['server_log_warnings']}",
    ]
    for name, items in r["examples"].items():
        for item in items[:3]:
            lines.append(f"  e.g. {name}: {item}")
    if r["user_errors"]:
        lines.append(f"client errors: {r['user_errors'][:3]}")
    lines.append("verdict: " + ("OK" if r["ok"] and not r["user_errors"] else "FAILED"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="load phase length")
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--rate", type=float, default=8.0, help="chat messages/s per user")
    p.add_argument("--group-share", type=float, default=0.25)
    p.add_argument("--logout-share", type=float, default=0.01)
    p.add_argument("--reconnect-share", type=float, default=0.005)
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["ok"] and not report["user_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
