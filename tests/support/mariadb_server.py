"""A private, throw-away MariaDB server for fault tests.

    with MariaDBServer() as db:         # initialises a datadir in a temp dir
        store = open_store(db.url + "chat")
        db.stop()                       # SIGTERM, wait: the database is gone
        db.start()                      # same datadir, same port: data kept

It never touches the shared server: its own datadir, socket, pid file and a
free port on 127.0.0.1, ``--no-defaults`` so no my.cnf is read, and
``--skip-grant-tables`` so any user name connects without a password.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .mysqldb import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    raise RuntimeError(f"none of {names} found; install mariadb-server")


class MariaDBServer:
    """start() / stop() a private mariadbd; ``url`` is mysql://root:@127.0.0.1:PORT/."""

    def __init__(self, port: int | None = None, basedir: str | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = basedir is None
        self.basedir = Path(basedir or tempfile.mkdtemp(prefix="chat-mariadb-"))
        self.datadir = self.basedir / "data"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql://root:@127.0.0.1:{self.port}/"

    def _user_args(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install(self) -> None:
        cmd = [_binary("mariadb-install-db", "mysql_install_db"), "--no-defaults",
               f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
               "--skip-test-db", *self._user_args()]
        done = subprocess.run(cmd, capture_output=True, timeout=60)
        if done.returncode != 0:  # say why: it failed once under load with no clue
            raise RuntimeError(f"{cmd[0]} exited {done.returncode}: "
                               f"{(done.stdout + done.stderr).decode(errors='replace')[-2000:]}")

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (initialising the datadir the first time); wait until it answers."""
        if not (self.datadir / "mysql").is_dir():
            self._install()
        b = self.basedir
        cmd = [_binary("mariadbd", "mysqld"), "--no-defaults", *self._user_args(),
               f"--datadir={self.datadir}", f"--port={self.port}", "--bind-address=127.0.0.1",
               f"--socket={b / 'mariadb.sock'}", f"--pid-file={b / 'mariadb.pid'}",
               f"--log-error={b / 'error.log'}", "--skip-grant-tables", "--skip-log-bin",
               "--innodb-buffer-pool-size=16M", "--skip-name-resolve"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited early: {self.error_log()[-2000:]}")
            try:
                connect(self.url, with_db=False, connect_timeout=1).close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (a clean shutdown); SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def error_log(self) -> str:
        try:
            return (self.basedir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> MariaDBServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
