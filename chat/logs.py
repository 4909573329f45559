"""The server's log formats: text (the default) or one JSON object per line.

Context travels as ``extra=`` on the logging call, under the names in
``CONTEXT`` (``log.warning("...", extra={"connection": conn.name, "user": 7})``);
the JSON format puts each one that is present in its own field, the text
format ignores them (the message says what matters).

No client input reaches a log line unescaped: JSON escapes every string it
writes, and the text formatter escapes control characters (a newline a
client put in a name would otherwise forge a log line of its own).  Call
sites still log client-chosen values with ``%r``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

import orjson

CONTEXT = ("connection", "user", "msgid", "errno")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_CONTROL = {c: f"\\x{c:02x}" for c in range(32)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x7F: "\\x7f"})


class TextFormatter(logging.Formatter):
    """The usual text line, with control characters in the message escaped."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def setup(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` ("text" or "json").

    Warnings and uncaught exceptions (of any thread) go through logging too,
    so that in JSON every line on stderr is one object.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}: text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


_crash_log = logging.getLogger("chat.crash")


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    _crash_log.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    _crash_log.critical("uncaught %s in thread %s", args.exc_type.__name__, name,
                        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
