import pytest

from chat.names import BadName, check_name, lookup_form


def test_names_are_nfc():
    assert check_name("e\u0301") == "\u00e9" == lookup_form("e\u0301")
    assert check_name("Zoë Smith") == "Zoë Smith"


@pytest.mark.parametrize("name", [
    "bob ", " bob", "bob\u00a0", "\u3000bob", "bob\n", "bo\u200bb", "bo\u200db", "\u200fbob",
    "\ufeffbob", "bo\u00a0b", "bo\u2009b", "bob\u2029x", "bo\x7fb", "bo\x00b", "bo\ud800b",
    "", "x" * 51,
])
def test_look_alikes_and_invisibles_are_refused(name):
    with pytest.raises(BadName):
        check_name(name)
    assert lookup_form(name) is None
