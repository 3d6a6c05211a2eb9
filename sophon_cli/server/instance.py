"""One server per data dir: the lock a running server holds, its listening socket, and the state
file (``server.json``) it leaves for ``--local``, ``status`` and ``stop``.

Stdlib and filelock only (no server dependencies), so the CLI can ask about a running server
without importing starlette or uvicorn.

A running server holds an exclusive ``flock`` on ``server.lock`` in its data dir for its whole
life (the kernel drops it when the process dies, even by SIGKILL), so a second server on the same
SQLite database is refused before it touches the database. Right after taking the lock the
server removes any ``server.json`` a dead predecessor left; the file it then writes (url, pid)
therefore always describes the lock holder.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .config import STATE_FILE, ensure_private_dir, write_private_file

LOCK_FILE = "server.lock"


@dataclass(frozen=True)
class ServerState:
    """What a running server recorded in its data dir (``server.json``)."""

    url: str | None = None
    pid: int | None = None
    started_at: float | None = None


class DataDirInUse(Exception):
    """Another server holds the data dir's lock."""

    def __init__(self, data_dir: Path, state: ServerState | None) -> None:
        self.data_dir = data_dir
        self.state = state
        who = ""
        if state is not None and state.pid:
            who = f" (pid {state.pid}" + (f", {state.url}" if state.url else "") + ")"
        super().__init__(f"the data dir {data_dir} is in use by a running server{who}")


class BindError(Exception):
    """The listening socket could not be opened (``in_use``: the address is already taken)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        self.host = host
        self.port = port
        self.errno = exc.errno
        self.in_use = exc.errno == errno.EADDRINUSE
        reason = "the address is already in use" if self.in_use else (exc.strerror or str(exc))
        super().__init__(f"cannot listen on {format_address(host, port)}: {reason}")


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_for(host: str, port: int) -> str:
    """The base URL clients use for a server listening on ``host``/``port``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{format_address(host, port)}"


def _lock(data_dir: Path):
    from filelock import FileLock

    return FileLock(str(data_dir / LOCK_FILE), timeout=0)


def hold(data_dir: Path):
    """Take the data dir's server lock (a ``filelock.FileLock``, held until released) or raise
    :class:`DataDirInUse`. Removes a state file left by a dead server."""
    from filelock import Timeout

    ensure_private_dir(data_dir)
    lock = _lock(data_dir)
    try:
        lock.acquire()
    except Timeout:
        raise DataDirInUse(data_dir, read_state(data_dir)) from None
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return lock


def is_held(data_dir: Path) -> bool:
    """Whether a server is running on ``data_dir`` (creates nothing when the dir does not exist)."""
    from filelock import Timeout

    if not (data_dir / LOCK_FILE).exists():
        return False
    lock = _lock(data_dir)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def read_state(data_dir: Path) -> ServerState | None:
    try:
        info = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    url, pid, started = info.get("url"), info.get("pid"), info.get("started_at")
    return ServerState(
        url=url if isinstance(url, str) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
        started_at=float(started) if isinstance(started, (int, float)) else None,
    )


def write_state(data_dir: Path, url: str) -> None:
    write_private_file(
        data_dir / STATE_FILE,
        json.dumps({"url": url, "pid": os.getpid(), "started_at": time.time()}) + "\n",
    )


def clear_state(data_dir: Path) -> None:
    """Remove the state file if this process wrote it."""
    state = read_state(data_dir)
    if state is not None and state.pid == os.getpid():
        (data_dir / STATE_FILE).unlink(missing_ok=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``/``port`` (0: a free port), or :class:`BindError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BindError(host, port, exc) from None
    sock.set_inheritable(False)
    return sock
