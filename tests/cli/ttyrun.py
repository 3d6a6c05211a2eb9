"""Run the real CLI on a pseudo-terminal (stdin, stdout and stderr all on it) and return its screen text.

``replies`` is a list of (text to wait for, bytes to type): each reply is typed once its prompt has
appeared on the screen, so a test answers a question the way a user would.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]")


def run_in_pty(
    args: list[str], env: dict[str, str], *, replies: list[tuple[str, bytes]] = (), timeout: float = 60.0
) -> tuple[int, str]:
    import pty

    master, slave = pty.openpty()
    env = {**env, "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=env,
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
    return proc.wait(timeout=10), screen(data)


def screen(data: bytes) -> str:
    """The text a terminal shows (escape sequences dropped, CRLF as newlines)."""
    return _ANSI.sub("", data.decode("utf-8", "replace")).replace("\r\n", "\n")
