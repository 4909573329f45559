"""The PROXY protocol header (versions 1 and 2), sans-IO.

A proxy in front of the server (nginx with ``proxy_protocol on;``) opens each
upstream connection with one header saying whom it proxies: the client's
address and port, and the address it reached.  Behind nginx every peer
address is nginx's own, so without this header the server cannot tell its
clients apart (the per-address login throttle would count them all as one).

Version 1 is one text line, at most 107 bytes with its CRLF::

    PROXY TCP4 203.0.113.7 192.0.2.1 56324 8000\\r\\n
    PROXY UNKNOWN\\r\\n                       (the proxy's own check: no client)

Version 2 is binary: a 12-byte signature, a version/command byte, a family
byte, a 16-bit length and that many bytes of addresses and optional TLVs
(which are skipped).  Its LOCAL command, like v1's UNKNOWN, names no client.

`ProxyHeaderReader` is fed the first bytes of a connection as they arrive
and returns None until the header is complete, then the header and the bytes
after it (the first chat frames, when they came in the same read).  Anything
that is not a valid header raises `ProxyProtocolError` as soon as it is
certain: the connection is then closed, since its peer is not the proxy.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["ProxyHeader", "ProxyHeaderReader", "ProxyProtocolError"]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the specification's limit)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family, length
V2_MAX_BODY = 4096  # addresses plus TLVs; nginx sends 12 or 36 bytes

_V2_FAMILIES = {0x11: (4, 4), 0x21: (16, 6)}  # TCP over IPv4 / IPv6: (address bytes, ip version)


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """``source``/``destination`` are (host, port), or None when the proxy names no client."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


class ProxyHeaderReader:
    """Collects the header of one connection.  Not thread-safe: one per connection."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """None while the header is incomplete, else (header, bytes after it)."""
        buf = self._buf = self._buf + data
        if buf[:1] == b"P":
            return self._v1(buf)
        if buf[:1] == b"\r":
            return self._v2(buf)
        if buf:
            raise ProxyProtocolError("no PROXY header")
        return None

    def _v1(self, buf: bytes) -> tuple[ProxyHeader, bytes] | None:
        if not buf.startswith(V1_PREFIX[:len(buf)]):
            raise ProxyProtocolError("no PROXY header")
        end = buf.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyProtocolError("PROXY v1 line longer than 107 bytes")
            return None
        return _parse_v1(buf[:end]), buf[end + 2:]

    def _v2(self, buf: bytes) -> tuple[ProxyHeader, bytes] | None:
        if not buf.startswith(V2_SIGNATURE[:len(buf)]):
            raise ProxyProtocolError("no PROXY header")
        if len(buf) < V2_FIXED:
            return None
        ver_cmd, family, length = struct.unpack_from("!BBH", buf, len(V2_SIGNATURE))
        if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
            raise ProxyProtocolError(f"PROXY v2: bad version/command byte {ver_cmd:#04x}")
        if length > V2_MAX_BODY:
            raise ProxyProtocolError(f"PROXY v2: {length} bytes of addresses is too long")
        if len(buf) < V2_FIXED + length:
            return None
        body, rest = buf[V2_FIXED:V2_FIXED + length], buf[V2_FIXED + length:]
        if ver_cmd & 0x0F == 0:  # LOCAL: the proxy speaking for itself
            return ProxyHeader(2, None, None), rest
        return _parse_v2_addresses(family, body), rest


def _parse_v1(line: bytes) -> ProxyHeader:
    try:
        fields = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(1, None, None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("PROXY v1 line is not 'PROXY TCP4|TCP6 src dst sport dport'")
    version = 4 if fields[1] == "TCP4" else 6
    source = _address(fields[2], fields[4], version)
    destination = _address(fields[3], fields[5], version)
    return ProxyHeader(1, source, destination)


def _address(host: str, port: str, version: int) -> tuple[str, int]:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1: {host!r} is not an IP address") from None
    # The specification allows no leading zeros, signs or spaces in ports.
    if ip.version != version or not port.isdigit() or (port != "0" and port[0] == "0"):
        raise ProxyProtocolError(f"PROXY v1: bad address {host!r} or port {port!r}")
    if int(port) > 65535:
        raise ProxyProtocolError(f"PROXY v1: port {port} out of range")
    return str(ip), int(port)


def _parse_v2_addresses(family: int, body: bytes) -> ProxyHeader:
    if family not in _V2_FAMILIES:  # UNSPEC, UDP, unix sockets: no client we can use
        return ProxyHeader(2, None, None)
    size, version = _V2_FAMILIES[family]
    if len(body) < 2 * size + 4:
        raise ProxyProtocolError("PROXY v2: address block too short for its family")
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    src, dst = make(body[:size]), make(body[size:2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return ProxyHeader(2, (str(src), sport), (str(dst), dport))
