"""The interactive client end to end: real server, real client processes over pipes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.client.conftest import ENV, ROOT, ChatServer, Cli, unique_name

pytestmark = pytest.mark.timeout(30)

Spawn = Callable[..., Cli]
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def new_user(spawn: Spawn, server: ChatServer, base: str) -> tuple[Cli, int, str]:
    """A client that registered a new user and is logged in as it."""
    cli = spawn(server.port)
    name = unique_name(base)
    user_id = cli.register(name)
    cli.login(user_id)
    cli.expect(r"^offline messages: \d+$")
    return cli, user_id, name


def test_register_login_and_quit(spawn: Spawn, server: ChatServer) -> None:
    cli = spawn(server.port)
    cli.expect(r"^1\. login$")
    name = unique_name("alice")
    user_id = cli.register(name, "s3cret: with colon")
    cli.send("1", str(user_id), "s3cret: with colon")
    cli.expect(rf"^login success: id={user_id} name={name}$")
    cli.expect(r"^friends: 0$")
    cli.expect(r"^groups: 0$")
    cli.expect(r"^offline messages: 0$")
    cli.send("quit")
    cli.expect("^bye$")
    assert cli.wait() == 0


def test_login_errors_ask_again_and_the_menu_goes_on(spawn: Spawn, server: ChatServer) -> None:
    cli = spawn(server.port)
    name = unique_name("bob")
    user_id = cli.register(name)
    cli.send("1", str(user_id), "wrong")
    cli.expect(r"^error 1: wrong user id, name or password$")
    cli.expect(r"^hint: try again, or an empty line for the menu$")
    cli.send(f"{name}-nobody", "pw")
    cli.expect(r"^error 1: wrong user id, name or password$")
    cli.send(str(2**63))
    cli.expect(r"^hint: a user id is a number from 1 to 9223372036854775807$")
    cli.send("")  # back to the menu
    cli.expect(r"^3\. quit$")
    cli.send("2", "x" * 51, "pw")
    cli.expect(r"^error [14]: \S")
    cli.send("9")
    cli.expect(r"^hint: choose 1 \(login\), 2 \(register\) or 3 \(quit\)$")
    cli.send("1", name, "pw")  # by name
    cli.expect(rf"^login success: id={user_id} name={name}$")
    other = spawn(server.port)
    other.send("1", str(user_id), "pw")
    other.expect(r"^error 2: this account is already logged in, on this or another device$")
    other.expect(r"^hint: try again")
    cli.send("loginout")
    cli.expect("^logged out$")
    other.send(name, "pw")  # asked again: no need to go through the menu
    other.expect(rf"^login success: id={user_id} ")
    cli.send("3")
    assert cli.wait() == 0


def test_two_clients_chat_both_ways(spawn: Spawn, server: ChatServer) -> None:
    alice, alice_id, alice_name = new_user(spawn, server, "alice")
    bob, bob_id, bob_name = new_user(spawn, server, "bob")
    alice.send(f"addfriend:{bob_id}")
    alice.expect(rf"^friend added: id={bob_id} name={bob_name} state=online$")
    alice.send(f"chat:{bob_id}:hello: how are you?")
    alice.expect(rf"^sent to {bob_id}: ✓ delivered$")
    bob.expect(rf"^\[{TIME}\] {alice_id} {alice_name}: hello: how are you\?$")
    bob.send(f"chat:{alice_id}:fine, thanks ☺")
    alice.expect(rf"^\[{TIME}\] {bob_id} {bob_name}: fine, thanks ☺$")
    bob.send("loginout")
    bob.expect("^logged out$")
    bob.login(bob_id)
    bob.expect(rf"^  friend {alice_id} {alice_name} online$")


def test_group_create_join_and_chat(spawn: Spawn, server: ChatServer) -> None:
    alice, alice_id, alice_name = new_user(spawn, server, "alice")
    bob, bob_id, bob_name = new_user(spawn, server, "bob")
    group = unique_name("devs")
    alice.send(f"creategroup:{group}:the: dev team")
    group_id = int(alice.expect(r"^group created: id=(\d+)$")[1])
    bob.send(f"addgroup:{group_id}")
    bob.expect(rf"^joined group: id={group_id}$")
    bob.send(f"groupchat:{group_id}:hi all: ship it")
    # "delivered" from a server that does not count the members it reached
    bob.expect(rf"^sent to group {group_id}: ✓ (delivered|1 live, 0 at next login)$")
    alice.expect(rf"^\[group {group_id}\] \[{TIME}\] {bob_id} {bob_name}: hi all: ship it$")
    alice.send("loginout")
    alice.login(alice_id)
    alice.expect(rf"^  group {group_id} {group}: the: dev team$")
    alice.expect(rf"^    member {alice_id} {alice_name} online creator$")
    alice.expect(rf"^    member {bob_id} {bob_name} online normal$")


def test_offline_messages_are_shown_at_login(spawn: Spawn, server: ChatServer) -> None:
    alice, alice_id, alice_name = new_user(spawn, server, "alice")
    bob = spawn(server.port)
    bob_id = bob.register(unique_name("bob"))
    alice.send(f"chat:{bob_id}:while you were away", f"chat:{bob_id}:second")
    alice.expect(rf"^sent to {bob_id}: ✓ stored$")
    alice.expect(rf"^sent to {bob_id}: ✓ stored$")
    bob.login(bob_id)
    bob.expect(r"^offline messages: 2$")
    # In the login ack, or (acknowledged delivery) right after it, marked offline.
    bob.expect(rf"^(\[offline\] )?\[{TIME}\] {alice_id} {alice_name}: while you were away$")
    bob.expect(rf"^(\[offline\] )?\[{TIME}\] {alice_id} {alice_name}: second$")


def test_a_message_too_large_for_the_server_is_not_sent(spawn: Spawn, server: ChatServer) -> None:
    alice, _, _ = new_user(spawn, server, "alice")
    bob, bob_id, _ = new_user(spawn, server, "bob")
    alice.send(f"chat:{bob_id}:" + "€" * 30_000)  # under the length limit, 90,000 bytes
    alice.expect(r"^not sent: 90,0\d\d bytes, the server takes at most 65,536$")
    alice.send(f"chat:{bob_id}:" + "€" * 20_000)
    alice.expect(rf"^sent to {bob_id}: ✓ delivered$")
    bob.expect("€{20000}$")
    alice.send("quit")
    assert alice.wait() == 0


def test_max_frame_option_and_defaults_in_help() -> None:
    out = subprocess.run([sys.executable, "-m", "client", "--help"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=20, check=True).stdout
    assert "(default: 127.0.0.1)" in out and "(default: 6000)" in out
    assert "--max-frame" in out and "(default: 65536)" in out


def test_max_frame_is_the_clients_limit(spawn: Spawn, server: ChatServer) -> None:
    cli = spawn(server.port, "--max-frame", "100")
    user_id = cli.register(unique_name("gina"))
    cli.login(user_id)
    cli.send(f"chat:{user_id + 1}:" + "x" * 100)
    cli.expect(r"^not sent: 1\d\d bytes, the server takes at most 100$")
    cli.send("quit")
    assert cli.wait() == 0


def test_bad_commands_get_hints_and_errors_are_readable(spawn: Spawn, server: ChatServer) -> None:
    cli, user_id, _ = new_user(spawn, server, "carol")
    cli.send("hello")
    cli.expect(r"^hint: unknown command 'hello'; type help for the list$")
    cli.send("chat:x:hi")
    cli.expect(r"^hint: friend id must be a positive number; usage: chat:<friendid>:<message>$")
    cli.send("chat:3")
    cli.expect(r"^hint: the message is empty; usage:")
    cli.send(f"addfriend:{2**64}")
    cli.expect(r"^hint: user id must be a positive number")
    cli.send("help")
    cli.expect(r"^groupchat +group chat, format groupchat:<groupid>:<message>$")
    cli.send("chat:999999:anyone?")
    cli.expect(r"^error 5: \S")
    cli.send("addgroup:999999")
    cli.expect(r"^error 5: \S")
    cli.send(f"addfriend:{user_id}")
    cli.expect(r"^error 4: \S")
    cli.send("groupchat:999999:x", "", "quit")
    cli.expect(r"^error 5: \S")
    assert cli.wait() == 0


def test_end_of_input_logs_out_and_exits_0(spawn: Spawn, server: ChatServer) -> None:
    cli, user_id, _ = new_user(spawn, server, "dave")
    cli.close_stdin()
    assert cli.wait() == 0
    other = spawn(server.port)
    other.login(user_id)


def test_ctrl_c_logs_out_and_exits_0(spawn: Spawn, server: ChatServer) -> None:
    cli, user_id, _ = new_user(spawn, server, "erin")
    cli.proc.send_signal(signal.SIGINT)
    assert cli.wait() == 0
    other = spawn(server.port)
    other.login(user_id)


def test_server_killed_mid_session(spawn: Spawn, own_server: ChatServer) -> None:
    in_session, _, _ = new_user(spawn, own_server, "frank")
    at_menu = spawn(own_server.port)
    at_menu.expect(r"^3\. quit$")
    own_server.stop(signal.SIGKILL)
    start = time.monotonic()
    for cli in (in_session, at_menu):
        cli.expect("^connection closed by server$")
        assert cli.wait() == 2
    assert time.monotonic() - start < 3


def test_cannot_connect_exits_1(spawn: Spawn, own_server: ChatServer) -> None:
    port = own_server.port
    own_server.stop(signal.SIGKILL)
    cli = spawn(port)
    cli.expect(rf"^error: cannot connect to 127\.0\.0\.1:{port}: ")
    assert cli.wait() == 1


def test_end_of_input_at_the_menu_exits_0(spawn: Spawn, server: ChatServer) -> None:
    cli = spawn(server.port)
    cli.expect(r"^3\. quit$")
    cli.close_stdin()
    cli.expect("^bye$")
    assert cli.wait() == 0
