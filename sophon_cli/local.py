"""``--local``: find the background local server for a data dir, or start one.

The server runs as a detached background process (``python -m sophon_cli.cli.server``) that
writes ``server.json`` (url, pid; 0600) in its data dir once listening and exits after 10 idle
minutes (no requests, no active jobs). Separate ``sophon`` invocations therefore share its state;
a file lock makes concurrent invocations start at most one server, and the lock every running
server holds on its data dir (``server/instance.py``) keeps a second one off the same database.
The API key lives in the data dir's ``api_key`` file (0600, dir 0700); it is never passed on a
command line, and the child's environment carries no ``SOPHON_*`` variable
(``sophon_cli/childenv.py``). :func:`local_server_status` and :func:`stop_local_server` report on
and stop the server of a data dir (background or foreground).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

IDLE_TIMEOUT = 600
START_TIMEOUT = 15.0
LOG_FILE = "server.log"


def default_data_dir() -> Path:
    home = os.environ.get("SOPHON_HOME")
    if home:
        return Path(home).expanduser() / "server"
    import platformdirs

    return Path(platformdirs.user_data_dir("sophon", appauthor=False)) / "server"


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def server_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with _NO_PROXY.open(url.rstrip("/") + "/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def _running(data_dir: Path) -> str | None:
    from sophon_cli.server.instance import read_state

    state = read_state(data_dir)
    return state.url if state is not None and state.url and server_answers(state.url) else None


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()


def _spawn(d: Path) -> subprocess.Popen:
    """Start the background server on ``d``; its output goes to the data dir's log file."""
    from sophon_cli.childenv import child_environment

    with open(d / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sophon_cli.cli.server",
                "--data-dir",
                str(d),
                "--port",
                "0",
                "--idle-timeout",
                str(IDLE_TIMEOUT),
                "--no-request-log-lines",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # no SOPHON_* variable: the server uses the data dir's key file, and the user's API
            # key and webhook secrets have no business there
            env=child_environment(),
            start_new_session=True,
            close_fds=True,
        )


def ensure_local_server(data_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """Return ``(url, api_key)`` of a running local server for ``data_dir``, starting one if needed."""
    from filelock import FileLock

    from sophon_cli.server.config import API_KEY_FILE, ensure_private_dir, read_or_create_secret
    from sophon_cli.server.instance import is_held

    d = _data_dir(data_dir)
    ensure_private_dir(d)
    key = read_or_create_secret(d / API_KEY_FILE, 24, prefix="sk_local_")
    url = _running(d)
    if url:
        return url, key
    with FileLock(str(d / "start.lock"), timeout=START_TIMEOUT + 5):
        url = _running(d)  # another invocation may have started it while we waited
        if url:
            return url, key
        proc = None
        if not is_held(d):  # else a server holds the data dir but is not answering yet: wait for it
            (d / "server.json").unlink(missing_ok=True)
            proc = _spawn(d)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            url = _running(d)
            if url:
                return url, key
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
    from sophon_cli.next_steps import LocalServerStartError

    raise LocalServerStartError(
        f"the local server did not start within {START_TIMEOUT:g}s", data_dir=d, log=d / LOG_FILE
    )


@dataclass(frozen=True)
class LocalServerStatus:
    """The server of one data dir: ``running`` (it holds the data dir's lock), and from its
    ``server.json`` the url and pid (None for an in-process server or one still starting);
    ``healthy``: its ``/healthz`` answered."""

    data_dir: Path
    running: bool
    url: str | None = None
    pid: int | None = None
    started_at: float | None = None
    healthy: bool = False


class StopTimeout(Exception):
    """The server did not stop within the time allowed (``status``: what was found)."""

    def __init__(self, status: LocalServerStatus, timeout: float) -> None:
        self.status = status
        self.timeout = timeout
        super().__init__(f"the local server (pid {status.pid}) did not stop within {timeout:g}s")


def local_server_status(data_dir: str | os.PathLike | None = None) -> LocalServerStatus:
    """What runs on ``data_dir`` (default: the ``--local`` data dir); creates nothing."""
    from sophon_cli.server.instance import is_held, read_state

    d = _data_dir(data_dir)
    if not is_held(d):
        return LocalServerStatus(d, running=False)
    state = read_state(d)
    if state is None:
        return LocalServerStatus(d, running=True)
    healthy = bool(state.url) and server_answers(state.url)
    return LocalServerStatus(d, True, state.url, state.pid, state.started_at, healthy)


def stop_local_server(
    data_dir: str | os.PathLike | None = None, *, timeout: float = 20.0
) -> LocalServerStatus:
    """Stop the server running on ``data_dir`` (SIGTERM: it finishes its requests, gives running
    jobs back to the queue and removes ``server.json``) and wait until it has released the data
    dir. Returns what was found (``running=False``: nothing was running, nothing was done);
    raises :class:`StopTimeout` when it is still running after ``timeout`` seconds.

    Only the pid recorded by the current holder of the data dir's lock is signalled (a running
    server removes any stale ``server.json`` when it takes the lock), never a pid from a file
    that no running server owns.
    """
    from sophon_cli.server.instance import is_held

    status = local_server_status(data_dir)
    if not status.running:
        return status
    deadline = time.monotonic() + timeout
    while status.pid is None and time.monotonic() < deadline:  # starting: server.json comes next
        time.sleep(0.1)
        status = local_server_status(data_dir)
        if not status.running:
            return status
    if status.pid is None or status.pid == os.getpid():
        raise StopTimeout(status, timeout)  # in-process (or unknown) server: not ours to signal
    try:
        os.kill(status.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    while time.monotonic() < deadline:
        if not is_held(status.data_dir):
            return status
        time.sleep(0.1)
    raise StopTimeout(status, timeout)
