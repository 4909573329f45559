"""Every rule of the layer table (DESIGN.md, docs/architecture.md), checked on the source.

Each module's imports are read with `ast`: ``import x``, ``from x import y``
(also as ``x.y``, which may be a module), relative imports resolved against
the module's package, ``importlib.import_module("x")`` with a literal name,
and imports inside functions, since a late import breaks a layer as much as
one at the top.  Nothing is imported to find out.

The layers, from the bottom:

- networking, ``reactor/``: never anything of the chat application;
- protocol, ``chat/protocol.py``: bytes and dicts; no sockets, selectors,
  threads or event loops, no store, nothing else of ``chat``;
- ports, ``chat/store/``, ``chat/bus.py``, ``chat/redisbus/``: their own
  backend; never the business layer, the entry points or ``reactor``;
- business, every other module of ``chat/`` (service, router, presence,
  session, limits...): knows a connection only through what it is handed
  (send, shutdown, a hint of whom it talks to), so imports no ``reactor``
  module and no entry point;
- entry points, ``chat/server.py``, ``chat/cluster.py``, ``chat/guards.py``
  (the server's watch over its connections), ``chat/migrate.py``, the
  ``chat/web/`` front end, and ``client/``; the client speaks only the
  protocol: ``chat.protocol`` and its own package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STDLIB_CONCURRENCY = ("socket", "selectors", "select", "threading", "_thread", "asyncio",
                      "concurrent", "multiprocessing", "ssl")
ENTRY_POINTS = ("chat.server", "chat.cluster", "chat.guards", "chat.migrate", "chat.web")
PORTS = ("chat.store", "chat.bus", "chat.redisbus")
BUSINESS_EXAMPLES = ("chat.service", "chat.router", "chat.presence", "chat.session")


# -- reading imports ---------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name ``source`` (the text of ``module``) may import, anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
    return {name for name in names if name}


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _is_dynamic_import(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def source_modules(*folders: str) -> dict[str, set[str]]:
    """Module name -> its imports, for every .py file under ``folders``."""
    found = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = module_name(path)
            found[name] = imports_in(path.read_text(), name, path.name == "__init__.py")
    return found


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(modules: dict[str, set[str]], forbidden: Iterable[str]) -> dict[str, list[str]]:
    forbidden = tuple(forbidden)
    found = {m: sorted(i for i in imports if within(i, forbidden))
             for m, imports in modules.items()}
    return {m: bad for m, bad in found.items() if bad}


# -- the layers --------------------------------------------------------------------------

CHAT = source_modules("chat")
REACTOR = source_modules("reactor")
CLIENT = source_modules("client")


def layer(prefixes: Iterable[str]) -> dict[str, set[str]]:
    return {m: i for m, i in CHAT.items() if within(m, prefixes)}


def business() -> dict[str, set[str]]:
    others = (*ENTRY_POINTS, *PORTS, "chat.protocol")
    return {m: i for m, i in CHAT.items() if not within(m, others)}


def test_every_layer_has_its_modules() -> None:
    assert len(REACTOR) >= 5 and len(CLIENT) >= 5
    assert "chat.protocol" in CHAT
    assert {"chat.store.store", "chat.bus", "chat.redisbus"} <= set(layer(PORTS))
    assert set(BUSINESS_EXAMPLES) <= set(business())
    assert {"chat.server", "chat.guards"} <= set(layer(ENTRY_POINTS))


def test_reactor_never_imports_the_application() -> None:
    assert offenders(REACTOR, ["chat", "client"]) == {}


def test_protocol_has_no_io_no_threads_and_no_store() -> None:
    protocol = {"chat.protocol": CHAT["chat.protocol"]}
    assert offenders(protocol, [*STDLIB_CONCURRENCY, "reactor", "client", "chat"]) == {}


def test_ports_never_import_the_business_the_entry_points_or_the_reactor() -> None:
    above = [*BUSINESS_EXAMPLES, *ENTRY_POINTS, "chat.guards", "reactor", "client"]
    assert offenders(layer(PORTS), above) == {}


def test_business_uses_no_reactor_and_no_entry_point() -> None:
    assert offenders(business(), ["reactor", *ENTRY_POINTS, "client"]) == {}


def test_client_speaks_only_the_protocol() -> None:
    chat_modules = sorted({i for imports in CLIENT.values() for i in imports
                           if within(i, ["chat"])})
    assert chat_modules and all(within(m, ["chat.protocol"]) for m in chat_modules), chat_modules
    assert offenders(CLIENT, ["reactor"]) == {}


# -- the checker itself finds what it must ------------------------------------------------


@pytest.mark.parametrize(("source", "found"), [
    ("import socket", "socket"),
    ("import os, selectors as sel", "selectors"),
    ("from chat.service import ChatService", "chat.service"),
    ("from chat import service", "chat.service"),
    ("def f():\n    import threading\n    return threading", "threading"),
    ("class C:\n    def m(self):\n        from reactor.eventloop import EventLoop", "reactor"),
    ("from ..service import ChatService", "chat.service"),
    ("from .. import router", "chat.router"),
    ("import importlib\nimportlib.import_module('reactor.turn')", "reactor.turn"),
    ("if TYPE_CHECKING:\n    from chat.server import main", "chat.server"),
])
def test_the_checker_sees_every_form_of_import(source: str, found: str) -> None:
    imports = imports_in(source, "chat.store.store")
    assert within(found, imports) or any(within(i, [found]) for i in imports), imports
    verdict = offenders({"chat.store.store": imports}, [found.split(".")[0]])
    assert verdict, imports


def test_relative_imports_in_a_package_init() -> None:
    assert "chat.store.pool" in imports_in("from .pool import X", "chat.store", is_package=True)
