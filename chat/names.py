"""What a user name may be, so that two names that look alike are one name.

A name is stored and compared in Unicode NFC, so "é" typed as one code point
and as "e" plus a combining accent are the same name.  Characters that make a
name look like another without being it are refused outright: controls (Cc),
invisible format characters (Cf: zero-width space and joiners, the
left-to-right and right-to-left marks, the BOM...), surrogates (Cs), line and
paragraph separators, and every space but the plain U+0020 (no-break, thin,
ideographic...); whitespace at either end is refused too.  With those gone,
SQLite's BINARY and MariaDB's utf8mb4_bin compare names the same way: exact
code points, case-sensitive (MariaDB's PAD SPACE rule, "bob " = "bob", can no
longer matter, since no name ends in a space).

Pure functions, no I/O: the service checks a new name with `check_name`; any
lookup by name uses `lookup_form`, which returns None for a string that
cannot be anybody's name.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_LEN = 50

_REFUSED = {
    "Cc": "control characters",
    "Cf": "invisible formatting characters (zero-width, direction marks)",
    "Cs": "lone surrogates",
    "Zl": "line separators",
    "Zp": "paragraph separators",
}


class BadName(ValueError):
    """A name refused for what it contains; the message says why."""


def normalize(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def check_name(name: str) -> str:
    """The canonical (NFC) form of a new user name; raises BadName with the reason."""
    name = normalize(name)
    if not 1 <= len(name) <= MAX_NAME_LEN:
        raise BadName(f"a name must be 1-{MAX_NAME_LEN} characters long")
    if name != name.strip():
        raise BadName("a name must not begin or end with whitespace")
    for char in name:
        category = unicodedata.category(char)
        reason = _REFUSED.get(category)
        if reason is None and category == "Zs" and char != " ":
            reason = "spaces other than the plain space (no-break, thin...)"
        if reason is not None:
            raise BadName(f"a name must not contain {reason}: U+{ord(char):04X}")
    return name


def lookup_form(name: str) -> str | None:
    """``name`` as stored, or None if no account can have it (look nothing up then)."""
    try:
        return check_name(name)
    except BadName:
        return None
