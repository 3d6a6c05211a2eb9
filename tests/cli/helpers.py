"""Helpers for the CLI command tests."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.helpers.env import cli_env  # noqa: F401  (re-exported for the command tests)


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


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
