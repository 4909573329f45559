"""The log formats of chat/logs.py: JSON lines with context, text lines that stay one line."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

from chat import logs
from chat.logs import JsonFormatter, TextFormatter


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("chat.service", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_carries_the_context_given_as_extra() -> None:
    line = JsonFormatter().format(_record("%s: failed", "chat-1", connection="chat-1",
                                          user=7, msgid=6, errno=9))
    entry = json.loads(line)
    assert entry["message"] == "chat-1: failed"
    assert (entry["level"], entry["logger"]) == ("WARNING", "chat.service")
    assert (entry["connection"], entry["user"], entry["msgid"], entry["errno"]) == \
        ("chat-1", 7, 6, 9)
    assert entry["time"].endswith("Z") and "T" in entry["time"]


def test_json_leaves_out_unknown_context_and_keeps_one_line() -> None:
    line = JsonFormatter().format(_record("name %s", "evil\n{\"level\": \"ERROR\"}", user=None))
    assert "\n" not in line
    entry = json.loads(line)
    assert "user" not in entry and "connection" not in entry
    assert entry["message"] == "name evil\n{\"level\": \"ERROR\"}"


def test_json_includes_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("bug")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


def test_text_escapes_control_characters_from_clients() -> None:
    line = TextFormatter().format(_record("name %s", "evil\r\n2026-01-01 ERROR forged\x1b[2J"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("name evil\\r\\n2026-01-01 ERROR forged\\x1b[2J")


def test_an_exception_in_a_thread_is_one_json_line() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, threading.excepthook, sys.excepthook)
    stream = io.StringIO()
    root.handlers = []
    try:
        logs.setup("INFO", "json")
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
        thread.start()
        thread.join()
    finally:
        root.handlers, level, threading.excepthook, sys.excepthook = saved
        root.setLevel(level)
        logging.captureWarnings(False)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "uncaught ZeroDivisionError in thread doomed"
    assert entry["level"] == "CRITICAL" and "ZeroDivisionError" in entry["exception"]
