"""`sophon health` on a terminal (pty): aligned columns; piped: tabs (tests/cli/test_commands.py)."""

from __future__ import annotations

from .helpers import cli_env
from .ttyrun import run_in_pty


def test_health_on_a_terminal_is_aligned_without_tabs(server, tmp_path):
    code, text = run_in_pty(["health"], cli_env(server, tmp_path / "home"))
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines == [f"healthz  ok  {server.url}", "readyz   ready", "auth     ok"]


def test_health_piped_is_tab_separated(cli, server):
    res = cli("health")
    assert res.returncode == 0, res.stderr
    assert [line.split("\t") for line in res.stdout.splitlines()] == [
        ["healthz", "ok", server.url],
        ["readyz", "ready"],
        ["auth", "ok"],
    ]
