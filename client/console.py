"""Line-oriented terminal I/O shared by the main thread and the reader thread.

The main thread reads lines (`read_line`, `read_secret`); both threads print
whole lines (`show`), under one lock so blocks of lines never interleave.
When stdin and stdout are a terminal, input goes through readline and a line
printed by the reader thread while the user is typing first clears the
half-typed line, then draws the prompt and that line again below.  Otherwise
no prompts are printed at all, so the output is exactly the lines shown.
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TextIO

__all__ = ["Console"]

_CLEAR_LINE = "\r\x1b[K"


class Console:
    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self._in = stdin
        self._out = stdout
        self.tty = stdin.isatty()
        self._readline = _load_readline() if self.tty and stdout.isatty() else None
        self._lock = threading.Lock()
        self._prompt: str | None = None
        #: True while the main thread is (about to be) blocked reading input.
        self.reading = False
        #: Called once ``reading`` is set, before blocking: it may raise to
        #: refuse to wait for input (e.g. when the connection is gone).
        self.before_read: Callable[[], None] = lambda: None
        #: True once a read met the end of input (Ctrl+D on a terminal).
        self.eof = False

    def show(self, *lines: str) -> None:
        """Print whole lines.  Safe from any thread."""
        text = "".join(line + "\n" for line in lines)
        with self._lock:
            if self._readline is not None and self._prompt is not None:
                typed = self._readline.get_line_buffer()
                text = f"{_CLEAR_LINE}{text}{self._prompt}{typed}"
            self._out.write(text)
            self._out.flush()

    def read_line(self, prompt: str) -> str | None:
        """One line without its newline, or None at end of input.  Main thread only."""
        return self._read(prompt, self._input_line)

    def read_secret(self, prompt: str) -> str | None:
        """Like `read_line`, without echo when stdin is a terminal."""
        return self._read(prompt, self._input_secret)

    def _read(self, prompt: str, reader: Callable[[str], str]) -> str | None:
        self.reading = True
        try:
            self.before_read()
            line = reader(prompt)
        except EOFError:
            self.eof = True
            return None
        finally:
            self.reading = False
        return line

    def _input_line(self, prompt: str) -> str:
        if not self.tty:
            return self._readline_from_pipe()
        with self._lock:
            self._prompt = prompt
        try:
            return input(prompt) if self._readline is not None else self._prompted(prompt)
        finally:
            with self._lock:
                self._prompt = None

    def _input_secret(self, prompt: str) -> str:
        if not self.tty:
            return self._readline_from_pipe()
        return getpass.getpass(prompt)

    def _prompted(self, prompt: str) -> str:
        self.show_partial(prompt)
        return self._readline_from_pipe()

    def show_partial(self, text: str) -> None:
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def _readline_from_pipe(self) -> str:
        line = self._in.readline()
        if not line:
            raise EOFError
        return line.removesuffix("\n").removesuffix("\r")


def _load_readline() -> ModuleType | None:
    # Imported only for a terminal: readline may write escape codes at import.
    try:
        import readline
    except ImportError:  # pragma: no cover - a Python built without readline
        return None
    return readline
