"""Echo server on the reactor library.

``python examples/echo_server.py PORT THREADS [--no-turns]``
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reactor import Buffer, EventLoop, TcpConnection, TcpServer  # noqa: E402


def on_message(conn: TcpConnection, buf: Buffer, receive_time: float) -> None:
    conn.send(buf.retrieve_all())


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9981
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    take_turns = "--no-turns" not in sys.argv[3:]
    loop = EventLoop()
    server = TcpServer(loop, ("127.0.0.1", port), "echo")
    server.set_thread_num(threads)
    server.set_take_turns(take_turns)
    server.set_message_callback(on_message)
    server.start()
    print(f"echo server on {server.address[0]}:{server.address[1]}", flush=True)
    try:
        loop.loop()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()  # joins the sub-reactor threads so the process can exit


if __name__ == "__main__":
    main()
