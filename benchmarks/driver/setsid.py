"""The chat server started in a session of its own, as ``setsid`` (or a service
manager) does.

On Linux with autogroup scheduling every session shares the CPUs as one group,
so a server in the driver's session competes with the driver's processes for
one group's share; in a session of its own it gets a share of its own, as in
production, and a signal to the driver's terminal does not reach it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence

from .servers import ChatServerProcess


class OwnSessionServer(ChatServerProcess):
    """`ChatServerProcess` whose process is the leader of a new session."""

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
