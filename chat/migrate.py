"""Bring a chat database to the latest schema version, or show what that would do.

    python -m chat.migrate --db mysql://root:@127.0.0.1:3306/chat --dry-run
    python -m chat.migrate --db mysql://root:@127.0.0.1:3306/chat

The server runs the same migrations at every start; this command lets an
operator run them, and see them, first (docs/storage.md, "Schema versions").
It also upgrades the original C++ server's database in place.  Exit status:
0 done, nothing to do, or dry run; 1 the database is unavailable or a step
failed (run it again once fixed); 2 a database this code does not recognise,
which is left unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from chat.store import StoreError, UnknownSchema
from chat.store.config import Config, parse_url
from chat.store.direct import Step
from chat.store.migrations import inspect, prepare, upgrade
from chat.store.schema import LATEST

PROG = "python -m chat.migrate"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--db", default=os.environ.get("CHAT_DB", "sqlite:///chat.db"),
                   help="sqlite:///PATH or mysql://USER:PASS@HOST:PORT/DB "
                        "(CHAT_DB, default sqlite:///chat.db, as the server)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run and change nothing")
    return p.parse_args(argv)


def show_plan(config: Config) -> None:
    state, steps = inspect(config)
    print(f"{config.describe()}: {state.describe()}")
    if not steps:
        print(f"at the latest schema version ({LATEST}): nothing to do")
        return
    print(f"would run {len(steps)} step(s) to reach schema version {LATEST}:")
    for step in steps:
        print(_format(step))
    print("dry run: nothing was changed")


def _format(step: Step) -> str:
    lines = [f"\n-- {step.title}"]
    lines += [f"{statement};" for statement in step.statements]
    lines += [f"-- {note}" for note in step.notes]
    return "\n".join(lines)


def run(config: Config) -> None:
    done = upgrade(config)
    if done:
        print(f"{config.describe()}: ran {', '.join(done)}; now at schema version {LATEST}")
    else:
        print(f"{config.describe()}: at the latest schema version ({LATEST}): nothing to do")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress of long steps (hashing many passwords) goes to stderr.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.dry_run:
            show_plan(parse_url(args.db))
        else:
            run(prepare(args.db))
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except UnknownSchema as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
