import ipaddress
import struct

import pytest

from chat.proxyproto import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
)

FRAME = b'{"msgid":1,"id":7,"password":"pw"}\n'


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def v2_inet(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    return v2(1, family, a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs)


CASES = [
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 8000\r\n",
     ProxyHeader(1, ("203.0.113.7", 56324), ("192.0.2.1", 8000))),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
     ProxyHeader(1, ("2001:db8::1", 1), ("2001:db8::2", 65535))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
     ProxyHeader(1, None, None)),
    (v2_inet("198.51.100.9", "10.0.0.1", 40000, 6000),
     ProxyHeader(2, ("198.51.100.9", 40000), ("10.0.0.1", 6000))),
    (v2_inet("2001:db8::7", "::1", 5, 6, tlvs=b"\x04\x00\x01x"),  # a TLV, skipped
     ProxyHeader(2, ("2001:db8::7", 5), ("::1", 6))),
    (v2(0, 0x00, b""), ProxyHeader(2, None, None)),  # LOCAL: the proxy's health check
    (v2(1, 0x31, b"\x00" * 216), ProxyHeader(2, None, None)),  # a unix socket: no client
]


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_whole_header_with_and_without_frames_after_it(header, expected):
    assert ProxyHeaderReader().feed(header) == (expected, b"")
    assert ProxyHeaderReader().feed(header + FRAME + FRAME) == (expected, FRAME + FRAME)


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_byte_by_byte(header, expected):
    reader = ProxyHeaderReader()
    data = header + FRAME
    for i in range(len(header) - 1):
        assert reader.feed(data[i:i + 1]) is None
    assert reader.feed(data[len(header) - 1:]) == (expected, FRAME)


@pytest.mark.parametrize("bad", [
    FRAME,  # a client speaking to the server directly
    b"\n",
    b"PROXZ",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF alone: never terminated within 107 bytes
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY TCP4 host 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    b"PROXY \xff\r\n",
    b"\r\n\r\n\x00\r\nQUIX\n",
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
    V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # too short for IPv4
    V2_SIGNATURE + b"\x21\x11\xff\xff",  # 64 KiB of addresses
])
def test_anything_else_is_refused_as_soon_as_it_is_certain(bad):
    with pytest.raises(ProxyProtocolError):
        reader = ProxyHeaderReader()
        reader.feed(bad)
        reader.feed(b"x" * 200)  # in case the bad part alone was only incomplete


def test_a_long_v1_line_is_refused_before_its_end_arrives():
    reader = ProxyHeaderReader()
    assert reader.feed(b"PROXY TCP4 " + b"1" * 90) is None
    with pytest.raises(ProxyProtocolError):
        reader.feed(b"1" * 10)
