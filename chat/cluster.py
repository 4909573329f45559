"""``python -m chat.cluster``: a whole cluster on this machine, for trying it out.

Starts ``--servers`` chat servers on consecutive ports (``--first-port``,
``--port-step``, and their web ports from ``--first-ws-port``), all on one
MySQL (``--db``) and one Redis (``--redis``), and nginx with a config
rendered from ``conf/nginx.conf`` for exactly those ports (TCP chat on
``--listen``, the web client on ``--web-listen``), then prints where to
connect and the URL to open.  With ``--tls-cert``/``--tls-key`` nginx runs
``conf/nginx-tls.conf`` instead and clients connect with TLS.  Ctrl+C (or
SIGTERM) stops everything it started, chat servers first so they log their
users out.

The rendering (``render_nginx_conf``) is also what the cluster tests use.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = ROOT / "conf" / "nginx.conf"
NGINX_TLS_TEMPLATE = ROOT / "conf" / "nginx-tls.conf"
STOP_GRACE = 10.0

_LOAD_STREAM = re.compile(r"^[ \t]*load_module\s+\S*ngx_stream_module\.so\s*;.*$", re.M)
_MAIN_ONLY = re.compile(r"^(pid|error_log|daemon)\s+[^;]*;.*$", re.M)  # given with -g
_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+[\w.\-\[\]:]+:\d+([^;]*);.*\n", re.M)
_LISTEN = re.compile(r"^(\s*listen\s+)[^\s;]+", re.M)
_PROXY_PROTOCOL = re.compile(r"^\s*proxy_protocol\s+on;.*\n", re.M)
_SSL_FILE = re.compile(r"^(\s*ssl_certificate(?:_key)?)\s+[^;]*;", re.M)
_HTTP_BLOCK = re.compile(r"^http\s*\{", re.M)  # the web client's part, after stream {}


@dataclass(frozen=True)
class NginxBuild:
    binary: str
    stream: str  # "static", "dynamic" or "" (not available)
    modules_path: str


def find_nginx(binary: str | None = None) -> NginxBuild:
    """The nginx binary and how it has the stream module, from ``nginx -V``."""
    found = binary or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if not found:
        raise RuntimeError("nginx not found; install nginx and libnginx-mod-stream")
    out = subprocess.run([found, "-V"], capture_output=True, text=True, timeout=10)
    flags = (out.stderr + out.stdout).split()
    modules = next((f.split("=", 1)[1] for f in flags if f.startswith("--modules-path=")), "")
    prefix = next((f.split("=", 1)[1] for f in flags if f.startswith("--prefix=")), "")
    stream = ("dynamic" if "--with-stream=dynamic" in flags
              else "static" if "--with-stream" in flags else "")
    return NginxBuild(found, stream, modules or os.path.join(prefix, "modules"))


def render_nginx_conf(template: str, backends: Sequence[tuple[str, int]], listen: str,
                      build: NginxBuild, tls: tuple[str, str] | None = None,
                      proxy_protocol: bool = True,
                      web_backends: Sequence[tuple[str, int]] = (),
                      web_listen: str | None = None) -> str:
    """``template`` (conf/nginx.conf) for these chat servers, listening on ``listen``.

    The result is meant for ``nginx -p DIR -c FILE -g 'daemon off; pid ...;
    error_log ...;'``: pid and error_log lines are dropped and the stream
    module is loaded from its absolute path (or not at all when built in).
    ``tls`` (certificate chain, private key) fills in the ``ssl_certificate``
    and ``ssl_certificate_key`` lines of a TLS template (conf/nginx-tls.conf).
    Without ``proxy_protocol`` the template's ``proxy_protocol on;`` is left
    out, for chat servers not started with ``--proxy-protocol``.
    The template's ``http {}`` block (the web client) is kept, for the chat
    servers' web ports ``web_backends`` on ``web_listen``, only when both
    are given.
    """
    if build.stream == "dynamic":
        module = os.path.join(build.modules_path, "ngx_stream_module.so")
        if not os.path.exists(module):
            raise RuntimeError(f"{module} missing; install libnginx-mod-stream")
        text = _LOAD_STREAM.sub(f"load_module {module};", template)
    elif build.stream == "static":
        text = _LOAD_STREAM.sub("", template)
    else:
        raise RuntimeError("this nginx has no stream module; install libnginx-mod-stream")
    text = _MAIN_ONLY.sub("", text)
    http = _HTTP_BLOCK.search(text)
    web = ""
    if http is not None:
        text, web = text[:http.start()], text[http.start():]
    text = _render_upstream(text, backends, listen)
    if web_backends and web_listen and web:
        text += _render_upstream(web, web_backends, web_listen)
    if tls is not None:
        text = _render_tls(text, *tls)
    if not proxy_protocol:
        text = _PROXY_PROTOCOL.sub("", text)
    return text


def _render_upstream(text: str, backends: Sequence[tuple[str, int]], listen: str) -> str:
    """The first upstream of ``text`` lists ``backends``; its first ``listen`` is ``listen``."""
    first = _UPSTREAM_SERVER.search(text)
    if first is None:
        raise ValueError("no upstream server line in the nginx template")
    indent, params = first.group(1), first.group(2)
    servers = "".join(f"{indent}server {host}:{port}{params};\n" for host, port in backends)
    text = text[:first.start()] + servers + _UPSTREAM_SERVER.sub("", text[first.end():])
    return _LISTEN.sub(lambda m: m.group(1) + listen, text, count=1)


def _render_tls(text: str, cert: str, key: str) -> str:
    files = {"ssl_certificate": cert, "ssl_certificate_key": key}
    for path in files.values():
        if any(c in path for c in '"$\\\n'):  # nginx would read quotes or variables
            raise ValueError(f"unsupported character in TLS file path {path!r}")
    found = _SSL_FILE.findall(text)
    if sorted({d.strip() for d in found}) != sorted(files):
        raise ValueError("the nginx template has no ssl_certificate/ssl_certificate_key lines")
    return _SSL_FILE.sub(
        lambda m: f'{m.group(1)} "{os.path.abspath(files[m.group(1).strip()])}";', text)


def nginx_command(build: NginxBuild, workdir: Path) -> list[str]:
    """Run nginx in the foreground with everything it writes under ``workdir``."""
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    return [build.binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
            "-g", f"daemon off; pid {workdir / 'nginx.pid'}; error_log stderr warn;"]


# -- the launcher ---------------------------------------------------------------

HELP_DESCRIPTION = """\
Start a whole chat cluster on this machine, for trying it out: chat servers
on consecutive ports, all on one MySQL and one Redis, and nginx in front of
them. Ctrl+C (or SIGTERM) stops everything it started."""

HELP_EXAMPLE = """\
example (or make cluster, then make client PORT=8000):
  .venv/bin/python -m chat.cluster --servers 2   # chat servers on 6000 and 6002, nginx on 8000
  .venv/bin/python -m client 127.0.0.1 8000      # in other terminals, as many as you like"""


def _client_command(host: str, port: int) -> str:
    """How to start a client of this cluster, with the Python that runs the launcher."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) \
        else sys.executable
    make = f"make client PORT={port}" + ("" if host == "127.0.0.1" else f" HOST={host}")
    return f"{python} -m client {host} {port}   (from the repository: {make})"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m chat.cluster", description=HELP_DESCRIPTION, epilog=HELP_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--servers", type=int, default=2, metavar="N",
                   help="how many chat servers (default: 2)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address of everything (default: 127.0.0.1)")
    p.add_argument("--first-port", type=int, default=6000, metavar="PORT",
                   help="port of the first chat server (default: 6000)")
    p.add_argument("--port-step", type=int, default=2, metavar="N",
                   help="from one chat server's port to the next (default: 2, so 6000, 6002)")
    p.add_argument("--listen", type=int, default=8000, metavar="PORT",
                   help="nginx's port, where clients connect (default: 8000)")
    p.add_argument("--first-ws-port", type=int, default=6100, metavar="PORT",
                   help="web port of the first chat server (default: 6100; then "
                        "--port-step apart)")
    p.add_argument("--web-listen", type=int, default=8080, metavar="PORT",
                   help="nginx's port for the web client (default: 8080; https with TLS)")
    p.add_argument("--no-nginx", action="store_true", help="start the chat servers only")
    p.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM): nginx "
                   "listens with TLS (conf/nginx-tls.conf); needs --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    p.add_argument("--threads", type=int, default=4, metavar="N",
                   help="sub-reactor threads per chat server (default: 4)")
    p.add_argument("--db", default=env("CHAT_DB", "mysql://root:@127.0.0.1:3306/chat"),
                   metavar="URL", help="the cluster's MySQL (default: $CHAT_DB, else "
                   "mysql://root:@127.0.0.1:3306/chat)")
    p.add_argument("--redis", default=env("CHAT_REDIS", "redis://127.0.0.1:6379/0"),
                   metavar="URL", help="the cluster's Redis (default: $CHAT_REDIS, else "
                   "redis://127.0.0.1:6379/0)")
    p.add_argument("--log-level", default="INFO", metavar="LEVEL",
                   help="log level of the chat servers (default: INFO)")
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    return args


class Cluster:
    """The children of one launcher run; ``stop`` ends them all."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[tuple[str, subprocess.Popen[str]]] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="chat-cluster-"))

    def ports(self) -> list[int]:
        a = self.args
        return [a.first_port + i * a.port_step for i in range(a.servers)]

    def ws_ports(self) -> list[int]:
        a = self.args
        return [a.first_ws_port + i * a.port_step for i in range(a.servers)]

    def start(self) -> None:
        a = self.args
        for i, (port, ws_port) in enumerate(zip(self.ports(), self.ws_ports(), strict=True), 1):
            argv = [sys.executable, "-m", "chat.server", "-H", a.host, "-p", str(port),
                    "-t", str(a.threads), "--db", a.db, "--redis", a.redis,
                    "--ws-port", str(ws_port), "--log-level", a.log_level]
            if not a.no_nginx and _PROXY_PROTOCOL.search(self._template().read_text()):
                argv.append("--proxy-protocol")  # nginx says who each client is
            self._spawn(f"chat{i}", argv, ready=f"listening on {a.host}:{port}")
        if not a.no_nginx:
            build = find_nginx()
            tls = (a.tls_cert, a.tls_key) if a.tls_cert else None
            conf = render_nginx_conf(self._template().read_text(),
                                     [(a.host, p) for p in self.ports()],
                                     f"{a.host}:{a.listen}", build, tls=tls,
                                     web_backends=[(a.host, p) for p in self.ws_ports()],
                                     web_listen=f"{a.host}:{a.web_listen}")
            (self.workdir / "nginx.conf").write_text(conf)
            subprocess.run(nginx_command(build, self.workdir) + ["-t", "-q"], check=True)
            self._spawn("nginx", nginx_command(build, self.workdir), ready=None)
            self._wait_listening(a.host, a.listen, self.children[-1][1])
            self._wait_listening(a.host, a.web_listen, self.children[-1][1])

    def _template(self) -> Path:
        return NGINX_TLS_TEMPLATE if self.args.tls_cert else NGINX_TEMPLATE

    @staticmethod
    def _wait_listening(host: str, port: int, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx is not listening on {host}:{port}") from None
                time.sleep(0.05)

    def _spawn(self, name: str, argv: list[str], ready: str | None) -> None:
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True, cwd=ROOT)
        self.children.append((name, proc))
        seen = threading.Event()

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                print(f"[{name}] {line}", end="", file=sys.stderr, flush=True)
                if ready and ready in line:
                    seen.set()
            seen.set()

        threading.Thread(target=pump, daemon=True).start()
        if ready and (not seen.wait(30) or proc.poll() is not None):
            raise RuntimeError(f"{name} did not start")

    def stop(self) -> None:
        for _, proc in reversed(self.children):  # nginx first: no new connections
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.children):
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                print(f"[{name}] did not stop, killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = Cluster(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        cluster.start()
        where = (f"{args.host}:{args.listen} (nginx{', TLS' if args.tls_cert else ''})"
                 if not args.no_nginx
                 else ", ".join(f"{args.host}:{p}" for p in cluster.ports()))
        if args.tls_cert and not args.no_nginx:  # python -m client has no TLS
            example = (f"openssl s_client -quiet -connect {args.host}:{args.listen}"
                       " -CAfile CA.pem  (then type JSON frames)")
        else:
            example = _client_command(args.host, args.listen if not args.no_nginx
                                      else cluster.ports()[0])
        web = (f"{'https' if args.tls_cert else 'http'}://{args.host}:{args.web_listen}/"
               if not args.no_nginx else f"http://{args.host}:{cluster.ws_ports()[0]}/")
        print(f"cluster ready: {args.servers} chat server(s); connect to {where}, e.g.\n"
              f"    {example}\n"
              f"or open the web client: {web}\n"
              "Ctrl+C stops everything.", flush=True)
        while not stop.wait(0.5):
            dead = [name for name, proc in cluster.children if proc.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited; stopping the cluster", file=sys.stderr)
                return 1
        return 0
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        print("cluster stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
