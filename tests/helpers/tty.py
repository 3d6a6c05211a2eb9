"""Run the real CLI on a pseudo-terminal, as a user would: stdin, stdout and stderr on the slave side,
which is the child's controlling terminal (so a typed Ctrl-C becomes SIGINT), sized with TIOCSWINSZ.

- ``pty_run(args, env, cwd=None, replies=(), timeout=60, columns=120, rows=60) -> (exit code, bytes)``
  everything the terminal received, escape sequences included
- ``run_in_pty(...) -> (exit code, text)`` the same with the escape sequences dropped (``screen``)
- ``run_in_terminal(args, env, columns=100, rows=60, answer=None, answer_after=None,
  interrupt_after=None, timeout=120) -> Screen`` the output fed to ``pyte`` (a VT100 emulator),
  so redraws (progress bars, ``--watch``) end as the final screen: ``Screen.lines`` / ``.text``,
  ``.raw`` for the bytes as text

``replies`` is a list of (text to wait for, bytes to type): each is typed once its text has appeared
(in the raw output or with escape sequences dropped), so a test answers a prompt, or types ``\\x03``
(Ctrl-C), the way a user would. The child gets ``TERM=xterm-256color``, ``COLUMNS``/``LINES`` and no
``NO_COLOR``: what a colour terminal shows.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]")
CTRL_C = b"\x03"


def pty_run(
    args: Sequence[object],
    env: dict[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    replies: Sequence[tuple[str, bytes]] = (),
    timeout: float = 60.0,
    columns: int = 120,
    rows: int = 60,
) -> tuple[int, bytes]:
    import pty

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    full = {**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
    full.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=full,
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        start_new_session=True,  # the terminal becomes the child's controlling terminal
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
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
                while pending and _shows(data, pending[0][0]):
                    os.write(master, pending.pop(0)[1])
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{list(args)} did not finish in {timeout}s; screen so far:\n{screen(data)}")
    finally:
        os.close(master)
    return proc.wait(timeout=30), data


def _shows(data: bytes, text: str) -> bool:
    raw = data.decode("utf-8", "replace")
    return text in raw or text in screen(data)


def run_in_pty(args: Sequence[object], env: dict[str, str], **kwargs) -> tuple[int, str]:
    code, data = pty_run(args, env, **kwargs)
    return code, screen(data)


def screen(data: bytes) -> str:
    """The text a terminal shows (escape sequences dropped, CRLF as newlines)."""
    return _ANSI.sub("", data.decode("utf-8", "replace")).replace("\r\n", "\n")


@dataclass
class Screen:
    returncode: int
    lines: list[str]  # the final screen, trailing blanks removed
    raw: str  # everything written, escape sequences included

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_in_terminal(
    args: Sequence[object],
    env: dict[str, str],
    *,
    columns: int = 100,
    rows: int = 60,
    answer: str | None = None,
    answer_after: str | None = None,
    timeout: float = 120,
    interrupt_after: str | None = None,
) -> Screen:
    """``answer`` is typed once ``answer_after`` shows up (a prompt); Ctrl-C is typed once
    ``interrupt_after`` shows up. The final screen comes from a pyte emulator of that size."""
    import pyte

    replies: list[tuple[str, bytes]] = []
    if answer is not None:
        replies.append((answer_after or "", answer.encode()))
    if interrupt_after is not None:
        replies.append((interrupt_after, CTRL_C))
    code, data = pty_run(args, env, replies=replies, timeout=timeout, columns=columns, rows=rows)
    emulated = pyte.Screen(columns, rows)
    pyte.ByteStream(emulated).feed(data)
    lines = [line.rstrip() for line in emulated.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(code, lines, data.decode("utf-8", "replace"))
