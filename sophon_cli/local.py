"""``--local``: find the background local server for a data dir, or start one.

The server runs as a detached background process (``python -m sophon_cli.cli.server``) that
writes ``server.json`` (url, pid; 0600) in its data dir once listening and exits after 10 idle
minutes (no requests, no active jobs). Separate ``sophon`` invocations therefore share its state;
a file lock makes concurrent invocations start at most one server. The API key lives in the data
dir's ``api_key`` file (0600, dir 0700); it is never passed on a command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

IDLE_TIMEOUT = 600
START_TIMEOUT = 15.0


def _error(message: str, hint: str):
    from sophon_cli.client.errors import TransportError

    return TransportError(message, hint=hint)


def default_data_dir() -> Path:
    home = os.environ.get("SOPHON_HOME")
    if home:
        return Path(home).expanduser() / "server"
    import platformdirs

    return Path(platformdirs.user_data_dir("sophon", appauthor=False)) / "server"


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with _NO_PROXY.open(url.rstrip("/") + "/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def _running(data_dir: Path) -> str | None:
    try:
        info = json.loads((data_dir / "server.json").read_text(encoding="utf-8"))
        url = info["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _healthy(url) else None


def ensure_local_server(data_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """Return ``(url, api_key)`` of a running local server for ``data_dir``, starting one if needed."""
    from filelock import FileLock

    from sophon_cli.server.config import API_KEY_FILE, ensure_private_dir, read_or_create_secret

    d = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    ensure_private_dir(d)
    key = read_or_create_secret(d / API_KEY_FILE, 24, prefix="sk_local_")
    url = _running(d)
    if url:
        return url, key
    with FileLock(str(d / "start.lock"), timeout=START_TIMEOUT + 5):
        url = _running(d)  # another invocation may have started it while we waited
        if url:
            return url, key
        (d / "server.json").unlink(missing_ok=True)
        env = dict(os.environ)
        env.pop("SOPHON_SERVER_API_KEYS", None)  # the server must use the data dir's key file
        env.pop("SOPHON_API_KEY", None)  # the user's key for the real API has no business there
        log_path = d / "server.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
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
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            url = _running(d)
            if url:
                return url, key
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise _error(
        f"the local server did not start within {START_TIMEOUT:g}s",
        hint=f"see {log_path}, or run `sophon server --data-dir {d}` to see why",
    )
