"""The interactive chat client: a menu, then the original client's commands.

Two threads, as in the original C++ client.  The reader thread (inside
`Connection`) owns every receive: it hands each reply to the request waiting
for it and prints pushed chat as it arrives.  The main thread (`App`) reads the
keyboard, sends requests and waits for their replies.

When the server drops the connection the reader thread wakes any waiting
request and interrupts the main thread with SIGUSR1 if it is blocked reading
input; either way the main thread reports it and `main` returns 2.  End of
input (Ctrl+D) and Ctrl+C log out, print ``bye`` on a line of its own and
return 0.

Logins ask for acknowledged delivery (``"ack": true``): pushed chat goes
through `Inbox` (shown once, acknowledged in batches by `Acknowledger`), and
the sender sees ``✓`` when the server has the message and a ``✓✓`` line when
the recipient has it.  Against a server that ignores ``"ack"`` nothing
changes but the missing ``✓✓``.

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

from chat.protocol import DEFAULT_MAX_FRAME, Message, MsgId
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
from client.connection import (
    BadRequest,
    Connection,
    ConnectionLost,
    FrameTooLarge,
    ReplyTimeout,
)
from client.console import Console
from client.delivery import Acknowledger, SentMessages
from client.inbox import Inbox

__all__ = ["App", "MENU", "main", "parse_args", "run"]

MENU = ("========================", "1. login", "2. register", "3. quit",
        "========================")
EXIT_OK, EXIT_CONNECT, EXIT_LOST = 0, 1, 2
LOGOUT_TIMEOUT = 3.0
LOGIN_PROMPT = "user id or name: "
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 6000


class App:
    """The main thread's side.  ``conn`` must be connected."""

    def __init__(
        self, console: Console, conn: Connection, acks: Acknowledger, sent: SentMessages,
        inbox: Inbox,
    ) -> None:
        self.console = console
        self.conn = conn
        self.acks = acks
        self.sent = sent
        self.inbox = inbox
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
        self.acks.flush()
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
        """Ask until a login succeeds: False at end of input or quit, True for the menu."""
        while True:
            entry = self.console.read_line(LOGIN_PROMPT)
            if entry is None:
                return False
            if not entry.strip():
                return True
            request = _login_request(entry.strip())
            if isinstance(request, str):
                self.console.show(f"hint: {request}")
                continue
            password = self.console.read_secret("password: ")
            if password is None:
                return False
            self.acks.reset()
            self.inbox.hold()
            ack = self._ask({**request, "password": password, "ack": True})
            if ack is not None:
                break
            self.inbox.release()
            self.console.show("hint: try again, or an empty line for the menu")
        self.user_id = int(ack["id"]) if type(ack.get("id")) is int else None
        self.console.show(*render.login_lines(ack))
        self.inbox.release()
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
                self.acks.flush()
                if self._ask({"msgid": MsgId.LOGINOUT_MSG}) is not None:
                    self.acks.reset()  # what came after the flush is delivered again
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
                msg = {"msgid": MsgId.ONE_CHAT_MSG, "to": to, "msg": text}
                if (mid := self._chat(msg, f"{to}")) is not None:
                    self.sent.sent(mid, to, text)
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

    def _chat(self, msg: Message, target: str) -> int | None:
        """Send a chat message and show its ack; the message's mid, if the server gave one."""
        msg["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if (ack := self._ask(msg)) is None:
            return None
        self.console.show(render.chat_ack_line(ack, target))
        mid = ack.get("mid")
        return mid if type(mid) is int else None

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
        except FrameTooLarge as exc:
            self.console.show(render.too_large_line(exc.size, exc.limit))
            return None
        except BadRequest as exc:
            self.console.show(f"hint: cannot send that: {exc}")
            return None
        if reply.get("errno", 0) != 0 or reply.get("msgid") == MsgId.ERROR_MSG:
            self.console.show(render.error_line(reply))
            return None
        return reply


def run(
    host: str, port: int, stdin: TextIO, stdout: TextIO, max_frame: int = DEFAULT_MAX_FRAME
) -> int:
    """Connect, serve the user, and return the exit status.  Main thread only."""
    console = Console(stdin, stdout)
    connected: list[Connection] = []
    acks = Acknowledger(lambda mid: connected[0].acknowledge(mid))
    sent = SentMessages()
    inbox = Inbox(console.show, acks.received, sent)
    try:
        connected.append(_open(host, port, inbox, acks, max_frame))
    except OSError as exc:
        console.show(f"error: cannot connect to {host}:{port}: {exc}")
        return EXIT_CONNECT
    try:
        return _serve(App(console, connected[0], acks, sent, inbox))
    finally:
        acks.stop()


def _open(host: str, port: int, inbox: Inbox, acks: Acknowledger, max_frame: int) -> Connection:
    """Connect, and start the reader and acknowledger threads.  Main thread only."""
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def on_lost() -> None:
        # Reader thread: interrupt the main thread if it is blocked on input.
        signal.pthread_kill(main_thread, signal.SIGUSR1)

    # The reader and acknowledger threads start with every signal blocked (a
    # new thread inherits the mask), so a signal sent to the process (Ctrl+C,
    # SIGTERM) always lands on the main thread and interrupts its blocking
    # read; delivered to another thread, it would wait for the next line.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        conn = Connection.open(host, port, inbox.on_push, on_lost, max_frame=max_frame)
        acks.start()
        return conn
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _serve(app: App) -> int:
    console, conn = app.console, app.conn

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
        status, interrupted = _run_app(app)
        if status == EXIT_OK:
            _leave(app, interrupted)
        conn.close()
        return status
    finally:
        console.before_read = lambda: None
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _leave(app: App, interrupted: bool) -> None:
    """Log out and say bye on a line of its own."""
    # A second Ctrl+C must not cut the (bounded) logout short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    app.logout_quietly()
    if app.console.tty and (interrupted or app.console.eof):
        app.console.show("")  # the cursor is after a prompt or an echoed ^C
    app.console.show("bye")


def _run_app(app: App) -> tuple[int, bool]:
    """The exit status, and whether Ctrl+C ended the session."""
    try:
        return app.run(), False
    except KeyboardInterrupt:
        return EXIT_OK, True
    except ConnectionLost:
        app.console.show("connection closed by server")
        return EXIT_LOST, False


def _login_request(entry: str) -> Message | str:
    """LOGIN_MSG for an id (all digits) or else a name; a hint if the id cannot be one."""
    if not (entry.isascii() and entry.isdigit()):
        return {"msgid": MsgId.LOGIN_MSG, "name": entry}
    user_id = parse_id(entry)
    if user_id is None:
        return "a user id is a number from 1 to 9223372036854775807"
    return {"msgid": MsgId.LOGIN_MSG, "id": user_id}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m client", description="Interactive client of the chat server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("host", nargs="?", default=DEFAULT_HOST, help="server host or address")
    parser.add_argument("port", nargs="?", type=int, default=DEFAULT_PORT, help="server port")
    parser.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME, metavar="BYTES",
                        help="largest request the server takes (its --max-frame); a longer "
                             "message is not sent")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"port out of range: {args.port}")
    if args.max_frame < 1:
        parser.error(f"--max-frame must be positive: {args.max_frame}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdin, sys.stdout):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    return run(args.host, args.port, sys.stdin, sys.stdout, args.max_frame)
