"""A small multi-reactor networking library in the spirit of muduo's ``net/``.

One :class:`EventLoop` per thread; a :class:`TcpServer` accepts in its loop
and serves connections round robin in an :class:`EventLoopThreadPool`. The
library knows nothing about any application protocol.
"""

from reactor.buffer import Buffer
from reactor.eventloop import (
    Callback,
    EventHandler,
    EventLoop,
    EventLoopThread,
    EventLoopThreadPool,
    RoundObserver,
    TimerId,
    gil_enabled,
)
from reactor.placement import Placement
from reactor.tcpconnection import (
    CloseCallback,
    ConnectionCallback,
    HighWaterMarkCallback,
    MessageCallback,
    TcpConnection,
    WriteCompleteCallback,
)
from reactor.tcpserver import Acceptor, TcpServer, raise_nofile_limit
from reactor.turn import Turn, blocking

__all__ = [
    "Acceptor",
    "Buffer",
    "Callback",
    "CloseCallback",
    "ConnectionCallback",
    "EventHandler",
    "EventLoop",
    "EventLoopThread",
    "EventLoopThreadPool",
    "HighWaterMarkCallback",
    "MessageCallback",
    "Placement",
    "RoundObserver",
    "TcpConnection",
    "TcpServer",
    "TimerId",
    "Turn",
    "WriteCompleteCallback",
    "blocking",
    "gil_enabled",
    "raise_nofile_limit",
]
