"""The operations options of the server: metrics port and host, log format."""

from __future__ import annotations

import pytest

from chat.server import parse_args


def test_metrics_are_off_by_default_and_on_loopback() -> None:
    args = parse_args([])
    assert args.metrics_port is None
    assert args.metrics_host == "127.0.0.1"
    assert args.log_format == "text"


def test_variables_set_the_operations_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_METRICS_PORT", "9600")
    monkeypatch.setenv("CHAT_METRICS_HOST", "10.0.0.2")
    monkeypatch.setenv("CHAT_LOG_FORMAT", "json")
    args = parse_args([])
    assert (args.metrics_port, args.metrics_host, args.log_format) == (9600, "10.0.0.2", "json")
    assert parse_args(["--metrics-port", "0", "--log-format", "text"]).metrics_port == 0


def test_a_bad_log_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])
    monkeypatch.setenv("CHAT_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit):
        parse_args([])
