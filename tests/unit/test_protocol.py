"""The codec fed whole, one byte at a time, and with trailing bytes."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.protocol import (
    BadField,
    Dialect,
    Errno,
    FrameDecoder,
    FrameError,
    MsgId,
    encode,
    error_reply,
    opt_int,
    req_int,
    req_str,
    to_legacy_login_ack,
)

STREAM = (
    b'{"msgid":1,"id":7,"password":"pw"}\n'
    b"\n   \r\n"
    b'{"msgid":5,"msg":"a\\nb \xe4\xbd\xa0\xe5\xa5\xbd"}\r\n'
    b"not json\n"
    b"[1,2]\n"
    b'{"msgid":10}\n'
)


def feed_all(chunks, max_frame=65536):
    dec = FrameDecoder(max_frame)
    out = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    return dec, out


def test_whole_stream():
    dec, out = feed_all([STREAM])
    assert out[0] == {"msgid": 1, "id": 7, "password": "pw"}
    assert out[1] == {"msgid": 5, "msg": "a\nb 你好"}
    assert isinstance(out[2], FrameError) and out[2].errno == Errno.BAD_REQUEST
    assert not out[2].fatal
    assert isinstance(out[3], FrameError) and "object" in out[3].errmsg
    assert out[4] == {"msgid": 10}
    assert len(out) == 5
    assert dec.dialect is Dialect.MODERN
    assert dec.buffered == 0


def test_byte_by_byte_matches_whole():
    _, whole = feed_all([STREAM])
    _, split = feed_all([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert split == whole


def test_trailing_partial_frame_is_kept():
    dec, out = feed_all([STREAM + b'{"msgid":3,'])
    assert len(out) == 5
    assert dec.buffered == len(b'{"msgid":3,')
    assert dec.feed(b'"name":"x"}\n') == [{"msgid": 3, "name": "x"}]


def test_nul_terminator_fixes_legacy_dialect():
    dec = FrameDecoder()
    assert dec.feed(b'{"msgid":1}\x00{"msgid":2}\n') == [{"msgid": 1}, {"msgid": 2}]
    assert dec.dialect is Dialect.LEGACY


def test_blank_frames_do_not_fix_dialect():
    dec = FrameDecoder()
    dec.feed(b"\x00 \x00\n")
    assert dec.dialect is None
    dec.feed(b"{}\n")
    assert dec.dialect is Dialect.MODERN


def test_malformed_frame_fixes_dialect_too():
    dec = FrameDecoder()
    [err] = dec.feed(b"oops\x00")
    assert isinstance(err, FrameError)
    assert dec.dialect is Dialect.LEGACY


def test_bad_utf8_is_a_frame_error():
    [err] = FrameDecoder().feed(b'{"a":"\xff"}\n')
    assert isinstance(err, FrameError) and err.errno == Errno.BAD_REQUEST


def test_frame_at_the_limit_passes_and_one_over_is_fatal():
    body = b'{"m":"' + b"x" * 94 + b'"}'
    assert len(body) == 102
    assert FrameDecoder(102).feed(body + b"\r\n") == [{"m": "x" * 94}]
    dec = FrameDecoder(101)
    [err] = dec.feed(body + b"\n{}\n")
    assert err.errno == Errno.FRAME_TOO_LARGE and err.fatal
    assert dec.closed
    assert dec.feed(b"{}\n") == []


def test_unterminated_overlong_frame_is_fatal_before_the_terminator():
    dec = FrameDecoder(100)
    assert dec.feed(b"{" + b" " * 50) == []
    [err] = dec.feed(b'"k":"' + b"y" * 100)
    assert err.fatal and dec.buffered == 0


def test_whitespace_only_stream_is_bounded():
    dec = FrameDecoder(100)
    out = []
    for _ in range(20):
        out += dec.feed(b" " * 100)
    assert out and out[0].fatal


def test_encode_dialects():
    assert encode({"msgid": 4, "errno": 0}) == b'{"msgid":4,"errno":0}\n'
    assert encode({"msgid": MsgId.LOGIN_MSG_ACK}, Dialect.LEGACY) == b'{"msgid":2}\x00'


def test_error_reply_echoes_seq_and_integer_ref():
    assert error_reply(Errno.BAD_REQUEST, "x", {"msgid": 99, "seq": "a"}) == {
        "msgid": 15, "errno": 4, "errmsg": "x", "ref": 99, "seq": "a",
    }
    assert error_reply(Errno.BAD_REQUEST, "x", {"msgid": "1"})["ref"] is None
    assert error_reply(Errno.BAD_REQUEST, "x", {"msgid": True})["ref"] is None
    assert error_reply(Errno.BAD_REQUEST, "x")["ref"] is None


def test_field_checks_refuse_bools_and_numeric_strings():
    assert req_int({"id": 7}, "id") == 7
    for bad in ({"id": "7"}, {"id": True}, {"id": 7.0}, {}):
        with pytest.raises(BadField):
            req_int(bad, "id")
    assert opt_int({}, "id") is None
    assert req_str({"n": "你"}, "n", 1, 1) == "你"
    with pytest.raises(BadField):
        req_str({"n": ""}, "n", 1, 50)
    with pytest.raises(BadField):
        req_str({"n": 5}, "n")


def test_legacy_login_ack_encodes_elements_as_strings():
    ack = {
        "msgid": 2, "errno": 0, "id": 1, "name": "a",
        "offlinemsg": [{"msgid": 5, "msg": "hi"}],
        "friends": [{"id": 2, "name": "b", "state": "online"}],
        "groups": [{"id": 3, "groupname": "g", "groupdesc": "d",
                    "users": [{"id": 1, "name": "a", "state": "online", "role": "creator"}]}],
    }
    legacy = to_legacy_login_ack(ack)
    assert orjson.loads(legacy["offlinemsg"][0]) == {"msgid": 5, "msg": "hi"}
    assert orjson.loads(legacy["friends"][0])["name"] == "b"
    group = orjson.loads(legacy["groups"][0])
    assert orjson.loads(group["users"][0])["role"] == "creator"
    assert ack["friends"][0] == {"id": 2, "name": "b", "state": "online"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_decodes_like_the_whole(cuts):
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert feed_all(chunks)[1] == feed_all([STREAM])[1]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes_split_anywhere_match_whole(data, cuts):
    points = sorted({c for c in cuts if c <= len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(chunks, 64)[1] == feed_all([data], 64)[1]


LINES = st.one_of(
    st.dictionaries(st.sampled_from(["msgid", "to", "msg"]),
                    st.one_of(st.integers(-5, 20), st.text(max_size=20))).map(orjson.dumps),
    st.sampled_from([b"", b"  ", b"\r", b"[1]", b"nope", b"{", b'{"a":1} ', b"\xff",
                     b'{"m":"' + b"z" * 80 + b'"}', b'{"m":"' + b"z" * 56 + b'"}',
                     b'{"m":"' + b"z" * 57 + b'"}', b'{"a":"\0"}', b'{"a":1}\0{"b":2}',
                     b'\0', b' {"a":1}\r']),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=12), st.integers(1, 4))
def test_whole_line_reads_decode_like_one_stream(lines, per_read):
    """The decoder's shortcuts for reads of whole lines change no result: the
    same lines fed a byte at a time go through the general scan only."""
    data = [line + b"\n" for line in [b"{}", *lines]]
    reads = [b"".join(data[i : i + per_read]) for i in range(0, len(data), per_read)]
    stream = b"".join(data)
    one_by_one = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_all(reads, 64)[1] == feed_all(one_by_one, 64)[1]
