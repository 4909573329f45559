"""The interactive chat client: a menu, then the original client's commands.

Two threads, as in the original C++ client.  The reader thread (inside
`Connection`) owns every receive: it hands each reply to the request waiting
for it and prints pushed chat as it arrives.  The main thread (`App`) reads the
keyboard, sends requests and waits for their replies.

When the server drops the connection the reader thread wakes any waiting
request and interrupts the main thread with SIGUSR1 if it is blocked reading
input; either way the main thread reports it and `main` returns 2.  End of
input and Ctrl+C log out and return 0.

Exit status: 0 after quit, end of input or Ctrl+C; 1 when the server cannot
be reached; 2 when the server drops the connection.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType
from typing import TextIO

from chat.protocol import FrameError, Message, MsgId
from client import render
from client.commands import (
    HELP_TEXT,
    AddFriend,
    AddGroup,
    Blank,
    Chat,
    Command,
    CreateGroup,
    GroupChat,
    Help,
    Hint,
    Loginout,
    Quit,
    parse_command,
    parse_id,
)
from client.connection import BadRequest, Connection, ConnectionLost, ReplyTimeout
from client.console import Console

__all__ = ["App", "MENU", "main", "parse_args", "run"]

MENU = ("========================", "1. login", "2. register", "3. quit",
        "========================")
EXIT_OK, EXIT_CONNECT, EXIT_LOST = 0, 1, 2
LOGOUT_TIMEOUT = 3.0
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 6000


class App:
    """The main thread's side.  ``conn`` must be connected."""

    def __init__(self, console: Console, conn: Connection) -> None:
        self.console = console
        self.conn = conn
        self.user_id: int | None = None

    def run(self) -> int:
        """Serve the user until quit or end of input; ConnectionLost escapes."""
        while self._menu_round():
            pass
        return EXIT_OK

    def logout_quietly(self) -> None:
        """Best effort logout on the way out (EOF, Ctrl+C, quit)."""
        if self.user_id is None or self.conn.lost:
            return
        try:
            self.conn.request({"msgid": MsgId.LOGINOUT_MSG}, timeout=LOGOUT_TIMEOUT)
        except (ConnectionLost, ReplyTimeout):
            pass
        self.user_id = None

    # -- before login ------------------------------------------------------------

    def _menu_round(self) -> bool:
        """One menu choice; False when the user is done."""
        self.console.show(*MENU)
        choice = self.console.read_line("choice: ")
        if choice is None:
            return False
        choice = choice.strip()
        if choice == "1":
            return self._login()
        if choice == "2":
            return self._register()
        if choice == "3":
            return False
        self.console.show("hint: choose 1 (login), 2 (register) or 3 (quit)")
        return True

    def _login(self) -> bool:
        """False at end of input or quit, True to show the menu again."""
        raw_id = self.console.read_line("userid: ")
        if raw_id is None:
            return False
        user_id = parse_id(raw_id)
        if user_id is None:
            self.console.show("hint: the user id is a positive number")
            return True
        password = self.console.read_secret("password: ")
        if password is None:
            return False
        ack = self._ask({"msgid": MsgId.LOGIN_MSG, "id": user_id, "password": password})
        if ack is None:
            return True
        self.user_id = int(ack.get("id", user_id))
        self.console.show(*render.login_lines(ack))
        return self._command_loop()

    def _register(self) -> bool:
        name = self.console.read_line("username: ")
        if name is None:
            return False
        password = self.console.read_secret("password: ")
        if password is None:
            return False
        ack = self._ask({"msgid": MsgId.REG_MSG, "name": name, "password": password})
        if ack is not None:
            self.console.show(f"registered: id={render.clean(ack.get('id'))}")
        return True

    # -- after login -------------------------------------------------------------

    def _command_loop(self) -> bool:
        """Commands until loginout (True) or quit / end of input (False)."""
        while True:
            line = self.console.read_line("> ")
            command = Quit() if line is None else parse_command(line)
            if isinstance(command, Quit):
                self.logout_quietly()
                return False
            if isinstance(command, Loginout):
                if self._ask({"msgid": MsgId.LOGINOUT_MSG}) is not None:
                    self.user_id = None
                    self.console.show("logged out")
                    return True
                continue
            self._do(command)

    def _do(self, command: Command | Hint) -> None:
        show = self.console.show
        match command:
            case Blank():
                pass
            case Hint(text):
                show(f"hint: {text}")
            case Help():
                show(*HELP_TEXT.splitlines())
            case Chat(to, text):
                self._chat({"msgid": MsgId.ONE_CHAT_MSG, "to": to, "msg": text}, f"{to}")
            case GroupChat(group_id, text):
                msg = {"msgid": MsgId.GROUP_CHAT_MSG, "groupid": group_id, "msg": text}
                self._chat(msg, f"group {group_id}")
            case AddFriend(friend_id):
                self._add_friend(friend_id)
            case CreateGroup(name, desc):
                msg = {"msgid": MsgId.CREATE_GROUP_MSG, "groupname": name, "groupdesc": desc}
                if (ack := self._ask(msg)) is not None:
                    show(f"group created: id={render.clean(ack.get('groupid'))}")
            case AddGroup(group_id):
                msg = {"msgid": MsgId.ADD_GROUP_MSG, "groupid": group_id}
                if (ack := self._ask(msg)) is not None:
                    show(f"joined group: id={render.clean(ack.get('groupid', group_id))}")

    def _chat(self, msg: Message, target: str) -> None:
        msg["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if (ack := self._ask(msg)) is not None:
            self.console.show(f"sent to {target}: {render.clean(ack.get('state', 'ok'))}")

    def _add_friend(self, friend_id: int) -> None:
        ack = self._ask({"msgid": MsgId.ADD_FRIEND_MSG, "friendid": friend_id})
        if ack is None:
            return
        friend = ack.get("friend")
        friend = friend if isinstance(friend, dict) else {"id": friend_id}
        self.console.show(
            f"friend added: id={render.clean(friend.get('id', friend_id))}"
            f" name={render.clean(friend.get('name', '?'))}"
            f" state={render.clean(friend.get('state', '?'))}"
        )

    def _ask(self, msg: Message) -> Message | None:
        """The successful reply to ``msg``; None (and the reason shown) otherwise."""
        try:
            reply = self.conn.request(msg)
        except ReplyTimeout as exc:
            self.console.show(f"error: {exc}")
            return None
        except BadRequest as exc:
            self.console.show(f"hint: cannot send that: {exc}")
            return None
        if reply.get("errno", 0) != 0 or reply.get("msgid") == MsgId.ERROR_MSG:
            self.console.show(render.error_line(reply))
            return None
        return reply


def run(host: str, port: int, stdin: TextIO, stdout: TextIO) -> int:
    """Connect, serve the user, and return the exit status.  Main thread only."""
    console = Console(stdin, stdout)
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def on_push(item: Message | FrameError) -> None:
        console.show(render.push_line(item))

    def on_lost() -> None:
        # Reader thread: interrupt the main thread if it is blocked on input.
        signal.pthread_kill(main_thread, signal.SIGUSR1)

    # The reader thread starts with every signal blocked (a new thread inherits
    # the mask), so a signal sent to the process (Ctrl+C, SIGTERM) always lands
    # on the main thread and interrupts its blocking read; delivered to the
    # reader thread, it would wait until the next line of input.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        conn = Connection.open(host, port, on_push, on_lost)
    except OSError as exc:
        console.show(f"error: cannot connect to {host}:{port}: {exc}")
        return EXIT_CONNECT
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return _serve(console, conn)


def _serve(console: Console, conn: Connection) -> int:
    app = App(console, conn)

    def lost_check() -> None:
        if conn.lost:
            raise ConnectionLost("connection closed by server")

    def on_sigusr1(signum: int, frame: FrameType | None) -> None:
        if console.reading:
            raise ConnectionLost("connection closed by server")

    console.before_read = lost_check
    saved = {
        signal.SIGUSR1: signal.signal(signal.SIGUSR1, on_sigusr1),
        # Ctrl+C logs out even when started with SIGINT ignored (a background job).
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    try:
        status = _run_app(app)
        if status == EXIT_OK:
            # A second Ctrl+C must not cut the (bounded) logout short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            app.logout_quietly()
            console.show("bye")
        conn.close()
        return status
    finally:
        console.before_read = lambda: None
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _run_app(app: App) -> int:
    try:
        return app.run()
    except KeyboardInterrupt:
        return EXIT_OK
    except ConnectionLost:
        app.console.show("connection closed by server")
        return EXIT_LOST


def parse_args(argv: list[str]) -> tuple[str, int]:
    parser = argparse.ArgumentParser(
        prog="python -m client", description="Interactive client of the chat server."
    )
    parser.add_argument("host", nargs="?", default=DEFAULT_HOST, help="server host or address")
    parser.add_argument("port", nargs="?", type=int, default=DEFAULT_PORT, help="server port")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"port out of range: {args.port}")
    return args.host, args.port


def main(argv: list[str] | None = None) -> int:
    host, port = parse_args(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdin, sys.stdout):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    return run(host, port, sys.stdin, sys.stdout)
