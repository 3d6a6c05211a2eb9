"""Run the real CLI on a pseudo-terminal (stdin, stdout and stderr all on it), as a user would.

- ``pty_run(args, env, cwd=None, replies=(), timeout=60, columns=120) -> (exit code, bytes)``
  everything the terminal received, escape sequences included
- ``run_in_pty(...) -> (exit code, screen text)`` the same, as ``screen`` shows it
- ``screen(data)`` the text a terminal shows (escape sequences dropped, CRLF as newlines)

``replies`` is a list of (text to wait for, bytes to type): each reply is typed once its prompt has
appeared on the screen, so a test answers a question the way a user would. The child gets
``TERM=xterm``, ``COLUMNS`` and no ``NO_COLOR``: what a colour terminal shows.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]")


def pty_run(
    args: Sequence[object],
    env: dict[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    replies: Sequence[tuple[str, bytes]] = (),
    timeout: float = 60.0,
    columns: int = 120,
) -> tuple[int, bytes]:
    import pty

    master, slave = pty.openpty()
    env = {**env, "TERM": "xterm", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=env,
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    pending = list(replies)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                data += chunk
                if pending and pending[0][0] in screen(data):
                    os.write(master, pending.pop(0)[1])
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"timed out; screen so far:\n{screen(data)}")
    finally:
        os.close(master)
    return proc.wait(timeout=10), data


def run_in_pty(args: Sequence[object], env: dict[str, str], **kwargs) -> tuple[int, str]:
    code, data = pty_run(args, env, **kwargs)
    return code, screen(data)


def screen(data: bytes) -> str:
    """The text a terminal shows (escape sequences dropped, CRLF as newlines)."""
    return _ANSI.sub("", data.decode("utf-8", "replace")).replace("\r\n", "\n")
