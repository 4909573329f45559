"""Throw-away certificates (with the ``openssl`` tool) and a TLS ``ChatSession``, for tests."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from client.session import ChatSession

SERVER_NAME = "localhost"


@dataclass(frozen=True)
class Pki:
    """A private CA and one server certificate it signed (for localhost and 127.0.0.1)."""

    ca: Path  # the CA certificate: what a client trusts
    cert: Path  # the server certificate (the chain nginx sends)
    key: Path  # its private key


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command-line tool is needed for the TLS tests")
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True, timeout=30)


def make_pki(directory: Path, ca_name: str = "chat test CA") -> Pki:
    """A new CA and a server certificate under ``directory``, valid for one day."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1",
             "-subj", f"/CN={ca_name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={SERVER_NAME}")
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "1", "-extfile", ext, "-out", cert)
    return Pki(ca, cert, key)


def client_context(cafile: Path | None) -> ssl.SSLContext:
    """A client context that trusts ``cafile`` only (nothing at all if None)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    return ctx


class TlsChatSession(ChatSession):
    """A ``ChatSession`` whose socket is wrapped in TLS before any frame is sent.

    The handshake (and the certificate check) happens in the constructor; a
    failure raises ``ssl.SSLError`` there.  ``session`` resumes an earlier TLS
    session.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 server_hostname: str = SERVER_NAME, timeout: float = 10.0,
                 session: ssl.SSLSession | None = None) -> None:
        super().__init__(host, port, timeout=timeout)
        plain: socket.socket = self.sock
        try:
            self.sock = context.wrap_socket(plain, server_hostname=server_hostname,
                                            session=session)
        except BaseException:
            plain.close()
            raise

    @property
    def tls(self) -> ssl.SSLSocket:
        assert isinstance(self.sock, ssl.SSLSocket)
        return self.sock

    def __enter__(self) -> TlsChatSession:
        return self
