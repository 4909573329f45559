"""Two chat servers on one MariaDB database and a private Redis, and nginx in front.

The module-scoped ``cluster`` is shared by the tests that only chat; tests
that kill a chat server or Redis build their own with ``make_cluster``.
Every server gets a unique ``--server-id`` so tests sharing the throw-away
database never clear each other's users.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from client.session import ChatSession
from tests.support.nginx import NginxProcess
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:6]}"


@dataclass
class Cluster:
    redis: RedisServer
    servers: list[ServerProcess]
    nginx: NginxProcess | None = None
    opened: list[ChatSession] = field(default_factory=list)

    def connect(self, server: int | None = None, timeout: float = 10.0) -> ChatSession:
        """A connection to chat server ``server``, or through nginx if None."""
        if server is None:
            assert self.nginx is not None
            s = ChatSession("127.0.0.1", self.nginx.port, timeout=timeout)
        else:
            s = self.servers[server].connect(timeout=timeout)
        self.opened.append(s)
        return s

    def user(self, server: int | None, password: str = "pw") -> ChatSession:
        """A freshly registered user logged in on ``server``; ``s.password`` kept."""
        s = self.connect(server)
        reg = s.register(unique("c"), password)
        assert reg["errno"] == 0, reg
        ack = s.login(reg["id"], password)
        assert ack["errno"] == 0, ack
        s.password = password  # type: ignore[attr-defined]
        return s

    def close(self) -> None:
        for s in self.opened:
            s.close()
        self.opened.clear()
        for server in self.servers:
            server.kill()
        if self.nginx is not None:
            self.nginx.cleanup()


def start_server(db: str, redis_url: str, threads: int = 2) -> ServerProcess:
    # nginx tells the servers who each client is (conf/nginx.conf); tests that
    # connect to a server directly send that header themselves (ServerProcess).
    return ServerProcess(db, threads=threads, extra=[
        "--redis", redis_url, "--server-id", unique("srv-"), "--proxy-protocol"]).start()


MakeCluster = Callable[..., Cluster]


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    redis = RedisServer().start()
    yield redis
    redis.cleanup()


@pytest.fixture
def make_cluster(mysql_url: str, module_redis: RedisServer) -> Iterator[MakeCluster]:
    """Builds clusters of ``n`` servers (on a private Redis if ``own_redis``)."""
    made: list[tuple[Cluster, bool]] = []

    def make(n: int = 2, own_redis: bool = False, nginx: bool = False) -> Cluster:
        redis = RedisServer().start() if own_redis else module_redis
        c = Cluster(redis, [start_server(mysql_url, redis.url) for _ in range(n)])
        made.append((c, own_redis))
        if nginx:
            c.nginx = NginxProcess([("127.0.0.1", s.port) for s in c.servers],
                                   proxy_protocol=True).start()
        return c

    yield make
    for c, own in made:
        c.close()
        if own:
            c.redis.cleanup()


@pytest.fixture(scope="module")
def cluster(mysql_url: str, module_redis: RedisServer) -> Iterator[Cluster]:
    c = Cluster(module_redis, [start_server(mysql_url, module_redis.url, threads=4)
                               for _ in range(2)])
    c.nginx = NginxProcess([("127.0.0.1", s.port) for s in c.servers],
                           proxy_protocol=True).start()
    yield c
    c.close()


@pytest.fixture
def shared(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster; the connections a test opens are closed after it."""
    yield cluster
    for s in cluster.opened:
        s.close()
    cluster.opened.clear()
