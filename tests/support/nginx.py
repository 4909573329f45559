"""nginx in the foreground from a config rendered from ``conf/nginx.conf``
(or ``conf/nginx-tls.conf``), for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from chat.cluster import (
    NGINX_TEMPLATE,
    NGINX_TLS_TEMPLATE,
    find_nginx,
    nginx_command,
    render_nginx_conf,
)

from .mariadb_server import free_port


class NginxProcess:
    """nginx on a free 127.0.0.1 port balancing over ``backends`` (host, port).

    With ``tls`` (certificate chain, key) it runs conf/nginx-tls.conf instead:
    clients then connect to ``port`` with TLS.  With ``proxy_protocol`` nginx
    sends each backend a PROXY header (the backends run ``--proxy-protocol``);
    without, that line of the template is left out.  With ``web_backends``
    (the chat servers' web ports) its http block serves the web client on
    ``web_port``.
    """

    def __init__(self, backends: Sequence[tuple[str, int]],
                 tls: tuple[str, str] | None = None, proxy_protocol: bool = False,
                 web_backends: Sequence[tuple[str, int]] = ()) -> None:
        self.port = free_port()
        self.web_port = free_port() if web_backends else 0
        self.dir = Path(tempfile.mkdtemp(prefix="chat-nginx-"))
        build = find_nginx()
        template = NGINX_TLS_TEMPLATE if tls else NGINX_TEMPLATE
        conf = render_nginx_conf(template.read_text(), backends,
                                 f"127.0.0.1:{self.port}", build, tls=tls,
                                 proxy_protocol=proxy_protocol,
                                 web_backends=web_backends,
                                 web_listen=f"127.0.0.1:{self.web_port}")
        (self.dir / "nginx.conf").write_text(conf)
        self.argv = nginx_command(build, self.dir)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> NginxProcess:
        with open(self.dir / "stderr.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx did not start: " + self.log()) from None
                time.sleep(0.02)

    def log(self) -> str:
        try:
            return (self.dir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
