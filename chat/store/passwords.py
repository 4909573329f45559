"""Password hashing with scrypt (hashlib, no extra dependency).

Stored form: ``scrypt$<log2n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost can
be raised later and old hashes still verify.  With the default cost
(log2n=14, r=8, p=1) one hash takes about 45 ms and 16 MiB on the
development machine (see docs/storage.md): slow for a guesser, fine for a login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

DEFAULT_LOG2N = 14
_R = 8
_P = 1
_DKLEN = 32
_SALT_BYTES = 16
_MAX_LOG2N = 20  # 1 GiB of memory; refuse anything larger found in a stored hash


def _scrypt(password: str, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    n = 1 << log2n
    # scrypt needs 128*r*n*p bytes for its main buffer; OpenSSL's default
    # limit (32 MiB) is too small from log2n=15 on, so allow what is needed.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    data = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=_DKLEN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, log2n: int = DEFAULT_LOG2N) -> str:
    """Return the stored form of ``password``, with a fresh random salt."""
    if not 1 <= log2n <= _MAX_LOG2N:
        raise ValueError(f"scrypt log2n must be in 1..{_MAX_LOG2N}, not {log2n}")
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, log2n, _R, _P)
    return f"scrypt${log2n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True iff ``password`` matches ``stored``; False for a malformed hash."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        log2n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return False
    if not (1 <= log2n <= _MAX_LOG2N and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    actual = _scrypt(password, salt, log2n, r, p)
    return hmac.compare_digest(actual, expected)
