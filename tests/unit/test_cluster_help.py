"""``python -m chat.cluster --help`` reads as plain text, with the defaults."""

from __future__ import annotations

import pytest

from chat import cluster


def test_cluster_help_is_plain_text_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cluster.parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "`" not in out  # no reStructuredText markup
    for default in ("(default: 2)", "(default: 6000)", "(default: 8000)", "(default: 4)"):
        assert default in out
    assert "python -m client 127.0.0.1 8000" in out  # the example says where clients go
