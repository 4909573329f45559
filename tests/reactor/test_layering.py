"""reactor/ is a library: no module under it may import the chat application."""

from __future__ import annotations

import ast
from pathlib import Path

import reactor

REACTOR_DIR = Path(reactor.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_reactor_never_imports_chat() -> None:
    files = sorted(REACTOR_DIR.rglob("*.py"))
    assert len(files) >= 5
    offenders = {}
    for f in files:
        bad = sorted(m for m in imported_modules(f) if m.split(".")[0] in {"chat", "client"})
        if bad:
            offenders[str(f.relative_to(REACTOR_DIR))] = bad
    assert offenders == {}
