"""`sophon server` in the foreground tells a newcomer how to use it from another shell (and the step
it names works, without the key ever being printed)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.env import cli_env

BIN = Path(sys.executable).parent  # the venv's bin: `sophon` as a user's shell finds it


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    """The foreground server, read up to its line saying how to connect (the start-up lines first).
    Its stderr is read as it comes (select), so a server that never says it fails the test within
    a bound instead of blocking it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", "server", "--port", "0", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    fd = proc.stderr.fileno()
    data = b""
    while b"from another shell" not in data or not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], 60)
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            proc.kill()
            raise AssertionError("no line saying how to connect:\n" + data.decode(errors="replace"))
        data += chunk
    lines = data.decode().splitlines()
    return proc, lines[: next(i for i, ln in enumerate(lines) if ln.startswith("from another shell")) + 1]


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    return rest.decode(errors="replace")


def _step(line: str) -> str:
    """The command of the step, between its first pair of backticks."""
    found = re.search(r"`([^`]+)`", line)
    assert found, line
    return found.group(1)


def _in_another_shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    shell_env = {**env, "PATH": f"{BIN}:/usr/bin:/bin"}
    for var in ("SOPHON_HOME", "SOPHON_BASE_URL", "SOPHON_API_KEY", "SOPHON_SERVER_API_KEYS"):
        shell_env.pop(var, None)  # another shell: only what the step itself sets
    return subprocess.run(
        ["/bin/bash", "-c", command], env=shell_env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("where", ["default data dir", "own data dir"])
def test_the_foreground_server_says_how_to_connect_and_that_step_works(tmp_path, where):
    """It said the URL, the data dir and "API key: stored in … (not printed)", and left the user to
    work out `--local` (or the variables) and where the key goes."""
    home = tmp_path / "home"
    env = cli_env(None, home)
    args = [] if where == "default data dir" else ["--data-dir", str(tmp_path / "my server")]
    proc, lines = _start(args, env)
    try:
        hint = lines[-1]
        key_file = (home / "server" if not args else tmp_path / "my server") / "api_key"
        key = key_file.read_text().strip()
        assert key not in "\n".join(lines)
        command = _step(hint)
        if where == "default data dir":
            assert command == f"SOPHON_HOME={home} sophon --local job list", hint
            run = _in_another_shell(command, env)
        else:
            assert "--local" not in hint and "SOPHON_BASE_URL=http://127.0.0.1:" in command
            assert "SOPHON_API_KEY=" in command and str(key_file) in command, hint
            run = _in_another_shell(f"{command}; sophon job list", env)
        assert run.returncode == 0, (command, run.stderr)
        assert run.stdout.startswith("ID\tSTATUS") or "no jobs" in run.stderr, (run.stdout, run.stderr)
        assert key not in run.stdout + run.stderr
    finally:
        rest = _stop(proc)
    assert key not in rest
    assert "GET /v1/jobs" in rest  # the other shell's request reached this server (its request log)


def test_with_keys_given_the_step_names_where_the_key_comes_from_not_the_key(tmp_path):
    key = "given-key-0123456789"
    env = cli_env(None, tmp_path / "home")
    proc, lines = _start(["--api-key", key], env)
    try:
        hint = lines[-1]
        assert "--local" not in hint  # --local would send the data dir's key, which this one refuses
        assert "SOPHON_BASE_URL=http://127.0.0.1:" in hint and "--api-key" in hint, hint
        assert key not in "\n".join(lines)
    finally:
        _stop(proc)


def test_ctrl_c_in_a_terminal_says_stopped_on_a_line_of_its_own(tmp_path):
    """It read "^Csophon local server stopped"."""
    from tests.helpers.tty import run_in_terminal

    args = ["server", "--port", "0", "--data-dir", tmp_path / "srv"]
    screen = run_in_terminal(args, cli_env(None, tmp_path / "home"), interrupt_after="from another shell")
    assert screen.returncode == 0, screen.text
    assert screen.lines[-2:] == ["^C", "sophon local server stopped"], screen.text
