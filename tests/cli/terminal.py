"""Run the CLI on a pseudo-terminal (``pty``) and read the screen a user would see.

The child's stdin, stdout and stderr are the terminal's slave side, sized with TIOCSWINSZ; what it
writes is fed to ``pyte`` (a VT100 emulator), so redraws (progress bars, ``--watch``) end as the
final screen, and tests assert on that text, not on escape sequences.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass


@dataclass
class Screen:
    returncode: int
    lines: list[str]  # the final screen, trailing blanks removed
    raw: str  # everything written, escape sequences included

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_in_terminal(
    args: list[str],
    env: dict[str, str],
    *,
    columns: int = 100,
    rows: int = 60,
    answer: str | None = None,
    answer_after: str | None = None,
    timeout: float = 120,
    interrupt_after: str | None = None,
) -> Screen:
    """``answer`` is typed once ``answer_after`` shows up in the output (a prompt);
    ``interrupt_after``: Ctrl-C is sent once that text shows up."""
    import pyte

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    full = dict(env, TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    full.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=full,
        start_new_session=True,  # the terminal becomes the child's controlling terminal
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    data = b""
    deadline = time.monotonic() + timeout
    answered = interrupted = False
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
                text = data.decode("utf-8", "replace")
                if answer is not None and not answered and (answer_after or "") in text:
                    os.write(master, answer.encode())
                    answered = True
                if interrupt_after is not None and not interrupted and interrupt_after in text:
                    os.write(master, b"\x03")  # the terminal turns it into SIGINT
                    interrupted = True
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{args} did not finish in {timeout}s; screen so far:\n{data.decode()}")
    finally:
        os.close(master)
    code = proc.wait(timeout=30)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    stream.feed(data)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(code, lines, data.decode("utf-8", "replace"))
