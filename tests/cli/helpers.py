"""Helpers for the CLI command tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def assert_one_line_error(result, code: int, *needles: str, secrets: tuple[str, ...] = ()) -> str:
    """A failed command: the exit code, nothing on stdout, one `error:` line on stderr naming
    ``needles``, no traceback, no secret."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for secret in secrets:
        assert secret not in err and secret not in result.stdout
    assert result.stdout == "", result.stdout
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(server, home, **extra: str) -> dict[str, str]:
    """The environment the shared ``cli`` fixture uses, for long-running Popen processes."""
    env = dict(os.environ)
    env.pop("SOPHON_DEBUG", None)
    env.update(SOPHON_HOME=str(home), SOPHON_BASE_URL=server.url, SOPHON_API_KEY=server.api_keys[0])
    env.update(extra)
    return env


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
