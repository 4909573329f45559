"""Server options that are not limits: the reactor's switches and their variables."""

from __future__ import annotations

import pytest

from chat.server import parse_args


def test_turns_are_on_by_default_and_off_by_flag() -> None:
    assert parse_args([]).turns is True
    assert parse_args(["--no-turns"]).turns is False
    assert parse_args(["--turns"]).turns is True


@pytest.mark.parametrize(("value", "expected"), [
    ("off", False), ("0", False), ("no", False), ("False", False), ("on", True), ("1", True),
])
def test_chat_turns_variable(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CHAT_TURNS", value)
    assert parse_args([]).turns is expected
    assert parse_args(["--turns"]).turns is True  # the flag wins over the variable


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), ("off", False), ("0", False), ("on", True), ("1", True), ("yes", True),
])
def test_proxy_protocol_flag_and_variable(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                          expected: bool) -> None:
    if value is not None:
        monkeypatch.setenv("CHAT_PROXY_PROTOCOL", value)
    else:
        monkeypatch.delenv("CHAT_PROXY_PROTOCOL", raising=False)
    assert parse_args([]).proxy_protocol is expected
    assert parse_args(["--proxy-protocol"]).proxy_protocol is True
    assert parse_args(["--no-proxy-protocol"]).proxy_protocol is False


def test_write_batch_option_variable_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_WRITE_BATCH", raising=False)
    assert parse_args([]).write_batch == 32
    assert parse_args(["--write-batch", "0"]).write_batch == 0
    monkeypatch.setenv("CHAT_WRITE_BATCH", "8")
    assert parse_args([]).write_batch == 8
    with pytest.raises(SystemExit):
        parse_args(["--write-batch", "-1"])
